"""`jobsync simulate`: a local integrator.io Jobs API to point jobsync (or curl) at."""

from __future__ import annotations

import os

import click

from jobsync.dialect import DEFAULT_DIALECT, DIALECT_NAMES
from jobsync.simulator import AccountConfig, ServerOptions, serve
from jobsync.simulator.faults import FaultPlan
from jobsync.timestamps import now_ms


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="TCP port to listen on; 0 picks a free one.",
)
@click.option(
    "--token",
    envvar="JOBSYNC_SIM_TOKEN",
    required=True,
    help="Bearer token the simulator accepts (env JOBSYNC_SIM_TOKEN); never printed.",
)
@click.option(
    "--seed",
    type=int,
    default=1,
    show_default=True,
    help="Seed of the synthetic account: the same seed gives the same flows and jobs.",
)
@click.option(
    "--flows",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Number of flows in the account.",
)
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=35,
    show_default=True,
    help="Days of job history before now.",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0,
    show_default=True,
    help="Milliseconds added to every response.",
)
@click.option(
    "--rate-limit",
    type=click.FloatRange(min=0, min_open=True),
    help="Requests per second allowed per token before HTTP 429 [default: unlimited].",
)
@click.option(
    "--burst",
    type=click.IntRange(min=1),
    help="Requests the rate limit lets through at once [default: one second's worth].",
)
@click.option(
    "--fault-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of requests that fail with HTTP 500/502/503 or a connection dropped mid-body.",
)
@click.option(
    "--stall-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of answers that stall for 30 s (before their headers, or halfway through).",
)
@click.option(
    "--storm-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of requests that start a 2 s storm of HTTP 429 with Retry-After.",
)
@click.option(
    "--bad-body-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of answers whose body is not the JSON expected (HTML, cut short, NaN, ...).",
)
@click.option(
    "--bad-record-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of listings with malformed records added beside the real jobs.",
)
@click.option(
    "--page-size",
    type=click.IntRange(min=1),
    help="Most jobs one listing returns [default: the dialect's cap, 1001 or 1000].",
)
@click.option(
    "--dialect",
    type=click.Choice(DIALECT_NAMES),
    default=DEFAULT_DIALECT,
    show_default=True,
    help="Speak as integrator.io does (integrator) or as the reference document (reference).",
)
@click.option(
    "--crowded-ms-jobs",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Flow runs created in one single millisecond two days ago (0: none).",
)
def simulate(
    host: str,
    port: int,
    token: str,
    seed: int,
    flows: int,
    days: int,
    latency_ms: float,
    rate_limit: float | None,
    burst: int | None,
    fault_rate: float,
    stall_rate: float,
    storm_rate: float,
    bad_body_rate: float,
    bad_record_rate: float,
    page_size: int | None,
    dialect: str,
    crowded_ms_jobs: int,
) -> None:
    """Serve a synthetic integrator.io Jobs API (under /v1) until Ctrl-C.

    The account's history ends now and moves on with real time: jobs start, finish, appear
    and get purged as they would upstream. The API URL is printed on stdout, e.g. for
    `JOBSYNC_API_URL=$(...)`.
    """
    if burst is not None and rate_limit is None:
        raise click.UsageError("--burst needs --rate-limit")
    if not token.strip():
        raise click.BadParameter("must not be empty", param_hint="--token")
    try:
        faults = FaultPlan(
            stall=stall_rate, storm=storm_rate, bad_body=bad_body_rate, bad_records=bad_record_rate
        )
    except ValueError as exc:
        raise click.UsageError(f"--stall-rate, --storm-rate and the bad-* rates: {exc}") from None
    options = ServerOptions(
        token=token.strip(),
        page_size=page_size,
        dialect=dialect,
        latency_ms=latency_ms,
        rate_limit=rate_limit,
        burst=burst,
        fault_rate=fault_rate,
        faults=faults,
        seed=seed,
    )
    account = AccountConfig(
        seed=seed, flows=flows, days=days, start_ms=now_ms(), crowded_ms_jobs=crowded_ms_jobs
    )
    click.echo(f"Building {flows} flows with {days} days of jobs (seed {seed})...", err=True)
    try:
        serve(account, options, host, port)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise click.ClickException(f"cannot listen on {host}:{port}: {reason}") from exc
