"""The single writer: drains normalised pages from a bounded queue and commits them in
batches, one transaction each, on a worker thread.

Pages arrive already normalised (compact Arrow rows, not dicts), so the queue holds little
memory, and the thread spends its time in DuckDB, which releases the GIL: the event loop
goes on fetching, decoding and normalising while a batch commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import pyarrow as pa

from jobsync.cursor import CursorState
from jobsync.records import JOB_ARROW_SCHEMA, NormalisedPage, Reject
from jobsync.store import UpsertCounts, Warehouse

_STOP = object()

# A commit costs some 15 ms whatever it holds (its statements' set-up, COMMIT), so a page
# found alone in the queue waits up to LINGER_S for another to commit with. At the bench's
# 25 requests/s a page comes every 40 ms: a backfill makes half as many commits, the sync
# spends a tenth less CPU, and its writer, less busy, falls behind less often (peak RSS of a
# 920k-job backfill 218-219 -> 205-212 MB, scripts/bench.py's accounts). Where pages come
# faster than commits, the queue is seldom found with one page and little waits.
LINGER_S = 0.04

# DuckDB's Python API lets go of the GIL and takes it back several times per call. While the
# event loop decodes pages it holds the GIL, and each take-back waits out the interpreter's
# switch interval (5 ms by default): beside a thread that kept the GIL busy, 300k jobs' 37
# batches took 9.2 s to commit instead of 1.8 s alone, and 2.5 s with the interval at 0.2 ms
# (the bench's ingest: 88k -> 106k jobs/s). At 0.02 ms a `SELECT 1` beside a busy thread
# takes 0.65 ms (1.5 at 0.2 ms, 23 at 5), and the ingest under the sync's memory cap gains a
# tenth (alternated in one process, medians of 8: 88k jobs/s against 80k at 0.2 ms; 86k at
# 0.05, 84k at 0.005). So while a writer runs, the interval is short.
WRITER_SWITCH_INTERVAL_S = 0.00002
_running_writers = 0
_switch_interval_before = 0.0


@contextmanager
def _quick_gil_handover() -> Iterator[None]:
    """The short switch interval while any writer runs; the one before once none does."""
    global _running_writers, _switch_interval_before
    if _running_writers == 0:
        _switch_interval_before = sys.getswitchinterval()
        sys.setswitchinterval(min(_switch_interval_before, WRITER_SWITCH_INTERVAL_S))
    _running_writers += 1
    try:
        yield
    finally:
        _running_writers -= 1
        if _running_writers == 0:
            sys.setswitchinterval(_switch_interval_before)


@dataclass(frozen=True, slots=True)
class PageToStore:
    """A normalised page and, for a partition's page, the cursor that holds once it is stored
    (None: unchanged) or `finished` when the partition is complete."""

    page: NormalisedPage
    partition_key: str | None = None
    cursor: CursorState | None = None
    finished: bool = False


@dataclass
class WriterTotals:
    """What the writer has committed so far."""

    counts: UpsertCounts
    pages: int = 0
    jobs: int = 0


class BatchWriter:
    """`run()` is the writer task; `put()` queues a page (waiting while the queue is full);
    `finish(task)` stores what is queued and stops the task."""

    def __init__(
        self,
        warehouse: Warehouse,
        run_id: str,
        clock: Callable[[], int],
        batch_jobs: int,
        queue_pages: int,
        linger_s: float = LINGER_S,
    ) -> None:
        self.warehouse = warehouse
        self.run_id = run_id
        self.clock = clock
        self.batch_jobs = batch_jobs
        self.linger_s = linger_s
        self.totals = WriterTotals(UpsertCounts())
        if queue_pages < 1:
            raise ValueError(f"queue_pages must be at least 1, got {queue_pages}")
        self._queue: asyncio.Queue[PageToStore | object] = asyncio.Queue(maxsize=queue_pages)
        self._fetching = 0  # requests in flight (see fetching)
        self._waiting = 0  # requests waiting to start
        self._putting = 0  # pages waiting for room in the queue
        self._changed = asyncio.Event()

    @asynccontextmanager
    async def fetching(self, in_flight: int = 0) -> AsyncIterator[None]:
        """Around each request of the crawl: it starts only while the requests in flight plus
        the pages queued or waiting for the queue fit in the queue and `in_flight` more (the
        client's window). While the writer keeps up, as many requests are in flight as the
        window allows; while a commit (or one of DuckDB's checkpoints) holds it up, the crawl
        stops fetching once the queue is full, with at most a window's worth of pages in
        hand however long the writer lags (before, every worker went on until it held one)."""
        self._waiting += 1
        try:
            while self._full(in_flight):
                await self._changed.wait()
        finally:
            self._waiting -= 1
        self._fetching += 1
        try:
            yield
        finally:
            self._fetching -= 1
            self._notify()

    async def wait_for_room(self, in_flight: int = 0) -> None:
        """Until a request would start at once (see `fetching`): the crawl takes new work only
        then, so that work starts in order rather than many partitions each waiting."""
        while self._waiting or self._full(in_flight):
            await self._changed.wait()

    def _full(self, in_flight: int) -> bool:
        held = self._fetching + self._putting + self._queue.qsize()
        return held >= self._queue.maxsize + in_flight

    def _notify(self) -> None:
        """Wake the requests waiting in `fetching()`, the workers in `wait_for_room()` and a
        lingering writer, to look again."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def put(self, item: PageToStore) -> None:
        self._putting += 1
        try:
            await self._queue.put(item)
        finally:
            self._putting -= 1
        self._notify()

    async def run(self) -> None:
        """Drain the queue in batches of about `batch_jobs` records until stopped."""
        with _quick_gil_handover():
            await self._drain()

    async def _drain(self) -> None:
        stop = False
        while not stop:
            batch: list[PageToStore] = []
            jobs = 0
            item = await self._queue.get()
            if isinstance(item, PageToStore) and item.page.count < self.batch_jobs:
                await self._linger()
            while True:
                if item is _STOP:
                    stop = True
                    break
                assert isinstance(item, PageToStore)
                batch.append(item)
                jobs += item.page.count
                if jobs >= self.batch_jobs or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            self._notify()
            if batch:
                await asyncio.to_thread(self._commit, batch)

    async def _linger(self) -> None:
        """Until the queue holds another page (or the stop), for up to `linger_s` (see
        LINGER_S)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.linger_s):
                while self._queue.empty():
                    await self._changed.wait()

    async def finish(self, task: asyncio.Task[None]) -> None:
        """Let the writer store what is queued, then stop it. Waits for the writer even when
        cancelled meanwhile: its thread must be out of the connection before the caller
        logs the run and closes the warehouse. Raises what the writer raised."""
        stop = asyncio.ensure_future(self._put_stop())
        cancelled = False
        while not task.done():
            try:
                await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
                if stop.done():
                    await asyncio.wait({task})
            except asyncio.CancelledError:
                cancelled = True
        stop.cancel()
        if cancelled:
            raise asyncio.CancelledError
        task.result()

    async def _put_stop(self) -> None:
        await self._queue.put(_STOP)
        self._notify()

    def _commit(self, batch: list[PageToStore]) -> None:
        tables: list[pa.Table] = []
        rejects: list[Reject] = []
        cursors: dict[str, CursorState | None] = {}
        for item in batch:
            tables.append(item.page.rows)
            rejects.extend(item.page.rejects)
            if item.partition_key is not None and (item.finished or item.cursor is not None):
                cursors[item.partition_key] = None if item.finished else item.cursor
        rows = pa.concat_tables(tables) if tables else JOB_ARROW_SCHEMA.empty_table()
        counts = self.warehouse.commit_batch(rows, rejects, cursors, self.run_id, self.clock())
        totals = self.totals
        totals.counts.inserted += counts.inserted
        totals.counts.updated += counts.updated
        totals.counts.unchanged += counts.unchanged
        totals.counts.rejects += counts.rejects
        totals.pages += sum(1 for item in batch if item.page.count)
        totals.jobs += rows.num_rows + counts.rejects
