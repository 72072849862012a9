"""The single writer: drains normalised pages from a bounded queue and commits them in
batches, one transaction each, on a worker thread.

Pages arrive already normalised (compact Arrow rows, not dicts), so the queue holds little
memory, and the thread spends its time in DuckDB, which releases the GIL: the event loop
goes on fetching, decoding and normalising while a batch commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from jobsync.cursor import CursorState
from jobsync.records import JOB_ARROW_SCHEMA, NormalisedPage, Reject
from jobsync.store import UpsertCounts, Warehouse

_STOP = object()


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
    ) -> None:
        self.warehouse = warehouse
        self.run_id = run_id
        self.clock = clock
        self.batch_jobs = batch_jobs
        self.totals = WriterTotals(UpsertCounts())
        self._queue: asyncio.Queue[PageToStore | object] = asyncio.Queue(maxsize=queue_pages)

    async def put(self, item: PageToStore) -> None:
        await self._queue.put(item)

    async def run(self) -> None:
        """Drain the queue in batches of about `batch_jobs` records until stopped."""
        stop = False
        while not stop:
            batch: list[PageToStore] = []
            jobs = 0
            item = await self._queue.get()
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
            if batch:
                await asyncio.to_thread(self._commit, batch)

    async def finish(self, task: asyncio.Task[None]) -> None:
        """Let the writer store what is queued, then stop it. Waits for the writer even when
        cancelled meanwhile: its thread must be out of the connection before the caller
        logs the run and closes the warehouse. Raises what the writer raised."""
        stop = asyncio.ensure_future(self._queue.put(_STOP))
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
