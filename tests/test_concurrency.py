"""The adaptive in-flight window: alone (slots, growth, cuts, cancellation), then in whole syncs
against the simulator, where it must widen under latency and narrow under throttling."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock, listed_jobs
from test_sync import stored

from jobsync.api import ClientSettings, JobsClient
from jobsync.concurrency import AdaptiveConcurrency
from jobsync.secret import ApiToken
from jobsync.simulator import SimulatorServer
from jobsync.store import Warehouse
from jobsync.sync import SyncOptions, SyncSummary, run_sync

Make = Callable[..., SimulatorServer]


async def settle() -> None:
    """Let every ready task run until it waits again."""
    for _ in range(5):
        await asyncio.sleep(0)


async def holders(gate: AdaptiveConcurrency, count: int) -> list[asyncio.Task[None]]:
    """`count` tasks that each take a slot and keep it until cancelled."""

    async def hold() -> None:
        await gate.acquire()
        try:
            await asyncio.Event().wait()
        finally:
            gate.release()

    tasks = [asyncio.create_task(hold()) for _ in range(count)]
    await settle()
    return tasks


def test_slots_are_limited_and_handed_out_in_order() -> None:
    async def run() -> list[int]:
        gate = AdaptiveConcurrency(2, 8)
        order: list[int] = []

        async def take(i: int) -> None:
            await gate.acquire()
            order.append(i)

        tasks = [asyncio.create_task(take(i)) for i in range(5)]
        await settle()
        assert order == [0, 1] and gate.in_flight == 2
        for _ in range(3):
            gate.release()
            await settle()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(run()) == [0, 1, 2, 3, 4]


def test_slow_start_adds_a_slot_per_success_while_requests_wait() -> None:
    async def run() -> None:
        gate = AdaptiveConcurrency(2, 6)
        tasks = await holders(gate, 10)
        for expected in (3, 4, 5, 6, 6):
            gate.on_success()
            await settle()
            assert (gate.limit, gate.in_flight) == (expected, expected)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


def test_no_growth_without_requests_waiting() -> None:
    async def run() -> None:
        gate = AdaptiveConcurrency(4, 64)
        tasks = await holders(gate, 3)  # a slot to spare: the window is not what holds back
        for _ in range(20):
            gate.on_success()
        assert gate.limit == 4
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


def test_no_growth_while_the_rate_limiter_holds_the_window() -> None:
    async def run() -> None:
        gate = AdaptiveConcurrency(4, 64)
        pace = asyncio.Event()

        async def paced() -> None:
            await gate.acquire()
            try:
                with gate.pacing():
                    await pace.wait()
            finally:
                gate.release()

        tasks = [asyncio.create_task(paced()) for _ in range(10)]
        await settle()
        for _ in range(20):
            gate.on_success()
        assert gate.limit == 4, "the pace, not the window, holds the requests back"
        pace.set()
        await asyncio.gather(*tasks)
        assert gate.peak == 4

    asyncio.run(run())


def test_a_throttle_halves_the_window_once_per_volley_then_growth_is_gentle() -> None:
    async def run() -> None:
        clock = FakeClock()
        gate = AdaptiveConcurrency(16, 64, clock=clock)
        tasks = await holders(gate, 40)
        for _ in range(16):  # every request in flight comes back 429
            gate.on_throttled()
        assert (gate.limit, gate.decreases) == (8, 1)
        clock.now += 1.0
        gate.on_throttled()
        assert (gate.limit, gate.decreases) == (4, 2)
        for _ in range(5):  # about a round trip of successes: one slot more
            gate.on_success()
        assert gate.limit == 5
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


def test_the_window_stays_between_floor_and_ceiling() -> None:
    async def run() -> None:
        clock = FakeClock()
        gate = AdaptiveConcurrency(2, 3, clock=clock)
        for _ in range(5):
            clock.now += 1.0
            gate.on_throttled()
        assert gate.limit == 1
        tasks = await holders(gate, 10)
        for _ in range(50):
            gate.on_success()
        assert gate.limit == 3
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())
    assert AdaptiveConcurrency(20, 8).ceiling == 20, "the start raises a lower ceiling"
    with pytest.raises(ValueError):
        AdaptiveConcurrency(0, 8)


def test_a_cancelled_wait_gives_up_its_place_and_never_leaks_a_slot() -> None:
    async def run() -> None:
        gate = AdaptiveConcurrency(1, 1)
        await gate.acquire()
        waiting = asyncio.create_task(gate.acquire())
        handed = asyncio.create_task(gate.acquire())
        await settle()
        waiting.cancel()
        await settle()
        gate.release()  # to `handed`, not to the cancelled one
        await asyncio.wait_for(handed, 1)
        assert gate.in_flight == 1
        late = asyncio.create_task(gate.acquire())
        await settle()
        gate.release()  # handed to `late`, which is cancelled before it runs
        late.cancel()
        await settle()
        assert gate.in_flight == 0

    asyncio.run(run())


def test_room_opens_only_when_a_request_would_not_queue() -> None:
    async def run() -> None:
        gate = AdaptiveConcurrency(2, 8)
        tasks = await holders(gate, 3)  # two hold slots, one waits
        room = asyncio.create_task(gate.wait_for_room())
        tasks[0].cancel()  # its slot goes to the waiter: still no room
        await settle()
        assert not room.done()
        tasks[1].cancel()
        await settle()
        assert room.done()
        tasks[2].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())


# --- whole syncs --------------------------------------------------------------------------


def sync_watched(sim: SimulatorServer, db: Path, **client: Any) -> tuple[SyncSummary, JobsClient]:
    """One sync of `sim` into `db`, with the client kept to read its window afterwards."""
    settings = ClientSettings(
        base_url=sim.url,
        token=ApiToken(sim.options.token),
        dialect=sim.options.dialect,
        max_retry_time=60,
        **client,
    )

    async def go() -> tuple[SyncSummary, JobsClient]:
        async with JobsClient(settings) as client:
            with Warehouse.open(db) as warehouse:
                options = SyncOptions(page_size=sim.options.page_cap)
                return await run_sync(client, warehouse, options), client

    return asyncio.run(go())


def test_latency_widens_the_window_beyond_its_start(make_simulator: Make, tmp_path: Path) -> None:
    sim = make_simulator(days=10, latency_ms=50)
    fixed, fixed_client = sync_watched(
        sim, tmp_path / "fixed.duckdb", concurrency=2, max_concurrency=2, rate_limit=500
    )
    adaptive, client = sync_watched(
        sim, tmp_path / "adaptive.duckdb", concurrency=2, max_concurrency=32, rate_limit=500
    )
    assert fixed.outcome == adaptive.outcome == "succeeded"
    assert fixed_client.in_flight.peak == 2
    assert client.in_flight.peak > 4, "more requests in flight than at the start"
    assert client.in_flight.limit > 4
    assert adaptive.counts.throttled == 0 and client.in_flight.decreases == 0
    assert stored(tmp_path / "adaptive.duckdb") == listed_jobs(sim)


def test_throttling_narrows_the_window_and_the_sync_still_completes(
    make_simulator: Make, tmp_path: Path
) -> None:
    sim = make_simulator(flows=3, days=6, latency_ms=10, rate_limit=40, burst=10)
    summary, client = sync_watched(
        sim, tmp_path / "jobs.duckdb", concurrency=16, max_concurrency=32, rate_limit=500
    )
    assert summary.outcome == "succeeded", summary.errors
    assert sim.stats.rate_limited > 0 and summary.counts.throttled == sim.stats.rate_limited
    assert client.in_flight.decreases >= 1
    assert client.in_flight.limit < 16, "cut below its start"
    assert stored(tmp_path / "jobs.duckdb") == listed_jobs(sim)
