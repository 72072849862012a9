"""The client-side rate limit: paces requests, backs off when the API throttles, and climbs
back so that a throttled API is kept busy rather than left idle.

The rate moves like TCP's congestion window. A 429 multiplies it down (once per
`decrease_interval`, so a volley of 429s from requests already in flight counts once) and
blocks everyone until the Retry-After moment. Each success adds `gain * max(peak, rate) / rate`
requests/s, where `peak` is the rate at the last throttle: since successes arrive `rate`
times a second, the rate regains `gain * peak` per second below the old peak (linear
recovery, about 0.3 / gain seconds back from a 30 % cut) and grows by `gain` per second
(exponential probing) above it. Until the first 429 it probes faster (`start_gain`, like
TCP's slow start), so a run reaches the API's limit within seconds of starting. Pacing is a
token bucket in its virtual-scheduling form (GCRA): each request is given the next free send
time, with `burst` requests of slack.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

Clock = Callable[[], float]
_EPSILON = 1e-6  # waits shorter than this are float noise, below any event loop's resolution
Sleep = Callable[[float], Awaitable[None]]


class AdaptiveRateLimiter:
    """Shared by every request of one client; `rate` is the current requests/s."""

    def __init__(
        self,
        rate: float,
        max_rate: float,
        min_rate: float = 0.5,
        *,
        burst: float = 4.0,
        decrease: float = 0.7,
        gain: float = 0.02,
        start_gain: float = 0.1,
        decrease_interval: float = 1.0,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not 0 < min_rate <= max_rate:
            raise ValueError(f"need 0 < min_rate <= max_rate, got {min_rate} and {max_rate}")
        self.min_rate = min_rate
        self.max_rate = max_rate
        self.burst = max(1.0, burst)
        self.decrease = decrease
        self.gain = gain
        self.start_gain = start_gain
        self.decrease_interval = decrease_interval
        self._clock = clock
        self._sleep = sleep
        self._rate = self._clamp(rate)
        self._peak = self._rate
        self._tat = clock()  # theoretical arrival time of the next request (GCRA)
        self._blocked_until = float("-inf")
        self._last_decrease = float("-inf")
        self._throttled = False

    @property
    def rate(self) -> float:
        """The current pace in requests per second."""
        return self._rate

    @property
    def blocked_until(self) -> float:
        """Clock time before which no request goes out (the last Retry-After moment)."""
        return self._blocked_until

    async def acquire(self) -> None:
        """Wait for this request's turn."""
        while True:
            wait = self.reserve()
            if wait <= _EPSILON:
                return
            await self._sleep(wait)
            # A 429 that arrived while we slept may have moved the block past our slot.
            if self._clock() >= self._blocked_until - _EPSILON:
                return

    def reserve(self) -> float:
        """Take the next send slot; the seconds from now until it (0: send at once)."""
        now = self._clock()
        interval = 1.0 / self._rate
        tolerance = (self.burst - 1.0) * interval
        send_at = max(now, self._tat - tolerance, self._blocked_until)
        self._tat = max(self._tat, send_at) + interval
        return send_at - now

    def on_throttled(self, retry_after: float | None) -> None:
        """The API said 429: slow down, and hold every request until `retry_after` passes."""
        now = self._clock()
        self._throttled = True
        if now - self._last_decrease >= self.decrease_interval:
            self._peak = self._rate
            self._rate = self._clamp(self._rate * self.decrease)
            self._last_decrease = now
        if retry_after is not None and now + retry_after > self._blocked_until:
            self._blocked_until = now + retry_after
            # Resume at the new pace after the block, not with a burst.
            tolerance = (self.burst - 1.0) / self._rate
            self._tat = max(self._tat, self._blocked_until + tolerance)

    def on_success(self) -> None:
        """A request went through unthrottled: probe a little faster."""
        gain = self.gain if self._throttled else self.start_gain
        step = gain * max(self._peak, self._rate) / self._rate
        self._rate = self._clamp(self._rate + step)

    def _clamp(self, rate: float) -> float:
        return min(self.max_rate, max(self.min_rate, rate))
