"""`jobsync archive`, `jobsync query` and `jobsync status`: the warehouse for analysts and
operators. Each opens the warehouse read-only, calls one function and prints its result."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
import duckdb
import orjson

from jobsync.cli_options import build_settings, config_option, exit_on_error, verbosity_options
from jobsync.cli_sync import configure_logging
from jobsync.errors import EXIT_FAILURE, ConfigError, JobsyncError, WarehouseLocked
from jobsync.render import result_table
from jobsync.status import (
    DEFAULT_MARGIN_DAYS,
    FlowHealth,
    RunRecord,
    StatusReport,
    assess,
    read_health,
)
from jobsync.store import Warehouse
from jobsync.timestamps import ms_to_datetime, parse_user_time

FORMATS = ("table", "csv", "json")
_FETCH_ROWS = 1000

_db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help="DuckDB warehouse file (default jobsync.duckdb; env JOBSYNC_DB).",
)


def open_for_reading(db: Path) -> Warehouse:
    """The warehouse, read-only. DuckDB lets no other process open a file that one is writing,
    not even to read it: say so plainly."""
    try:
        return Warehouse.open(db, read_only=True)
    except WarehouseLocked as exc:
        pid = re.search(r" \(PID \d+\)", str(exc))
        holder = pid.group(0) if pid else ""
        raise WarehouseLocked(
            f"{db} is being written by another process{holder}, most likely `jobsync sync`; "
            "DuckDB lets no other process open it meanwhile, not even to read. Try again "
            "when it has finished, or read the Parquet archive instead"
        ) from None


# -- archive ----------------------------------------------------------------------------------


@click.command()
@_db_option
@click.option(
    "--out",
    "dest",
    required=True,
    metavar="DEST",
    help="Folder or object-store URL of the archive, e.g. ./archive or s3://bucket/prefix.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@config_option
@verbosity_options
def archive(**flags: Any) -> None:
    """Write the jobs table as Parquet, one file per month, rewriting only changed months.

    The dataset is DEST/jobs/created_month=YYYY-MM/data.parquet (zstd), which DuckDB, Spark,
    pandas or Athena read as one table. Months are swapped in whole: a reader never sees half
    of one. For S3 the credentials, region and endpoint come from the standard AWS variables
    (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION; AWS_ENDPOINT_URL for MinIO and
    other S3-compatible stores).

    \b
    Examples:
      jobsync archive --db jobs.duckdb --out /srv/archive
      AWS_ENDPOINT_URL=http://minio:9000 jobsync archive --out s3://jobs-archive/prod
    """
    verbose, quiet = flags.pop("verbose"), flags.pop("quiet")
    configure_logging(verbose, quiet)
    with exit_on_error(verbose):
        settings = build_settings(flags)
        from jobsync.archive import archive_warehouse  # see cli_sync: 20 MB of imports

        with open_for_reading(settings.db) as warehouse:
            summary = archive_warehouse(warehouse, flags["dest"])
    if flags["as_json"]:
        click.echo(json.dumps(summary.as_dict()))
    elif not quiet:
        click.echo(summary.line())


# -- query ------------------------------------------------------------------------------------


@click.command()
@_db_option
@click.option(
    "--format",
    "output",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table for people; csv or json (an array of objects) for other programs.",
)
@config_option
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@click.argument("sql")
def query(**flags: Any) -> None:
    """Run read-only SQL on the warehouse and print the result (SQL `-` reads standard input).

    Tables: jobs, rejects, sync_runs. Views: job_metrics (success_rate, duration_seconds per
    job), flow_daily (runs, failures, records, error rate and durations per flow and UTC day),
    flow_job_trees (each flow run with its child jobs summed up).

    \b
    Examples:
      jobsync query "SELECT status, count(*) AS jobs FROM jobs GROUP BY status"
      jobsync query --format csv "SELECT * FROM flow_daily ORDER BY day" > flow_daily.csv
    """
    with exit_on_error(flags["verbose"]):
        settings = build_settings(flags)
        sql = sys.stdin.read() if flags["sql"] == "-" else flags["sql"]
        with open_for_reading(settings.db) as warehouse:
            try:
                result = warehouse.connection.execute(sql)
                print_result(result, flags["output"])
            except duckdb.Error as exc:
                raise JobsyncError(str(exc).strip()) from None


def print_result(result: duckdb.DuckDBPyConnection, output: str) -> None:
    """The rows of an executed statement, in `output` format; nothing for a statement
    without rows (SET, ...). CSV and JSON stream: memory stays flat however many rows."""
    if result.description is None:
        return
    columns = [column[0] for column in result.description]
    if output == "table":
        click.echo(result_table(columns, result.fetchall()))
    elif output == "csv":
        _print_csv(columns, result)
    else:
        _print_json(columns, result)


def _print_csv(columns: list[str], result: duckdb.DuckDBPyConnection) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for rows in _chunks(result):
        writer.writerows([_csv_value(value) for value in row] for row in rows)
        click.echo(_take(buffer), nl=False)
    click.echo(_take(buffer), nl=False)


def _print_json(columns: list[str], result: duckdb.DuckDBPyConnection) -> None:
    """An array of objects, one a line."""
    separator = "\n"
    click.echo("[", nl=False)
    for rows in _chunks(result):
        for row in rows:
            document = orjson.dumps(dict(zip(columns, row, strict=True)), default=_json_value)
            click.echo(separator + document.decode(), nl=False)
            separator = ",\n"
    click.echo("\n]")


def _chunks(result: duckdb.DuckDBPyConnection) -> Iterator[list[Any]]:
    while rows := result.fetchmany(_FETCH_ROWS):
        yield rows


def _take(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _json_value(value: Any) -> Any:
    """What orjson cannot write itself: DECIMAL as a number, anything else (INTERVAL, BLOB)
    as text."""
    return float(value) if isinstance(value, Decimal) else str(value)


# -- status -----------------------------------------------------------------------------------


@click.command()
@_db_option
@click.option(
    "--check",
    is_flag=True,
    help="Exit 1 when the API may purge jobs the archive has not got (for monitoring).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--margin-days",
    type=click.IntRange(min=0),
    default=DEFAULT_MARGIN_DAYS,
    show_default=True,
    help="Warn this many days before the API's retention runs out on unarchived jobs.",
)
@click.option(
    "--as-of",
    metavar="TIME",
    help="Judge the archive as of this moment (date or ISO time, UTC if no offset) instead of now.",
)
@config_option
@verbosity_options
def status(**flags: Any) -> None:
    """The health of the archive: last successful sync and its age, jobs per flow, unfinished
    jobs awaiting refresh, rejects, and warnings.

    A purge-risk warning comes when the last successful sync is older than the retention
    (learned per flow from its jobs' purgeAt, else JOBSYNC_RETENTION_DAYS, default 30; the
    shortest counts, flows that keep nothing are only listed) minus --margin-days: it says
    how many days remain before the API deletes jobs the archive has not got. A gap warning
    names the window of
    jobs the API may have purged unseen when a run started more than the retention after the
    successful one before it. Warnings go to stderr; -q prints only them.

    Exit codes: 0 healthy (or no --check); 1 at risk with --check; 2 usage error;
    4 the warehouse is being written.

    \b
    Example (after the nightly sync):
      jobsync status --db jobs.duckdb --check -q
    """
    verbose, quiet = flags.pop("verbose"), flags.pop("quiet")
    with exit_on_error(verbose):
        settings = build_settings(flags)
        if flags["margin_days"] >= settings.retention_days:
            raise ConfigError(
                f"--margin-days must be below the retention ({settings.retention_days} days)"
            )
        now = _as_of(flags["as_of"])
        with open_for_reading(settings.db) as warehouse:
            health = read_health(warehouse)
    report = assess(health, now, settings.retention_days, flags["margin_days"])
    if flags["as_json"]:
        click.echo(json.dumps(report.as_dict()))
    else:
        if not quiet:
            click.echo(status_text(report))
        for warning in report.warnings():
            click.echo(f"jobsync: warning: {warning}", err=True)
    if flags["check"] and report.at_risk:
        sys.exit(EXIT_FAILURE)


def _as_of(text: str | None) -> datetime:
    if text is None:
        return datetime.now(tz=UTC)
    try:
        return ms_to_datetime(parse_user_time(text))
    except ValueError:
        raise ConfigError(f"--as-of: not a date or ISO timestamp: {text!r}") from None


def status_text(report: StatusReport) -> str:
    """The report for a terminal: a few labelled lines, then one row per flow."""
    health = report.health
    last_reject = f" (newest {_short(health.last_reject_at)})" if health.last_reject_at else ""
    keeping_nothing = [str(flow.flow_id) for flow in report.keeping_nothing]
    lines = [
        ("last successful run", _run_text(report.last_success, report.now)),
        ("last run", _run_text(report.last_run, report.now)),
        ("retention", f"{report.retention.days:g} days ({report.retention.source})"),
        ("purge risk", ("AT RISK: " if report.at_risk else "none: ") + report.purge.message),
        ("gaps", f"{len(report.gaps)} (see the warnings)" if report.gaps else "none"),
        ("rejects", f"{health.rejects:,}{last_reject}"),
        ("partitions pending", f"{health.partitions_pending:,}"),
    ]
    if keeping_nothing:
        lines.append(
            (
                "keeping nothing",
                f"{len(keeping_nothing)} flow(s) whose jobs the API purges as they end, which "
                f"no schedule can save: {', '.join(keeping_nothing[:5])}",
            )
        )
    width = max(len(label) for label, _ in lines)
    text = "\n".join(f"{label.ljust(width)}  {value}" for label, value in lines)
    return f"{text}\n\n{flow_table(health.flows)}" if health.flows else text


def flow_table(flows: Sequence[FlowHealth]) -> str:
    """Jobs archived per flow, with their oldest and newest createdAt and the retention their
    jobs' purgeAt shows ("default": none seen, --retention-days applies)."""
    rows = [
        (
            flow.flow_id,
            flow.jobs,
            _short(flow.oldest_created_at),
            _short(flow.newest_created_at),
            flow.unfinished,
            "default" if flow.retention_days is None else f"{flow.retention_days:.3g} days",
        )
        for flow in flows
    ]
    return result_table(("FLOW", "JOBS", "OLDEST", "NEWEST", "UNFINISHED", "RETENTION"), rows)


def _run_text(run: RunRecord | None, now: datetime) -> str:
    if run is None:
        return "none"
    age = (now - run.started_at).total_seconds() / 86400
    text = f"{run.run_id}, {run.outcome}, started {_short(run.started_at)} ({age:.1f} days ago)"
    return f"{text}: {run.error}" if run.error else text


def _short(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
