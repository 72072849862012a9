"""The batch writer against a real warehouse file: what it commits, when it lets a request
start, and the interpreter's switch interval it shortens while it runs (see jobsync.writer)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from jobsync.cursor import CursorState
from jobsync.held_pages import PageToStore
from jobsync.records import normalise_page
from jobsync.store import Warehouse
from jobsync.timestamps import format_iso_ms
from jobsync.writer import WRITER_SWITCH_INTERVAL_S, BatchWriter

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def page(first: int, count: int) -> PageToStore:
    records = [
        {"_id": f"job{n:04d}", "type": "flow", "createdAt": format_iso_ms(T0 + n)}
        for n in range(first, first + count)
    ]
    return PageToStore(normalise_page(records))


@pytest.fixture
def default_interval() -> Iterator[float]:
    """The interpreter's interval for the test, set back afterwards whatever happens."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield 0.005
    sys.setswitchinterval(before)


def stored_ids(db: Path) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return [row[0] for row in con.execute("SELECT id FROM jobs ORDER BY id").fetchall()]


def test_a_writer_commits_every_page_and_counts_it(tmp_path: Path) -> None:
    db = tmp_path / "jobs.duckdb"

    async def run(warehouse: Warehouse) -> BatchWriter:
        writer = BatchWriter(warehouse, "run", lambda: T0, queue_pages=2, commit_rows=25)
        task = asyncio.create_task(writer.run())
        for first in range(0, 100, 10):
            await writer.put(page(first, 10))
        await writer.finish(task)
        return writer

    with Warehouse.open(db) as warehouse:
        writer = asyncio.run(run(warehouse))
    assert writer.totals.jobs == writer.totals.counts.inserted == 100
    assert writer.totals.pages == 10
    assert stored_ids(db) == [f"job{n:04d}" for n in range(100)]


def test_a_request_is_admitted_only_while_requests_and_pages_fit_the_queue_plus_the_window(
    tmp_path: Path,
) -> None:
    admitted: list[int] = []

    async def fetch(writer: BatchWriter, first: int, answered: asyncio.Event) -> None:
        async with writer.fetching(in_flight=1):
            admitted.append(first)
            await answered.wait()
        await writer.put(page(first, 5))  # at once, as the sync does with a page it fetched

    async def run(warehouse: Warehouse) -> list[list[int]]:
        writer = BatchWriter(warehouse, "run", lambda: T0, queue_pages=1, commit_rows=100)
        answers = [asyncio.Event() for _ in range(3)]
        fetches = [asyncio.create_task(fetch(writer, n * 5, answers[n])) for n in range(3)]
        seen: list[list[int]] = []
        # for new work: the third waits
        room = asyncio.create_task(writer.wait_for_room(in_flight=1))
        await asyncio.sleep(0.01)
        seen.append(list(admitted))  # two in flight: the queue of one and the window of one
        answers[0].set()
        await fetches[0]
        await asyncio.sleep(0.01)
        seen.append(list(admitted))  # one in flight and one page queued
        assert not room.done()
        task = asyncio.create_task(writer.run())  # takes the page: room for the third
        await asyncio.sleep(0.05)
        seen.append(list(admitted))
        assert not room.done()  # the third took the room
        answers[1].set()
        answers[2].set()
        await asyncio.gather(*fetches)
        await asyncio.wait_for(room, 1)
        await writer.finish(task)
        return seen

    with Warehouse.open(tmp_path / "jobs.duckdb") as warehouse:
        seen = asyncio.run(run(warehouse))
    assert seen == [[0, 5], [0, 5], [0, 5, 10]]
    assert stored_ids(tmp_path / "jobs.duckdb") == [f"job{n:04d}" for n in range(15)]


def test_the_switch_interval_is_short_while_any_writer_runs_and_restored_after(
    tmp_path: Path, default_interval: float
) -> None:
    seen: list[float] = []

    async def run(first: Warehouse, second: Warehouse) -> None:
        writers = [
            BatchWriter(warehouse, "run", lambda: T0, queue_pages=1, commit_rows=10)
            for warehouse in (first, second)
        ]
        tasks = [asyncio.create_task(writer.run()) for writer in writers]
        await writers[0].put(page(0, 5))
        await writers[1].put(page(5, 5))
        await asyncio.sleep(0.05)  # both running
        seen.append(sys.getswitchinterval())
        await writers[0].finish(tasks[0])
        seen.append(sys.getswitchinterval())  # the second still runs
        await writers[1].finish(tasks[1])
        seen.append(sys.getswitchinterval())

    with (
        Warehouse.open(tmp_path / "a.duckdb") as first,
        Warehouse.open(tmp_path / "b.duckdb") as second,
    ):
        asyncio.run(run(first, second))
    short = pytest.approx(WRITER_SWITCH_INTERVAL_S)  # the interpreter keeps microseconds
    assert seen == [short, short, default_interval]


def test_a_failing_writer_restores_the_switch_interval(
    tmp_path: Path, default_interval: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    intervals: list[float] = []

    def failing_commit(self: Warehouse, *args: Any) -> Any:
        intervals.append(sys.getswitchinterval())
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Warehouse, "commit_batch", failing_commit)

    async def run(warehouse: Warehouse) -> None:
        writer = BatchWriter(warehouse, "run", lambda: T0, queue_pages=1, commit_rows=10)
        task = asyncio.create_task(writer.run())
        await writer.put(page(0, 5))
        await writer.finish(task)

    with Warehouse.open(tmp_path / "jobs.duckdb") as warehouse, pytest.raises(OSError):
        asyncio.run(run(warehouse))
    assert intervals == [pytest.approx(WRITER_SWITCH_INTERVAL_S)]
    assert sys.getswitchinterval() == default_interval


def counted_commits(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> list[tuple[int, int, dict[str, Any]]]:
    """Each commit the warehouse makes, in order: its rows, its rejects and its cursor moves."""
    batches: list[tuple[int, int, dict[str, Any]]] = []
    commit_batch = warehouse.commit_batch

    def counting(rows: Any, rejects: Any, cursors: Any, *rest: Any) -> Any:
        batches.append((rows.num_rows, len(rejects), dict(cursors)))
        return commit_batch(rows, rejects, cursors, *rest)

    monkeypatch.setattr(warehouse, "commit_batch", counting)
    return batches


def partition_page(
    key: str, first: int, count: int, cursor: CursorState | None, bad: int = 0
) -> PageToStore:
    """A partition's page of `count` jobs and `bad` records without a createdAt."""
    records: list[Any] = [
        {"_id": f"job{n:04d}", "type": "flow", "createdAt": format_iso_ms(T0 + n)}
        for n in range(first, first + count)
    ]
    records += [{"_id": f"bad{first}-{n}", "type": "flow"} for n in range(bad)]
    return PageToStore(normalise_page(records), key, cursor, finished=cursor is None)


def test_commits_take_whole_row_groups_and_a_page_cut_stores_its_cursor_with_its_last_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = CursorState(T0 + 9), CursorState(T0 + 29)
    pages = [
        partition_page("a", 0, 10, one),
        partition_page("b", 10, 10, one),
        partition_page("a", 20, 10, two, bad=1),  # cut by the first commit
        partition_page("b", 30, 10, two),
        partition_page("a", 40, 10, None),  # a finished
        partition_page("b", 50, 0, None),  # b finished, on a page without jobs
    ]

    async def run(warehouse: Warehouse) -> BatchWriter:
        writer = BatchWriter(warehouse, "run", lambda: T0, 8, commit_rows=25, hold_s=5.0)
        task = asyncio.create_task(writer.run())
        for item in pages:
            await writer.put(item)
            await asyncio.sleep(0.05)
        await writer.finish(task)
        return writer

    with Warehouse.open(tmp_path / "jobs.duckdb") as warehouse:
        batches = counted_commits(warehouse, monkeypatch)
        writer = asyncio.run(asyncio.wait_for(run(warehouse), 4))
    assert batches == [
        (25, 0, {"a": one, "b": one}),
        (25, 1, {"a": None, "b": two}),
        (0, 0, {"b": None}),  # at the stop
    ]
    assert writer.totals.jobs == 51 and writer.totals.pages == 5
    assert stored_ids(tmp_path / "jobs.duckdb") == [f"job{n:04d}" for n in range(50)]


def test_rows_held_without_filling_a_row_group_are_committed_once_the_hold_is_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[tuple[int, int, dict[str, Any]]]] = []

    async def run(warehouse: Warehouse, batches: list[Any]) -> None:
        writer = BatchWriter(warehouse, "run", lambda: T0, 8, commit_rows=100, hold_s=0.5)
        task = asyncio.create_task(writer.run())
        await writer.put(page(0, 10))
        await asyncio.sleep(0.2)
        await writer.put(page(10, 10))
        await asyncio.sleep(0.1)
        seen.append(list(batches))  # waiting for a row group to fill
        await asyncio.sleep(1.0)
        seen.append(list(batches))
        await writer.finish(task)

    with Warehouse.open(tmp_path / "jobs.duckdb") as warehouse:
        batches = counted_commits(warehouse, monkeypatch)
        asyncio.run(run(warehouse, batches))
    assert seen == [[], [(20, 0, {})]]
    assert stored_ids(tmp_path / "jobs.duckdb") == [f"job{n:04d}" for n in range(20)]
