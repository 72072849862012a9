"""The adaptive rate limiter on a fake clock: pacing, throttling, blocking, recovery."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from conftest import FakeClock

from jobsync.ratelimit import AdaptiveRateLimiter


def limiter(clock: FakeClock, rate: float = 10.0, **kwargs: float) -> AdaptiveRateLimiter:
    return AdaptiveRateLimiter(
        rate, kwargs.pop("max_rate", 1000.0), clock=clock, sleep=clock.sleep, **kwargs
    )


def send_times(lim: AdaptiveRateLimiter, clock: FakeClock, count: int) -> list[float]:
    """Clock times at which `count` sequential acquirers get through."""

    async def run() -> list[float]:
        times = []
        for _ in range(count):
            await lim.acquire()
            times.append(clock.now)
        return times

    return asyncio.run(run())


def test_paces_to_the_rate_after_a_small_burst() -> None:
    clock = FakeClock()
    lim = limiter(clock, rate=10.0, burst=4.0)
    times = send_times(lim, clock, 24)
    start = times[0]
    assert times[:4] == pytest.approx([start] * 4)  # the burst
    gaps = [b - a for a, b in itertools.pairwise(times[3:])]
    assert all(gap == pytest.approx(0.1) for gap in gaps)
    assert times[-1] - start == pytest.approx(2.0)  # 20 paced requests at 10/s


def test_idle_time_does_not_bank_more_than_the_burst() -> None:
    clock = FakeClock()
    lim = limiter(clock, rate=10.0, burst=4.0)
    send_times(lim, clock, 5)
    clock.now += 3600
    times = send_times(lim, clock, 6)
    assert times[:4] == pytest.approx([times[0]] * 4)
    assert times[4] - times[0] == pytest.approx(0.1)


def test_throttle_cuts_the_rate_once_per_volley() -> None:
    clock = FakeClock()
    lim = limiter(clock, rate=20.0, decrease=0.7, decrease_interval=1.0)
    for _ in range(8):  # eight requests in flight all come back 429
        lim.on_throttled(None)
    assert lim.rate == pytest.approx(14.0)
    clock.now += 1.0
    lim.on_throttled(None)
    assert lim.rate == pytest.approx(9.8)


def test_rate_stays_within_bounds() -> None:
    clock = FakeClock()
    lim = limiter(clock, rate=1.0, min_rate=0.5, max_rate=5.0)
    for _ in range(10):
        lim.on_throttled(None)
        clock.now += 2
    assert lim.rate == 0.5
    for _ in range(100_000):
        lim.on_success()
    assert lim.rate == 5.0
    assert limiter(clock, rate=50.0, max_rate=5.0).rate == 5.0


def test_retry_after_blocks_every_acquirer_then_resumes_paced() -> None:
    clock = FakeClock()
    lim = limiter(clock, rate=10.0, burst=4.0)
    send_times(lim, clock, 4)
    throttled_at = clock.now
    lim.on_throttled(5.0)
    assert lim.blocked_until == throttled_at + 5.0
    times = send_times(lim, clock, 3)
    assert times[0] == pytest.approx(throttled_at + 5.0)
    # No burst right after the block: the reduced pace (7/s) holds from the first request.
    assert times[1] - times[0] == pytest.approx(1 / 7)
    assert times[2] - times[1] == pytest.approx(1 / 7)


def test_a_throttle_during_a_wait_holds_the_waiter_too() -> None:
    clock = FakeClock()
    lim = limiter(clock, rate=1.0, burst=1.0)

    async def run() -> float:
        await lim.acquire()  # takes the free slot; the next one is a second away
        real_sleep = clock.sleep

        async def sleep_then_throttle(seconds: float) -> None:
            await real_sleep(seconds)
            if len(clock.sleeps) == 1:  # while we slept, another request got 429
                lim.on_throttled(30.0)

        lim._sleep = sleep_then_throttle
        await lim.acquire()
        return clock.now

    sent = asyncio.run(run())
    assert sent >= lim.blocked_until
    assert sent == pytest.approx(1000.0 + 1.0 + 30.0)


def test_a_shorter_retry_after_does_not_shorten_a_block() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    lim.on_throttled(10.0)
    lim.on_throttled(2.0)
    assert lim.blocked_until == clock.now + 10.0


def simulate(lim: AdaptiveRateLimiter, clock: FakeClock, seconds: float) -> None:
    """Saturating demand: acquire and succeed as fast as the limiter allows."""

    async def run() -> None:
        end = clock.now + seconds
        while clock.now < end:
            await lim.acquire()
            lim.on_success()

    asyncio.run(run())


def test_recovers_to_the_old_rate_within_a_minute() -> None:
    clock = FakeClock()
    lim = limiter(clock, rate=50.0, gain=0.02)
    lim.on_throttled(1.0)
    assert lim.rate == pytest.approx(35.0)
    simulate(lim, clock, 10.0)
    assert 35.0 < lim.rate < 50.0  # linear recovery, not a jump
    simulate(lim, clock, 10.0)
    assert lim.rate >= 50.0


def test_recovery_takes_about_as_long_at_any_scale() -> None:
    for peak in (2.0, 50.0, 800.0):
        clock = FakeClock()
        lim = limiter(clock, rate=peak, gain=0.02)
        lim.on_throttled(None)
        simulate(lim, clock, 10.0)
        assert lim.rate < peak
        simulate(lim, clock, 10.0)
        assert lim.rate >= peak


def test_probes_upward_without_throttling() -> None:
    clock = FakeClock()
    lim = limiter(clock, rate=20.0, gain=0.02)
    simulate(lim, clock, 60.0)
    assert lim.rate > 20.0 * 2.5  # grows by about 2 % a second (e^1.2 ≈ 3.3)


def test_rejects_impossible_bounds() -> None:
    with pytest.raises(ValueError):
        AdaptiveRateLimiter(10.0, max_rate=1.0, min_rate=2.0)


def test_it_probes_fast_until_the_first_throttle_then_gently() -> None:
    clock = FakeClock()
    fresh = limiter(clock, rate=20.0)
    for _ in range(60):  # under three seconds of successes at 20-26 requests/s
        fresh.on_success()
    assert fresh.rate == pytest.approx(26.0), "slow start: +0.1 a success"
    fresh.on_throttled(1.0)
    after_throttle = fresh.rate
    for _ in range(60):
        fresh.on_success()
    assert 0 < fresh.rate - after_throttle < 60 * 0.02 * 26.0 / after_throttle + 1e-9
