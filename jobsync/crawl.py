"""Crawling: pages of one partition through the tie-safe cursor, the splitting of a
millisecond that holds more jobs than a page, and the refresh of unfinished jobs.

The crawler never writes: it hands every page, with the cursor state that holds once the
page is stored, to an `emit` coroutine (the sync's bounded queue to the single writer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from jobsync.cursor import Advance, CursorState, Done, next_step, unseen
from jobsync.errors import JobsyncError, NotFound
from jobsync.partition import Partition
from jobsync.query import JobQuery
from jobsync.timestamps import format_iso_ms, parse_iso_ms

JOB_TYPES = ("flow", "export", "import")
JOB_STATUSES = ("queued", "running", "completed", "failed", "canceled")
_MAX_COUNT = 2**53
_ANY_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: every ISO time has this length


class JobsSource(Protocol):
    """What the crawler needs of the API client."""

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


class CrawlError(JobsyncError):
    """A partition cannot be read completely (e.g. a millisecond that no filter can split)."""


def job_keys(records: Sequence[Any]) -> tuple[list[tuple[int, str]], list[str | None]]:
    """(createdAt ms, _id) of the records that have both, and each record's id (or None)."""
    keys: list[tuple[int, str]] = []
    ids: list[str | None] = []
    for record in records:
        job_id = record.get("_id") if isinstance(record, dict) else None
        job_id = job_id if isinstance(job_id, str) and job_id else None
        ids.append(job_id)
        if job_id is None:
            continue
        try:
            keys.append((parse_iso_ms(record.get("createdAt")), job_id))
        except (TypeError, ValueError):
            continue
    return keys, ids


def partition_query(partition: Partition, state: CursorState) -> JobQuery:
    """The listing request for the next page of a partition."""
    flows = partition.flow_ids
    return JobQuery(
        flow_id=flows[0] if len(flows) == 1 else None,
        flow_ids=flows if len(flows) > 1 else (),
        created_at_gte=partition.window_gte,
        created_at_lte=state.lte,
    )


def widest_query(flow_ids: tuple[str, ...]) -> JobQuery:
    """The longest request the crawler sends for a flow batch: its window and every split
    filter set. Used to keep batches under the request-line limit."""
    return JobQuery(
        flow_ids=flow_ids,
        created_at_gte=_ANY_MS,
        created_at_lte=_ANY_MS,
        status=max(JOB_STATUSES, key=len),
        type=max(JOB_TYPES, key=len),
        num_success_gte=-_MAX_COUNT,
        num_success_lte=_MAX_COUNT,
    )


class Crawler:
    """Reads partitions and unfinished jobs from the API and emits what it finds."""

    def __init__(
        self,
        source: JobsSource,
        page_size: int,
        types: Sequence[str] = JOB_TYPES,
        statuses: Sequence[str] = JOB_STATUSES,
    ) -> None:
        self.source = source
        self.page_size = page_size
        self.types = tuple(types)
        self.statuses = tuple(statuses)

    async def crawl_partition(self, partition: Partition, emit: Emit) -> None:
        """Page newest-first through the partition's window from its cursor to the end."""
        state = partition.cursor
        while True:
            page = await self.source.list_jobs(partition_query(partition, state))
            keys, ids = job_keys(page)
            full = len(page) >= self.page_size
            step = next_step(state, partition.window_gte, keys, full)
            fresh = unseen(state, page, ids)
            if isinstance(step, Done):
                await emit(CrawlPage(fresh, partition.key, finished=True))
                return
            if isinstance(step, Advance):
                await emit(CrawlPage(fresh, partition.key, cursor=step.state))
                state = step.state
                continue
            await emit(CrawlPage(fresh, partition.key))
            crowded = replace(
                partition_query(partition, state), created_at_gte=step.ms, created_at_lte=step.ms
            )
            await self._split(crowded, page, partition.key, emit)
            if step.then is None:
                await emit(CrawlPage([], partition.key, finished=True))
                return
            await emit(CrawlPage([], partition.key, cursor=step.then))
            state = step.then

    async def _split(self, query: JobQuery, full_page: list[Any], key: str, emit: Emit) -> set[str]:
        """Fetch every job matching `query` (one millisecond) when a page of it came back full:
        by type, then status, then single flows, then ranges of numSuccess. Returns the ids
        found; a job of the full page that no sub-filter matched (say, one without a status)
        fails the partition rather than being lost unnoticed."""
        moment = format_iso_ms(query.created_at_lte or 0)
        subqueries = self._subqueries(query, full_page)
        if not subqueries:
            raise CrawlError(
                f"{self.page_size} or more jobs share createdAt {moment} "
                "and no filter can tell them apart"
            )
        found: set[str] = set()
        for sub in subqueries:
            page = await self.source.list_jobs(sub)
            await emit(CrawlPage(page, key))
            found.update(i for i in job_keys(page)[1] if i is not None)
            if len(page) >= self.page_size:
                found |= await self._split(sub, page, key, emit)
        missing = {i for i in job_keys(full_page)[1] if i is not None} - found
        if missing:
            raise CrawlError(
                f"{len(missing)} job(s) at createdAt {moment} match none of the filters that "
                f"split a full millisecond (e.g. {sorted(missing)[0]}: a missing type, status "
                "or numSuccess?)"
            )
        return found

    def _subqueries(self, query: JobQuery, page: list[Any]) -> list[JobQuery]:
        if query.type is None:
            return [replace(query, type=v) for v in _values(self.types, page, "type")]
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

    async def refresh(self, job_id: str, emit: Emit) -> bool:
        """Fetch one job again; False when the API no longer has it (the stored state stays)."""
        try:
            job = await self.source.get_job(job_id)
        except NotFound:
            return False
        await emit(CrawlPage([job]))
        return True


def _values(known: Sequence[str], page: list[Any], field: str) -> list[str]:
    """The known values of a field plus any others the page shows (new types and statuses
    appear; a split that left them out would lose their jobs)."""
    seen = {r.get(field) for r in page if isinstance(r, dict) and isinstance(r.get(field), str)}
    return list(known) + sorted(seen - set(known))
