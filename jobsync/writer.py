"""The single writer: drains normalised pages from a bounded queue and commits them in
batches of whole row groups, one transaction each, on a worker thread.

Pages arrive already normalised (compact Arrow rows, not dicts), so the queue holds little
memory, and the thread spends its time in DuckDB, which releases the GIL: the event loop
goes on fetching, decoding and normalising while a batch commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from jobsync.held_pages import Batch, HeldPages, PageToStore
from jobsync.store import ROW_GROUP_ROWS, UpsertCounts, Warehouse

log = logging.getLogger("jobsync.writer")

_STOP = object()

# A commit takes whole row groups of the warehouse (ROW_GROUP_ROWS rows each): DuckDB then
# writes them compressed into the file during the commit, instead of into its log and, under
# the sync's memory cap, out to a temporary file and back for the checkpoint that compresses
# them (300k jobs: 1.0 s of the writer's time against 2.05 s; ingests, alternated: 107k to
# 161k jobs/s against 81k to 110k). The rows past the last whole row group wait for more,
# and are committed as they are once they have waited HOLD_S, or at the stop. At the bench's
# 25 pages a second a row group fills in 0.65 s, so a backfill commits whole row groups too:
# 4.8 s of CPU for 303k jobs against 7.5 s before, and a 920k-job backfill made 57 commits,
# none with a checkpoint (peak RSS 209-212 MB). Committing the rest whenever no page came
# for 40 ms (9975fb9) made 105-112 commits, half the rows went through the log, two
# checkpoints held the writer up for a second each while pages piled up, and the peak was
# 215-230 MB. A kill loses what was held: at most HOLD_S of pages.
HOLD_S = 1.0

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
        queue_pages: int,
        commit_rows: int = ROW_GROUP_ROWS,
        hold_s: float = HOLD_S,
    ) -> None:
        self.warehouse = warehouse
        self.run_id = run_id
        self.clock = clock
        self.commit_rows = commit_rows
        self.hold_s = hold_s
        self.totals = WriterTotals(UpsertCounts())
        if queue_pages < 1:
            raise ValueError(f"queue_pages must be at least 1, got {queue_pages}")
        if commit_rows < 1:
            raise ValueError(f"commit_rows must be at least 1, got {commit_rows}")
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
        """Wake the requests waiting in `fetching()` and the workers in `wait_for_room()`, to
        look again."""
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
        """Store what the queue brings until stopped: whole multiples of `commit_rows` rows,
        and the rest once it has waited `hold_s`, or at the stop (see HOLD_S)."""
        with _quick_gil_handover():
            await self._drain()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        held = HeldPages()
        since = 0.0  # when the rows held began to wait
        stop = False
        while not stop:
            item = await self._next(since + self.hold_s if held.pages else None)
            if not held.pages:
                since = loop.time()
            while item is not None:
                if item is _STOP:
                    stop = True
                    break
                assert isinstance(item, PageToStore)
                held.add(item)
                item = None if self._queue.empty() else self._queue.get_nowait()
            self._notify()
            due = stop or loop.time() >= since + self.hold_s
            count = held.rows if due else held.rows - held.rows % self.commit_rows
            if count or (due and held.pages):
                await asyncio.to_thread(self._commit, held.take(count))
                since = loop.time()

    async def _next(self, deadline: float | None) -> object | None:
        """The next item of the queue, or None once the loop's clock passes `deadline`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                return await self._queue.get()
        return None

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

    def _commit(self, batch: Batch) -> None:
        counts = self.warehouse.commit_batch(
            batch.rows, batch.rejects, batch.cursors, self.run_id, self.clock()
        )
        totals = self.totals
        totals.counts.inserted += counts.inserted
        totals.counts.updated += counts.updated
        totals.counts.unchanged += counts.unchanged
        totals.counts.rejects += counts.rejects
        totals.pages += batch.pages
        totals.jobs += batch.rows.num_rows + counts.rejects
        log.debug(
            "stored %d jobs and %d rejects, %d partition cursor(s) moved",
            batch.rows.num_rows,
            counts.rejects,
            len(batch.cursors),
        )
