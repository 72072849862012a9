"""The `jobsync` command line: parses options, calls one function per command, prints results."""

from __future__ import annotations

import click

from jobsync import __version__
from jobsync.cli_archive import archive, query, status
from jobsync.cli_check import check
from jobsync.cli_demo import demo
from jobsync.cli_jobs import jobs
from jobsync.cli_simulate import simulate
from jobsync.cli_sync import sync


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="jobsync")
def cli() -> None:
    """Keep a complete, permanent, queryable history of an integrator.io account's jobs.

    jobsync pages through the Jobs API (which purges jobs after 30 days) and upserts every
    job into a DuckDB warehouse. The token comes from JOBSYNC_API_TOKEN or --token-file.
    Start with `jobsync demo`, which needs neither a token nor a network.
    """


for command in (sync, check, archive, query, status, demo, jobs, simulate):
    cli.add_command(command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="jobsync")
