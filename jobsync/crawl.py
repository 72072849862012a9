"""Crawling: pages of one partition through the tie-safe cursor, the splitting of a
millisecond that holds more jobs than a page, the child jobs a flow listing leaves out,
and the refresh of unfinished jobs.

The crawler never writes: it hands every page, with the cursor state that holds once the
page is stored, to an `emit` coroutine (the sync's bounded queue to the single writer).
Child jobs are always emitted before the page whose cursor passes their flow job, so a
killed run never leaves a cursor past children it has not stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from jobsync.cursor import Advance, CursorState, Done, SplitMillisecond, next_step, unseen
from jobsync.dialect import DIALECTS, REFERENCE, Dialect
from jobsync.errors import JobsyncError, NotFound
from jobsync.job_record import JobRecord, is_record
from jobsync.partition import Partition
from jobsync.query import JobQuery, parameter_names
from jobsync.timestamps import format_iso_ms, parse_iso_ms

log = logging.getLogger("jobsync.crawl")
T = TypeVar("T")

# every type and status either dialect knows, for choices and request-length bounds
JOB_TYPES = tuple(dict.fromkeys(t for d in DIALECTS.values() for t in d.types))
JOB_STATUSES = tuple(dict.fromkeys(s for d in DIALECTS.values() for s in d.statuses))
_MAX_COUNT = 2**53
_ABSENT = object()
_ANY_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: every ISO time has this length


class JobsSource(Protocol):
    """What the crawler needs of the API client."""

    dialect: Dialect

    async def list_jobs(self, query: JobQuery) -> list[Any]: ...

    async def get_job(self, job_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CrawlPage:
    """Records to store. For a partition's page: `cursor` is its state once they are stored
    (None: unchanged), `finished` says the partition is complete."""

    records: list[Any]
    partition_key: str | None = None
    cursor: CursorState | None = None
    finished: bool = False


Emit = Callable[[CrawlPage], Awaitable[None]]
OnRecords = Callable[[list[Any]], Awaitable[None]]


@dataclass(frozen=True)
class Step:
    """An export or import of a flow: integrator.io lists its jobs by `_exportId`/`_importId`."""

    field: str  # the JobQuery field: export_id or import_id
    id: str
    flow_id: str
    integration_id: str | None


@dataclass(frozen=True)
class FlowSteps:
    """A flow's current steps and when they last changed (its `lastModified`; None when
    missing or unreadable). A step removed since then still has jobs no current step lists."""

    steps: tuple[Step, ...]
    changed_ms: int | None


def flow_steps(flows: Iterable[Any]) -> dict[str, FlowSteps]:
    """flow id -> its steps, from `GET /flows` records that list them (`pageGenerators[]`,
    `pageProcessors[]`); flows that list none are left out (their steps are unknown)."""
    steps: dict[str, FlowSteps] = {}
    for flow in flows:
        if not isinstance(flow, dict) or not isinstance(flow.get("_id"), str):
            continue
        integration = flow.get("_integrationId")
        integration = integration if isinstance(integration, str) else None
        found = [
            Step(field, item[key], flow["_id"], integration)
            for group, field, key in (
                ("pageGenerators", "export_id", "_exportId"),
                ("pageProcessors", "import_id", "_importId"),
            )
            for item in (flow.get(group) or ())
            if isinstance(item, dict) and isinstance(item.get(key), str) and item[key]
        ]
        if found:
            steps[flow["_id"]] = FlowSteps(tuple(found), _moment(flow.get("lastModified")))
    return steps


def why_steps_miss_children(partition: Partition, steps: Mapping[str, FlowSteps]) -> str | None:
    """Why listing the partition's children by step could miss some, or None when it cannot:
    the steps are the flows' current ones, so every flow's must be known and unchanged since
    the window began (a step removed inside it or later has jobs in it that none lists)."""
    if partition.window_gte is None:
        return "the window has no start"
    for flow_id in partition.flow_ids:
        known = steps.get(flow_id)
        if known is None:
            return f"the steps of flow {flow_id} are unknown"
        if known.changed_ms is None:
            return f"flow {flow_id} has no readable lastModified"
        if known.changed_ms > partition.window_gte:
            changed = format_iso_ms(known.changed_ms)
            return f"flow {flow_id} changed at {changed}, after the window began"
    return None


class CrawlError(JobsyncError):
    """A partition cannot be read completely (e.g. a millisecond that no filter can split)."""


def job_keys(records: Sequence[Any]) -> tuple[list[tuple[int, str]], list[str | None]]:
    """(createdAt ms, _id) of the records that have both, and each record's id (or None)."""
    keys: list[tuple[int, str]] = []
    ids: list[str | None] = []
    for record in records:
        job_id = record.get("_id") if is_record(record) else None
        job_id = job_id if isinstance(job_id, str) and job_id else None
        ids.append(job_id)
        created = None if job_id is None else _moment(record.get("createdAt"))
        if created is not None:
            keys.append((created, job_id))
    return keys, ids


def partition_query(partition: Partition, state: CursorState) -> JobQuery:
    """The listing request for the next page of a partition."""
    return JobQuery(
        **_flow_filter(partition.flow_ids),
        created_at_gte=partition.window_gte,
        created_at_lte=state.lte,
    )


def _flow_filter(flow_ids: tuple[str, ...]) -> dict[str, Any]:
    """One flow goes as `flow_id`, whole whatever it holds; several as `flow_id_in`."""
    return {"flow_id": flow_ids[0]} if len(flow_ids) == 1 else {"flow_ids": flow_ids}


def widest_query(flow_ids: tuple[str, ...]) -> JobQuery:
    """The longest request the crawler sends for a flow batch: its window and every split
    filter set (the longest type and status of any dialect). Used to keep batches under the
    request-line limit."""
    return JobQuery(
        **_flow_filter(flow_ids),
        created_at_gte=_ANY_MS,
        created_at_lte=_ANY_MS,
        status=max(JOB_STATUSES, key=len),
        type=max(JOB_TYPES, key=len),
        num_success_gte=-_MAX_COUNT,
        num_success_lte=_MAX_COUNT,
    )


class Crawler:
    """Reads partitions and unfinished jobs from the API and emits what it finds.

    Where the dialect's flow listing leaves child jobs out, they are fetched either by their
    flow job (`_flowJobId`, one listing per flow job) or by step (`_exportId`/`_importId`
    over the partition's window, one listing per step), whichever costs fewer requests.
    """

    def __init__(self, source: JobsSource, page_size: int, dialect: Dialect = REFERENCE) -> None:
        self.source = source
        self.page_size = page_size
        self.dialect = dialect
        self.fetch_children = not dialect.flow_listing_has_children
        self.types = dialect.top_level_types if self.fetch_children else dialect.types
        self.statuses = dialect.statuses
        self.steps: dict[str, FlowSteps] = {}

    def learn_flows(self, flows: Iterable[Any]) -> None:
        """Remember the flows' steps (from `GET /flows`), so children can be listed by step."""
        self.steps = flow_steps(flows)

    async def crawl_partition(self, partition: Partition, emit: Emit) -> None:
        """Page newest-first through the partition's window from its cursor to the end."""
        state = partition.cursor
        first = True
        by_step_through: int | None = None  # children of flow jobs ended by then: by step

        async def store_split_page(records: list[Any]) -> None:
            self._check_flows(records, partition.flow_ids)
            await self._emit_children(records, by_step_through, partition.key, emit)
            await emit(CrawlPage(records, partition.key))

        while True:
            page = await self.source.list_jobs(partition_query(partition, state))
            self._check_flows(page, partition.flow_ids)
            if first and self.fetch_children and self._steps_are_cheaper(partition, page):
                # the whole window's children, before this run moves the cursor: complete for
                # the flow jobs still to come whatever an interrupted run did before
                await self._emit_children_by_step(partition, emit)
                by_step_through = partition.window_lte
            first = False
            keys, ids = job_keys(page)
            full = len(page) >= self.page_size
            step = next_step(state, partition.window_gte, keys, full)
            records = unseen(state, page, ids)
            await self._emit_children(records, by_step_through, partition.key, emit)
            if not isinstance(step, SplitMillisecond):
                done = isinstance(step, Done)
                cursor = None if done else step.state
                handed = emit(CrawlPage(records, partition.key, cursor=cursor, finished=done))
                # The records are emit's from here: not held while it waits for the writer's
                # queue (it keeps their compact rows), nor while the next page is fetched.
                del page, records
                await handed
                if cursor is None:
                    return
                state = cursor
                continue
            await emit(CrawlPage(records, partition.key))
            crowded = replace(
                partition_query(partition, state), created_at_gte=step.ms, created_at_lte=step.ms
            )
            await self._split(crowded, page, self.types, store_split_page)
            del page, records
            if step.then is None:
                await emit(CrawlPage([], partition.key, finished=True))
                return
            await emit(CrawlPage([], partition.key, cursor=step.then))
            state = step.then

    async def refresh(self, job_id: str, emit: Emit) -> bool:
        """Fetch one job again, with its children where the flow listing lacks them (a running
        flow job makes more); False when the API no longer has it (the stored state stays)."""
        try:
            job = await self.source.get_job(job_id)
        except NotFound:
            return False
        children = await self._children_of(job) if self._is_parent(job) else []
        await emit(CrawlPage([*children, job]))
        return True

    def _steps_are_cheaper(self, partition: Partition, first_page: list[Any]) -> bool:
        """Listing by step costs a request per step; by flow job, one per flow job (at least
        a page's worth when the first page is full). By step must also be complete."""
        incomplete = why_steps_miss_children(partition, self.steps)
        if incomplete is not None:
            log.debug("partition %s: children by flow job: %s", partition.key, incomplete)
            return False
        by_step = sum(len(self.steps[flow].steps) for flow in partition.flow_ids)
        parents = sum(1 for job in first_page if self._is_parent(job))
        by_parent = max(parents, self.page_size) if len(first_page) >= self.page_size else parents
        log.debug(
            "partition %s: children by step %d vs by flow job %d", partition.key, by_step, by_parent
        )
        return by_step < by_parent

    async def _emit_children_by_step(self, partition: Partition, emit: Emit) -> None:
        """Every child job created in the partition's window, listed step by step."""
        steps = [step for flow in partition.flow_ids for step in self.steps[flow].steps]
        await _all(self._emit_step_jobs(step, partition, emit) for step in steps)

    async def _emit_step_jobs(self, step: Step, partition: Partition, emit: Emit) -> None:
        query = replace(
            JobQuery(created_at_gte=partition.window_gte, created_at_lte=partition.window_lte),
            **{step.field: step.id},
        )

        async def store(records: list[Any]) -> None:
            filled: list[Any] = []
            for job in records:
                if is_record(job):
                    self._check_child(job, step.flow_id, step.field)
                    job = fill_flow_ids(job, step.flow_id, step.integration_id)
                filled.append(job)
            await emit(CrawlPage(filled, partition.key))

        await self._page_through(query, self.dialect.child_types, store)

    async def _emit_children(
        self, records: list[Any], by_step_through: int | None, key: str, emit: Emit
    ) -> None:
        """Fetch and emit the children of the flow jobs among `records` that need it: all of
        them, or (when the window's children came by step) those not ended inside it."""
        if not self.fetch_children:
            return
        parents = [
            job for job in records if self._is_parent(job) and not _ended_by(job, by_step_through)
        ]
        if not parents:
            return
        found = await _all(self._children_of(parent) for parent in parents)
        children = [child for group in found for child in group]
        if children:
            await emit(CrawlPage(children, key))

    async def _children_of(self, parent: Any) -> list[Any]:
        """The child jobs of one flow job, with its `_flowId` and `_integrationId` filled in
        where the listing left them out."""
        children: list[Any] = []

        async def collect(records: list[Any]) -> None:
            children.extend(records)

        query = JobQuery(flow_job_id=parent["_id"])
        await self._page_through(query, self.dialect.child_types, collect)
        flow_id, integration_id = parent.get("_flowId"), parent.get("_integrationId")
        integration_id = integration_id if isinstance(integration_id, str) else None
        filled: list[Any] = []
        for child in children:
            if not is_record(child):
                filled.append(child)
                continue
            link = child.get("_flowJobId", _ABSENT)  # no default to parse when it is set
            if link is _ABSENT:
                link = child.get("_parentJobId")
            if link is not None and link != parent["_id"]:
                raise CrawlError(
                    f"asked for the children of flow job {parent['_id']}, got job "
                    f"{child.get('_id')} of flow job {link}: the API likely ignored the filter "
                    f"`{self._param('flow_job_id')}`; is --dialect right?"
                )
            if isinstance(flow_id, str):
                self._check_child(child, flow_id, "flow_job_id")
                child = fill_flow_ids(child, flow_id, integration_id)
            filled.append(child)
        return filled

    async def _page_through(
        self, query: JobQuery, types: Sequence[str], on_page: OnRecords
    ) -> None:
        """Every job matching `query`, page by page, through the tie-safe cursor (kept in
        memory: these listings are short and redone whole after a crash)."""
        state = CursorState(_ANY_MS if query.created_at_lte is None else query.created_at_lte)
        current = query
        while True:
            page = await self.source.list_jobs(current)
            keys, ids = job_keys(page)
            step = next_step(state, query.created_at_gte, keys, len(page) >= self.page_size)
            await on_page(unseen(state, page, ids))
            if isinstance(step, Done):
                return
            if isinstance(step, Advance):
                state = step.state
            else:
                crowded = replace(query, created_at_gte=step.ms, created_at_lte=step.ms)
                await self._split(crowded, page, types, on_page)
                if step.then is None:
                    return
                state = step.then
            del page  # not held while the next page is fetched (see crawl_partition)
            current = replace(query, created_at_lte=state.lte)

    async def _split(
        self, query: JobQuery, full_page: list[Any], types: Sequence[str], on_page: OnRecords
    ) -> set[str]:
        """Fetch every job matching `query` (one millisecond) when a page of it came back full:
        by type, then status, then single flows, then ranges of numSuccess. Returns the ids
        found; a job of the full page that no sub-filter matched (say, one without a status)
        fails the partition rather than being lost unnoticed."""
        moment = format_iso_ms(query.created_at_lte or 0)
        subqueries = self._subqueries(query, full_page, types)
        if not subqueries:
            raise CrawlError(
                f"{self.page_size} or more jobs share createdAt {moment} "
                "and no filter can tell them apart"
            )
        found: set[str] = set()
        for sub in subqueries:
            page = await self.source.list_jobs(sub)
            await on_page(page)
            found.update(i for i in job_keys(page)[1] if i is not None)
            if len(page) >= self.page_size:
                found |= await self._split(sub, page, types, on_page)
        missing = {i for i in job_keys(full_page)[1] if i is not None} - found
        if missing:
            raise CrawlError(
                f"{len(missing)} job(s) at createdAt {moment} match none of the filters that "
                f"split a full millisecond (e.g. {sorted(missing)[0]}: a missing type, status "
                "or numSuccess?)"
            )
        return found

    def _subqueries(self, query: JobQuery, page: list[Any], types: Sequence[str]) -> list[JobQuery]:
        if query.type is None:
            return [replace(query, type=v) for v in _values(types, page, "type")]
        if query.status is None:
            return [replace(query, status=v) for v in _values(self.statuses, page, "status")]
        if len(query.flow_ids) > 1:
            return [replace(query, flow_ids=(), flow_id=flow) for flow in query.flow_ids]
        low = -_MAX_COUNT if query.num_success_gte is None else query.num_success_gte
        high = _MAX_COUNT if query.num_success_lte is None else query.num_success_lte
        if low >= high:
            return []
        middle = (low + high) // 2
        return [
            replace(query, num_success_gte=low, num_success_lte=middle),
            replace(query, num_success_gte=middle + 1, num_success_lte=high),
        ]

    def _is_parent(self, job: Any) -> bool:
        """A top-level job whose children the flow listing leaves out."""
        return (
            self.fetch_children
            and is_record(job)
            and isinstance(job.get("_id"), str)
            and job.get("type") in self.dialect.top_level_types
        )

    def _check_flows(self, records: list[Any], flow_ids: tuple[str, ...]) -> None:
        """A listing by flow that returns another flow's job means the API ignored the flow
        filter (integrator.io ignores a misspelled one): fail loudly, never store it."""
        asked = set(flow_ids)
        for job in records:
            flow = job.get("_flowId") if is_record(job) else None
            if isinstance(flow, str) and flow not in asked:
                name = self._param("flow_id" if len(flow_ids) == 1 else "flow_ids")
                raise CrawlError(
                    f"asked for the jobs of {len(asked)} flow(s), got job {job.get('_id')} of "
                    f"flow {flow}: the API likely ignored the filter `{name}`; is --dialect "
                    f"({self.dialect.name}) right?"
                )

    def _check_child(self, job: Any, flow_id: str, field: str) -> None:
        flow = job.get("_flowId")
        if isinstance(flow, str) and flow != flow_id:
            raise CrawlError(
                f"asked for child jobs of flow {flow_id}, got job {job.get('_id')} of flow "
                f"{flow}: the API likely ignored the filter `{self._param(field)}`; is "
                f"--dialect ({self.dialect.name}) right?"
            )

    def _param(self, field: str) -> str:
        return parameter_names(self.dialect)[field]


def _moment(value: Any) -> int | None:
    """Milliseconds of an API timestamp, or None when it is missing or unreadable."""
    try:
        return parse_iso_ms(value)
    except (TypeError, ValueError):
        return None


def _ended_by(job: Any, moment: int | None) -> bool:
    """Whether the job ended by `moment` (so its children were created by then too)."""
    if moment is None:
        return False
    ended = _moment(job.get("endedAt"))
    return ended is not None and ended <= moment


def fill_flow_ids(job: Any, flow_id: str, integration_id: str | None) -> Any:
    """Give a child the `_flowId` and `_integrationId` of its flow where it lacks them, placed
    after `status` as the API places them, so a later full record of it compares equal.
    Returns the child: a dict filled in place, or a JobRecord as is, or as a filled dict."""
    if isinstance(job, JobRecord):
        if job.flow_id is not None and (job.integration_id is not None or integration_id is None):
            return job
        job = job.as_dict()
    missing = {"_integrationId": integration_id, "_flowId": flow_id}
    missing = {k: v for k, v in missing.items() if v is not None and k not in job}
    if not missing:
        return job
    items = list(job.items())
    at = next((i + 1 for i, (key, _) in enumerate(items) if key == "status"), 0)
    job.clear()
    job.update(items[:at])
    job.update(missing)
    job.update(items[at:])
    return job


async def _all(coroutines: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently (the client bounds what is in flight); the first failure is raised
    as itself, not as an exception group."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coroutines]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]


def _values(known: Sequence[str], page: list[Any], field: str) -> list[str]:
    """The known values of a field plus any others the page shows (new types and statuses
    appear; a split that left them out would lose their jobs)."""
    seen = {r.get(field) for r in page if is_record(r) and isinstance(r.get(field), str)}
    return list(known) + sorted(seen - set(known))
