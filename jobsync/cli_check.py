"""`jobsync check`: verify the API URL, region, dialect and token before the first sync."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from jobsync.api import JobsClient, client_settings
from jobsync.check import CheckReport, check_api
from jobsync.cli_options import api_options, build_settings, exit_on_error, verbosity_options
from jobsync.cli_sync import configure_logging


@click.command()
@api_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@verbosity_options
def check(**flags: Any) -> None:
    """Check that the API answers and accepts the token; show what the token can see.

    Asks the token endpoint (integrator dialect: GET /tokenInfo) and GET /flows. Prints the
    API URL, region, dialect, what the API says about the token (never the token itself)
    and how many flows it can see.

    Exit codes: 0 the API accepts the token; 1 the API cannot be reached or failed;
    2 usage error (bad URL, no token); 3 the API rejected the token.

    \b
    Example:
      JOBSYNC_API_TOKEN=... jobsync check --region eu
    """
    configure_logging(flags["verbose"], flags["quiet"])
    with exit_on_error(flags["verbose"]):
        settings = build_settings(flags)
        report = asyncio.run(_check(client_settings(settings)))
    if flags["as_json"]:
        click.echo(json.dumps(report.as_dict()))
    elif not flags["quiet"]:
        click.echo("\n".join(report.lines()))


async def _check(settings: Any) -> CheckReport:
    async with JobsClient(settings) as client:
        return await check_api(client)
