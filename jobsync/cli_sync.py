"""`jobsync sync`: the nightly job. Parses options, runs one sync, prints the summary."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from jobsync.api import JobsClient, client_settings
from jobsync.cli_options import api_options, build_settings, exit_on_error, verbosity_options
from jobsync.config import Settings
from jobsync.errors import EXIT_FAILURE, EXIT_PARTIAL, ConfigError
from jobsync.progress import ProgressLine
from jobsync.store import Warehouse
from jobsync.sync import SyncOptions, SyncRun, SyncSummary, run_sync
from jobsync.timestamps import parse_user_time

EXIT_INTERRUPTED = 130
MAX_FLOW_ID = 1024
_OUTCOME_EXIT = {"succeeded": 0, "partial": EXIT_PARTIAL, "failed": EXIT_FAILURE}


@click.command()
@api_options
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="DuckDB warehouse file (default jobsync.duckdb; env JOBSYNC_DB).",
)
@click.option(
    "--parquet",
    metavar="DEST",
    help="After the sync, bring the Parquet archive at DEST (folder or s3://...) up to date "
    "(env JOBSYNC_PARQUET).",
)
@click.option("--flow", "flows", multiple=True, metavar="ID", help="Sync this flow (repeatable).")
@click.option(
    "--flows-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="File of flow ids, one per line (# starts a comment).",
)
@click.option(
    "--since",
    metavar="TIMESTAMP",
    help="Read jobs created from this moment (date or ISO time, UTC if no offset), "
    "instead of from where the last run stopped.",
)
@click.option(
    "--overlap",
    metavar="DURATION",
    help="Re-read this much before the last run's end for jobs listed late (default 1h).",
)
@click.option(
    "--concurrency",
    type=int,
    help="Requests in flight to start with; more while the API keeps up (default 8).",
)
@click.option(
    "--max-concurrency",
    type=int,
    help="The most requests in flight; fewer after a 429 (default 64).",
)
@click.option(
    "--rate-limit", type=float, help="Initial requests/s; adapts to throttling (default 20)."
)
@click.option(
    "--max-duration",
    metavar="DURATION",
    help="Stop cleanly after this long, keeping what is fetched; exit 75 means rerun to continue.",
)
@click.option(
    "--page-size",
    type=int,
    help="Jobs in a full page: the API's cap (default 1001). A page this long means more follow.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@verbosity_options
def sync(**flags: Any) -> None:
    """Copy every job the API lists into the warehouse (the nightly job).

    The first run backfills everything the API still has, oldest first; later runs read from
    where the last one ended (minus --overlap) and fetch unfinished jobs again until they
    end. Safe to kill at any moment: the next run resumes.

    Exit codes: 0 synced; 1 a part failed (what succeeded is kept); 2 usage error;
    3 token rejected; 4 warehouse in use; 75 stopped by --max-duration, rerun to continue;
    130 interrupted.

    \b
    Example:
      JOBSYNC_API_TOKEN=... jobsync sync --db jobs.duckdb --max-duration 2h
    """
    verbose, quiet = flags.pop("verbose"), flags.pop("quiet")
    configure_logging(verbose, quiet)
    with exit_on_error(verbose):
        settings = build_settings(flags)
        options = sync_options(settings, flags)
        try:
            summary = asyncio.run(sync_with_progress(settings, options, quiet))
        except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C or SIGTERM
            click.echo("jobsync: interrupted; what was fetched is kept, rerun to go on", err=True)
            sys.exit(EXIT_INTERRUPTED)
    report(summary, flags["as_json"], quiet)
    if settings.parquet is not None:  # what is committed, even after a partial or failed run
        # imported here: Parquet and pyarrow.fs add 20 MB to a sync that does not archive
        from jobsync.archive import archive_warehouse

        with exit_on_error(verbose), Warehouse.open(settings.db, read_only=True) as warehouse:
            archived = archive_warehouse(warehouse, settings.parquet)
        if not quiet and not flags["as_json"]:
            click.echo(archived.line())
    sys.exit(_OUTCOME_EXIT.get(summary.outcome, EXIT_FAILURE))


def sync_options(settings: Settings, flags: dict[str, Any]) -> SyncOptions:
    """SyncOptions from the merged settings and the sync-only flags."""
    flows = list(flags["flows"])
    if flags["flows_file"] is not None:
        flows += read_flows_file(flags["flows_file"])
    if any(not f.strip() for f in flows):
        raise ConfigError("a flow id is empty")
    if any(len(f) > MAX_FLOW_ID for f in flows):
        raise ConfigError(f"a flow id is longer than {MAX_FLOW_ID} characters")
    # Flow lists travel comma-joined (`flow_id_in=a,b`): an id with a comma would name others.
    with_comma = next((f for f in flows if "," in f), None)
    if with_comma is not None:
        raise ConfigError(f"a flow id holds a comma, which separates flow ids: {with_comma!r}")
    since = None
    if flags["since"] is not None:
        try:
            since = parse_user_time(flags["since"])
        except ValueError:
            raise ConfigError(f"--since: not a date or ISO timestamp: {flags['since']!r}") from None
    return SyncOptions(
        flow_ids=tuple(dict.fromkeys(f.strip() for f in flows)),
        since_ms=since,
        overlap_ms=int(settings.overlap.total_seconds() * 1000),
        max_duration_s=(
            None if settings.max_duration is None else settings.max_duration.total_seconds()
        ),
        page_size=settings.page_size,
        retention_days=settings.retention_days,
    )


def read_flows_file(path: Path) -> list[str]:
    """Flow ids, one per line; blank lines and `#` comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read flows file {path}: {exc}") from None
    flows = [line.split("#", 1)[0].strip() for line in lines]
    return [flow for flow in flows if flow]


async def sync_with_progress(settings: Settings, options: SyncOptions, quiet: bool) -> SyncSummary:
    """Open the warehouse and the client, run the sync, draw progress on a terminal."""
    with Warehouse.open_for_sync(settings.db) as warehouse:
        async with JobsClient(client_settings(settings)) as client:
            progress: ProgressLine | None = None

            def show(run: SyncRun) -> None:
                nonlocal progress
                if not quiet:
                    progress = ProgressLine(
                        lambda rate: _progress_text(run, rate), lambda: client.stats.requests
                    )
                    progress.start()

            try:
                return await run_sync(client, warehouse, options, on_start=show)
            finally:
                if progress is not None:
                    await progress.stop()


def _progress_text(run: SyncRun, rate: float) -> str:
    p = run.progress
    return (
        f"partitions {p.partitions_done}/{p.partitions_total}  pages {p.pages:,}  "
        f"jobs {p.jobs:,}  {rate:.1f} req/s"
    )


def report(summary: SyncSummary, as_json: bool, quiet: bool) -> None:
    """The summary on stdout (a line, or JSON); failures on stderr."""
    for error in summary.errors[:20]:
        click.echo(f"jobsync: error: {error}", err=True)
    if len(summary.errors) > 20:
        click.echo(f"jobsync: ... and {len(summary.errors) - 20} more errors", err=True)
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    elif not quiet or summary.outcome != "succeeded":
        click.echo(summary.line(), err=summary.outcome != "succeeded" and quiet)


def configure_logging(verbose: bool, quiet: bool) -> None:
    """Warnings by default, progress notes with -v, errors only with -q."""
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.WARNING
    logging.basicConfig(level=logging.WARNING, format="jobsync: %(levelname)s: %(message)s")
    logging.getLogger("jobsync").setLevel(level)
