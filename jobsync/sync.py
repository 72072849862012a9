"""One sync run: plan partitions, crawl them concurrently (oldest window first), and store
every page through one writer that commits rows and cursors together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from jobsync.crawl import Crawler, CrawlError, CrawlPage, widest_query
from jobsync.cursor import CursorStuck
from jobsync.errors import ApiError, Unauthorized, Untrusted
from jobsync.held_pages import PageToStore
from jobsync.memory import give_back_freed_memory
from jobsync.partition import (
    DAY_MS,
    Partition,
    pack_flow_batches,
    plan_partitions,
    purge_first,
)
from jobsync.query import JobQuery
from jobsync.records import normalise_page
from jobsync.refresh import plan_refresh
from jobsync.store import ROW_GROUP_ROWS, RunCounts, Warehouse
from jobsync.timestamps import format_iso_ms, now_ms
from jobsync.writer import BatchWriter

log = logging.getLogger("jobsync.sync")


@dataclass(frozen=True)
class SyncOptions:
    """What one run reads, and how hard it may push."""

    flow_ids: tuple[str, ...] = ()  # empty: every flow that GET /flows lists
    since_ms: int | None = None
    overlap_ms: int = 3_600_000
    max_duration_s: float | None = None
    page_size: int = 1001
    retention_days: int = 30
    window_ms: int = DAY_MS
    commit_rows: int = ROW_GROUP_ROWS  # commits take whole multiples (see jobsync.writer)
    # Until the writer committed whole row groups, it committed what the queue held, so the
    # queue set how many pages a batch held, and a batch's statements took the GIL back some
    # 130 times whatever it held (perf probes on take_gil): each take waits behind the event
    # loop. With 12 pages, not 8, the writer took the GIL a third fewer times, and the
    # ingest under the cap gave 117k jobs/s against 109.5k (scripts/bench.py; alternated,
    # medians of 8; 16 pages: 117k too).
    queue_pages: int = 12


@dataclass
class SyncSummary:
    """The outcome of a run, for the one-line summary, `--json` and the exit code."""

    run_id: str
    outcome: str  # succeeded, failed, partial, interrupted
    counts: RunCounts
    seconds: float
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        c = self.counts
        return (
            f"sync {self.outcome}: {c.flows} flows, {c.partitions} partitions; "
            f"{c.jobs_inserted:,} new, {c.jobs_updated:,} updated, {c.jobs_unchanged:,} "
            f"unchanged, {c.jobs_refreshed:,} refreshed, {c.rejects:,} rejected; "
            f"{c.requests:,} requests ({c.retries:,} retries, {c.throttled:,} throttled) "
            f"in {self.seconds:.1f} s"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "outcome": self.outcome,
            "seconds": round(self.seconds, 3),
            **asdict(self.counts),
            "errors": self.errors,
        }


@dataclass
class SyncProgress:
    """Live counters for a progress display."""

    partitions_total: int = 0
    partitions_done: int = 0
    pages: int = 0
    jobs: int = 0


class SyncRun:
    """Wires crawl -> records -> store for one run."""

    def __init__(
        self,
        client: Any,
        warehouse: Warehouse,
        options: SyncOptions,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.client = client
        self.warehouse = warehouse
        self.options = options
        self.clock = clock
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        self.counts = RunCounts()
        self.progress = SyncProgress()
        self.errors: list[str] = []
        self._refresh_targets: dict[str, set[str]] = {}
        self._writer = BatchWriter(
            warehouse, self.run_id, clock, options.queue_pages, options.commit_rows
        )
        self._crawler = Crawler(
            _PacedSource(client, self._writer), options.page_size, client.dialect
        )

    async def run(self) -> SyncSummary:
        started = time.monotonic()
        started_ms = self.clock()
        stale = self.warehouse.begin_run(self.run_id, started_ms)
        if stale:
            log.info("%d earlier run(s) had been interrupted; resuming their partitions", stale)
        outcome = "failed"
        try:
            partitions, refresh_ids = await self._plan()
            outcome = await self._crawl_and_write(partitions, refresh_ids)
        except asyncio.CancelledError:
            outcome = "interrupted"
            raise
        except Exception as exc:
            self.errors.append(str(exc) or type(exc).__name__)
            raise
        finally:
            self._count_requests()
            self._count_writes()
            error = "; ".join(self.errors[:5]) or None
            self.warehouse.finish_run(self.run_id, self.clock(), outcome, error, self.counts)
        return SyncSummary(
            self.run_id, outcome, self.counts, time.monotonic() - started, self.errors
        )

    async def _plan(self) -> tuple[list[Partition], list[str]]:
        listed = await self._listed_flows()
        # The API's clock, not ours, bounds the windows: a skewed local clock must not
        # move the next run's lower bound past jobs it has not read.
        until = self.client.server_now_ms() or self.clock()
        planned = self.warehouse.planned_through()
        # A flow deleted since the last run is no longer listed, but the API still lists its
        # jobs until they purge: keep reading flows planned within the retention.
        recent = until - self.options.retention_days * DAY_MS
        known = tuple(sorted(f for f, through in planned.items() if through >= recent))
        flows = self.options.flow_ids or tuple(sorted(set(listed) | set(known)))
        unknown = sorted(set(flows) - set(listed))
        if unknown and self.options.flow_ids:
            log.warning(
                "%d flow(s) not in the account's flow list (synced anyway): %s",
                len(unknown),
                ", ".join(unknown[:5]),
            )
        self.counts.flows = len(flows)
        selected = set(flows)
        pending = [p for p in self.warehouse.pending_partitions() if selected & set(p.flow_ids)]

        def line_length(batch: tuple[str, ...]) -> int:
            return self.client.request_line_length(widest_query(batch))

        joins_with_commas = not self.client.dialect.indexed_lists

        new = plan_partitions(
            self.run_id,
            flows,
            planned,
            until=until,
            since=self.options.since_ms,
            overlap_ms=self.options.overlap_ms,
            line_length=line_length,
            span_ms=self.options.window_ms,
            open_spans=self.options.retention_days + 1,
            joins_with_commas=joins_with_commas,
        )
        self.warehouse.save_plan(self.run_id, new, dict.fromkeys(flows, until))
        partitions = purge_first(
            pending + new,
            self.warehouse.flow_retention_ms(),
            self.options.retention_days * DAY_MS,
        )
        refresh = plan_refresh(
            self.warehouse.jobs_to_refresh(list(flows), until, self.options.retention_days),
            lambda flows: pack_flow_batches(
                flows, line_length, joins_with_commas=joins_with_commas
            ),
            self.warehouse.count_jobs,
            self.options.page_size,
            self.run_id,
        )
        self._refresh_targets = refresh.targets
        log.info(
            "%d flows: %d partitions (%d resumed), newest window ends %s; unfinished jobs: "
            "%d listings and %d to fetch one by one",
            len(flows),
            len(partitions),
            len(pending),
            format_iso_ms(until),
            len(refresh.listings),
            len(refresh.job_ids),
        )
        partitions += refresh.listings
        self.counts.partitions = len(partitions)
        self.progress.partitions_total = len(partitions)
        return partitions, refresh.job_ids

    async def _listed_flows(self) -> tuple[str, ...]:
        flows = await self.client.list_flows()
        self._crawler.learn_flows(flows)  # their steps: children can be listed by step
        ids = {f.get("_id") for f in flows if isinstance(f, dict)}
        return tuple(sorted(i for i in ids if isinstance(i, str) and i))

    async def _crawl_and_write(self, partitions: list[Partition], refresh_ids: list[str]) -> str:
        writer = asyncio.create_task(self._writer.run())
        producers = asyncio.create_task(self._produce(partitions, refresh_ids))
        outcome = "succeeded"
        try:
            done, _ = await asyncio.wait({writer, producers}, return_when=asyncio.FIRST_COMPLETED)
            if writer in done:  # the writer failed: nothing more can be stored
                writer.result()
            try:
                producers.result()
            except TimeoutError:
                outcome = "partial"
        finally:
            # Whatever ended the crawl (the end, --max-duration, a bad token, Ctrl-C), what
            # was fetched is committed before the run ends.
            if not producers.done():
                producers.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await producers
            await self._writer.finish(writer)
        if self.errors:  # a part failed for good: that outweighs a stop by --max-duration
            outcome = "failed"
        return outcome

    async def _produce(self, partitions: list[Partition], refresh_ids: list[str]) -> None:
        work: deque[Partition | str] = deque([*partitions, *refresh_ids])
        # enough workers for the client's widest in-flight window; each takes work only when
        # the window has room (see _worker)
        workers = max(1, min(self.client.in_flight.ceiling, len(work)))
        try:
            async with asyncio.timeout(self.options.max_duration_s), asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(self._worker(work))
        except BaseExceptionGroup as group:  # a worker raised what ends the run (a bad token)
            raise group.exceptions[0] from None

    async def _worker(self, work: deque[Partition | str]) -> None:
        while work:
            # Only when a request would go out at once: work starts oldest first and no more
            # is open than the API serves and the writer has room for.
            await self._writer.wait_for_room(self.client.in_flight.limit)
            await self.client.in_flight.wait_for_room()
            if not work:
                return
            item = work.popleft()
            try:
                if isinstance(item, Partition):
                    await self._crawler.crawl_partition(item, self._emit)
                    self.progress.partitions_done += 1
                elif await self._crawler.refresh(item, self._emit):
                    self.counts.jobs_refreshed += 1
            except (Unauthorized, Untrusted):  # every request would fail alike: the run ends
                raise
            except (ApiError, CrawlError, CursorStuck) as exc:
                self.errors.append(_describe(item, exc))
                log.error("%s", self.errors[-1])

    async def _emit(self, page: CrawlPage) -> None:
        to_store = self._normalise(page)
        # The crawler hands the records over: once normalised they go, and only their compact
        # rows wait for room in the queue (a third of the memory; see _PacedSource).
        del page
        await self._writer.put(to_store)
        totals = self._writer.totals
        self.progress.pages, self.progress.jobs = totals.pages, totals.jobs

    def _normalise(self, page: CrawlPage) -> PageToStore:
        """The page as compact Arrow rows, made on the loop while the writer's thread is
        inside DuckDB; counts the unfinished jobs it brings back."""
        normalised = normalise_page(page.records)
        targets = self._refresh_targets.get(page.partition_key or "")
        if targets:
            found = targets.intersection(normalised.ids)
            targets -= found
            self.counts.jobs_refreshed += len(found)
        return PageToStore(normalised, page.partition_key, page.cursor, page.finished)

    def _count_writes(self) -> None:
        totals = self._writer.totals
        self.counts.jobs_inserted = totals.counts.inserted
        self.counts.jobs_updated = totals.counts.updated
        self.counts.jobs_unchanged = totals.counts.unchanged
        self.counts.rejects = totals.counts.rejects
        self.counts.pages = totals.pages
        self.progress.pages, self.progress.jobs = totals.pages, totals.jobs

    def _count_requests(self) -> None:
        stats = self.client.stats
        self.counts.requests = stats.requests
        self.counts.retries = stats.retries
        self.counts.throttled = stats.throttled


class _PacedSource:
    """The client, whose requests start only while the writer has room for their pages (see
    BatchWriter.fetching). Before, workers went on fetching through a checkpoint's second or
    two and waited for the queue with their pages in hand: 28 of them at once at 3x the
    bench's account, which took its anonymous memory from about 150 to 240 MB."""

    def __init__(self, client: Any, writer: BatchWriter) -> None:
        self.client = client
        self.dialect = client.dialect
        self._writer = writer

    async def list_jobs(self, query: JobQuery) -> list[Any]:
        async with self._writer.fetching(self.client.in_flight.limit):
            return await self.client.list_jobs(query)

    async def get_job(self, job_id: str) -> dict[str, Any]:
        async with self._writer.fetching(self.client.in_flight.limit):
            return await self.client.get_job(job_id)


def _describe(item: Partition | str, exc: BaseException) -> str:
    if isinstance(item, str):
        return f"refresh of job {item} failed: {exc}"
    window = (
        f"{format_iso_ms(item.window_gte) if item.window_gte is not None else 'the beginning'}"
        f" .. {format_iso_ms(item.window_lte)}"
    )
    return f"partition of {len(item.flow_ids)} flow(s), {window}, failed: {exc}"


async def run_sync(
    client: Any,
    warehouse: Warehouse,
    options: SyncOptions,
    on_start: Callable[[SyncRun], None] | None = None,
) -> SyncSummary:
    """Run one sync with an open client and warehouse; SIGTERM stops it like Ctrl-C
    (what is fetched is committed, the run is logged as interrupted)."""
    give_back_freed_memory()
    run = SyncRun(client, warehouse, options)
    if on_start is not None:
        on_start(run)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await run.run()
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGTERM)
