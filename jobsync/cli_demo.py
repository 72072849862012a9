"""`jobsync demo`: run the pipeline offline and show what the warehouse answers."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from jobsync.cli_options import exit_on_error
from jobsync.cli_sync import configure_logging
from jobsync.demo import run_demo
from jobsync.dialect import DEFAULT_DIALECT, DIALECT_NAMES
from jobsync.render import result_table


@click.command()
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("jobsync-demo.duckdb"),
    show_default=True,
    help="DuckDB file to sync into (a rerun syncs incrementally).",
)
@click.option(
    "--flows",
    type=click.IntRange(1, 2000),
    default=40,
    show_default=True,
    help="Flows in the synthetic account.",
)
@click.option(
    "--days",
    type=click.IntRange(1, 120),
    default=35,
    show_default=True,
    help="Days of history before now.",
)
@click.option("--seed", type=int, default=7, show_default=True, help="Seed of the account.")
@click.option(
    "--dialect",
    type=click.Choice(DIALECT_NAMES),
    default=DEFAULT_DIALECT,
    show_default=True,
    help="The API dialect the simulator speaks and the sync talks.",
)
@click.option("-v", "--verbose", is_flag=True, help="Say more; show tracebacks on errors.")
def demo(db: Path, flows: int, days: int, seed: int, dialect: str, verbose: bool) -> None:
    """Sync a synthetic account from the built-in simulator into DuckDB, offline.

    Starts the Jobs API simulator on a loopback port (no token, no network), runs a real
    `jobsync sync` against it into --db, then prints the summary and two analyst queries
    with their results. Open the file afterwards with DuckDB to ask your own questions.

    \b
    Example:
      jobsync demo && duckdb jobsync-demo.duckdb "SELECT status, count(*) FROM jobs GROUP BY 1"
    """
    configure_logging(verbose, quiet=False)
    with exit_on_error(verbose):
        click.echo(f"Serving a simulated account ({flows} flows, {days} days) on loopback...")
        result = run_demo(db, flows, days, seed, dialect)
    click.echo(result.summary.line())
    click.echo(f"Warehouse: {db}\n")
    for question, sql, columns, rows in result.answers:
        click.echo(f"-- {question}\n{sql};\n")
        click.echo(result_table(columns, rows) + "\n")
    if result.summary.outcome != "succeeded":
        sys.exit(1)
