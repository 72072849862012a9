"""`jobsync jobs ...`: look at and cancel jobs live through the Jobs API (not the warehouse)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import click

from jobsync.api import JobsClient, client_settings
from jobsync.cli_options import api_options, build_settings, exit_on_error, verbosity_options
from jobsync.cli_sync import configure_logging
from jobsync.config import Settings
from jobsync.crawl import JOB_STATUSES, JOB_TYPES, CrawlError, JobsSource, fill_flow_ids, job_keys
from jobsync.cursor import Advance, CursorState, CursorStuck, Done, next_step, unseen
from jobsync.job_record import as_dicts
from jobsync.query import JobQuery
from jobsync.render import job_table, job_tree, to_json, tree_document
from jobsync.timestamps import format_iso_ms, parse_user_time

T = TypeVar("T")
_END_OF_TIME = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: later than any createdAt
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


@click.group()
def jobs() -> None:
    """Look at and cancel jobs live through the Jobs API (not the warehouse).

    The token comes from JOBSYNC_API_TOKEN or --token-file. Tables show times in UTC;
    --json prints the records exactly as the API sent them.
    """


@jobs.command("list")
@click.option(
    "--flow", "flows", multiple=True, metavar="ID", help="Jobs of this flow; repeat for several."
)
@click.option("--integration", metavar="ID", help="Jobs of this integration.")
@click.option("--export", "export_id", metavar="ID", help="Jobs of this export.")
@click.option("--import", "import_id", metavar="ID", help="Jobs of this import.")
@click.option("--flow-job", metavar="ID", help="Child jobs of this flow job.")
@click.option("--status", type=click.Choice(JOB_STATUSES), help="Only jobs in this status.")
@click.option("--type", "job_type", type=click.Choice(JOB_TYPES), help="Only jobs of this type.")
@click.option(
    "--created-after",
    metavar="TIME",
    help="Created at or after this moment (date or ISO time; UTC if no offset).",
)
@click.option("--created-before", metavar="TIME", help="Created at or before this moment.")
@click.option("--min-success", type=click.IntRange(min=0), help="At least N successful records.")
@click.option("--max-success", type=click.IntRange(min=0), help="At most N successful records.")
@click.option("--min-errors", type=click.IntRange(min=0), help="At least N failed records.")
@click.option("--min-ignored", type=click.IntRange(min=0), help="At least N ignored records.")
@click.option("--min-exported", type=click.IntRange(min=0), help="At least N exported records.")
@click.option("--max-exported", type=click.IntRange(min=0), help="At most N exported records.")
@click.option(
    "--min-resolved",
    type=click.IntRange(min=0),
    help="At least N resolved errors (integrator dialect).",
)
@click.option(
    "--retriable/--not-retriable",
    default=None,
    help="Only jobs that can (or cannot) be retried (integrator dialect).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), help="At most N jobs, following pages as needed."
)
@click.option(
    "--all", "all_pages", is_flag=True, help="Follow every page (the API sends 1001 at most)."
)
@_json_option
@api_options
@verbosity_options
def list_command(**flags: Any) -> None:
    """List jobs, newest first: the first page, or N with --limit, or every one with --all.

    \b
    Examples:
      jobsync jobs list --flow F1 --status failed --created-after 2024-01-01
      jobsync jobs list --all --type flow --min-errors 1 --json
    """
    configure_logging(flags["verbose"], flags["quiet"])
    with exit_on_error(flags["verbose"]):
        settings = build_settings(flags)
        query = _query(flags)
        try:
            query.params(settings.api_dialect)
        except ValueError as exc:
            raise click.UsageError(f"{exc}; is --dialect right?") from None
        if settings.api_dialect.listing_needs_filter and not query.has_resource_or_date():
            query = replace(query, created_at_gte=0)  # a date filter that keeps every job
        follow = flags["all_pages"] or flags["limit"] is not None
        found, more = _run(
            settings,
            lambda client: collect_jobs(
                client, query, settings.page_size, flags["limit"], follow=follow
            ),
        )
    click.echo(to_json(found) if flags["as_json"] else job_table(found))
    if more and not follow and not flags["quiet"]:
        click.echo(
            f"jobsync: showing the first page ({len(found)} jobs); --all or --limit N for more",
            err=True,
        )


@jobs.command("get")
@click.argument("job_id", metavar="ID")
@_json_option
@api_options
@verbosity_options
def get_command(**flags: Any) -> None:
    """Show one job."""
    configure_logging(flags["verbose"], flags["quiet"])
    with exit_on_error(flags["verbose"]):
        settings = build_settings(flags)
        job = _run(settings, lambda client: client.get_job(flags["job_id"]))
    click.echo(to_json(job) if flags["as_json"] else job_table([job]))


@jobs.command("tree")
@click.argument("job_id", metavar="ID")
@_json_option
@api_options
@verbosity_options
def tree_command(**flags: Any) -> None:
    """Show a flow job with its export and import jobs.

    --json prints {"flow": ..., "exports": [...], "imports": [...], "others": [...]}.
    """
    configure_logging(flags["verbose"], flags["quiet"])
    with exit_on_error(flags["verbose"]):
        settings = build_settings(flags)
        flow_job, children = _run(
            settings, lambda client: fetch_tree(client, flags["job_id"], settings.page_size)
        )
    if flags["as_json"]:
        click.echo(to_json(tree_document(flow_job, children)))
    else:
        click.echo(job_tree(flow_job, children))


@jobs.command("cancel")
@click.argument("job_id", metavar="ID")
@_json_option
@api_options
@verbosity_options
def cancel_command(**flags: Any) -> None:
    """Cancel a running or queued flow job (export and import jobs cannot be canceled)."""
    configure_logging(flags["verbose"], flags["quiet"])
    with exit_on_error(flags["verbose"]):
        settings = build_settings(flags)
        job = _run(settings, lambda client: client.cancel_job(flags["job_id"]))
    if flags["as_json"]:
        click.echo(to_json(job))
    elif not flags["quiet"]:
        click.echo(job_table([job]))


async def collect_jobs(
    client: JobsSource, query: JobQuery, page_size: int, limit: int | None, *, follow: bool
) -> tuple[list[Any], bool]:
    """Jobs matching `query`, newest first, and whether more may follow.

    Without `follow`, only the first page. With it, page through the inclusive cursor
    (`createdAt_lte` = the oldest createdAt seen, repeats dropped by `_id`) until `limit`
    jobs or the end.
    """
    state = CursorState(query.created_at_lte if query.created_at_lte is not None else _END_OF_TIME)
    found: list[Any] = []
    page_query = query
    while True:
        page = as_dicts(await client.list_jobs(page_query))  # shown and filled as JSON
        full = len(page) >= page_size
        keys, ids = job_keys(page)
        found.extend(unseen(state, page, ids))
        if limit is not None and len(found) >= limit:
            return found[:limit], len(found) > limit or full
        if not follow:
            return found, full
        try:
            step = next_step(state, query.created_at_gte, keys, full)
        except CursorStuck as exc:
            message = f"cannot page on: {exc}"
        else:
            if isinstance(step, Done):
                return found, False
            if isinstance(step, Advance):
                state = step.state
                page_query = replace(query, created_at_lte=state.lte)
                continue
            message = (
                f"{page_size} or more jobs share createdAt {format_iso_ms(step.ms)}; "
                "narrow the listing (e.g. --type, --status) to see them all"
            )
        raise CrawlError(message)


async def fetch_tree(
    client: JobsSource, job_id: str, page_size: int
) -> tuple[dict[str, Any], list[Any]]:
    """A job and the jobs listed with it as their flow job (exports, imports), which get the
    flow job's `_flowId` and `_integrationId` where the listing leaves them out."""
    flow_job = await client.get_job(job_id)
    children, _ = await collect_jobs(
        client, JobQuery(flow_job_id=job_id), page_size, None, follow=True
    )
    own_id = flow_job.get("_id", job_id)
    children = [c for c in children if not isinstance(c, dict) or c.get("_id") != own_id]
    flow_id, integration_id = flow_job.get("_flowId"), flow_job.get("_integrationId")
    if isinstance(flow_id, str):
        integration_id = integration_id if isinstance(integration_id, str) else None
        for child in children:
            if isinstance(child, dict):
                fill_flow_ids(child, flow_id, integration_id)
    return flow_job, children


def _query(flags: dict[str, Any]) -> JobQuery:
    flows = tuple(dict.fromkeys(flags["flows"]))
    if any(not flow.strip() for flow in flows):
        raise click.BadParameter("a flow id is empty", param_hint="--flow")
    return JobQuery(
        flow_id=flows[0] if len(flows) == 1 else None,
        flow_ids=flows if len(flows) > 1 else (),
        integration_id=flags["integration"],
        export_id=flags["export_id"],
        import_id=flags["import_id"],
        flow_job_id=flags["flow_job"],
        status=flags["status"],
        type=flags["job_type"],
        created_at_gte=_user_time(flags["created_after"], "--created-after"),
        created_at_lte=_user_time(flags["created_before"], "--created-before"),
        num_success_gte=flags["min_success"],
        num_success_lte=flags["max_success"],
        num_error_gte=flags["min_errors"],
        num_ignore_gte=flags["min_ignored"],
        num_export_gte=flags["min_exported"],
        num_export_lte=flags["max_exported"],
        num_resolved_gte=flags["min_resolved"],
        retriable=flags["retriable"],
    )


def _user_time(text: str | None, option: str) -> int | None:
    if text is None:
        return None
    try:
        return parse_user_time(text)
    except ValueError:
        raise click.BadParameter(
            f"not a date or ISO timestamp: {text!r}", param_hint=option
        ) from None


def _run(settings: Settings, work: Callable[[JobsClient], Awaitable[T]]) -> T:
    """Open a client and run `work` with it: the command's one event loop."""

    async def main() -> T:
        async with JobsClient(client_settings(settings)) as client:
            return await work(client)

    return asyncio.run(main())
