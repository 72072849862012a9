"""How many requests the client keeps in flight: a window that widens while the API keeps up
and narrows when it throttles, so that latency does not bound a crawl the rate limit allows.

At integrator.io's limit (300 requests/s) and 100 ms of latency a crawl needs some 30
requests in flight; a fixed handful leaves most of the limit unused. The window moves like
TCP's congestion window: it starts at `start`, grows by one per success (doubling per round
trip, "slow start") until the first 429, then by one per round trip, and halves on a 429
(once per `decrease_interval`, so a volley from requests already in flight counts once). It
grows only while it is what holds requests back: a request waits for a slot (or work waits
for room to start) and no more than half the window waits for the rate limiter's pace (when
the pace binds, a wider window would only queue more requests behind it).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Clock = Callable[[], float]


class AdaptiveConcurrency:
    """A semaphore whose size adapts; slots are handed out first come, first served."""

    def __init__(
        self,
        start: int,
        ceiling: int,
        *,
        floor: int = 1,
        decrease: float = 0.5,
        decrease_interval: float = 1.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if not 1 <= floor <= start:
            raise ValueError(f"need 1 <= floor <= start, got {floor} and {start}")
        self.floor = floor
        self.ceiling = max(start, ceiling)  # a start above the ceiling raises the ceiling
        self.decrease = decrease
        self.decrease_interval = decrease_interval
        self._clock = clock
        self._window = float(start)
        self._held = 0  # slots taken: a request waiting for its pace or on the wire
        self._pacing = 0  # of them, waiting for the rate limiter
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._room_waiters: list[asyncio.Future[None]] = []
        self._waiting_for_room = 0  # work waiting to start: demand the window does not serve
        self._throttled = False
        self._last_decrease = float("-inf")
        self.peak = 0  # most requests sent and not yet answered at once
        self.decreases = 0  # times a 429 narrowed the window

    @property
    def limit(self) -> int:
        """Slots now: requests that may be in flight at once."""
        return max(self.floor, min(self.ceiling, int(self._window)))

    @property
    def in_flight(self) -> int:
        """Slots taken now."""
        return self._held

    async def acquire(self) -> None:
        """Take a slot, waiting in line when all are taken."""
        if self._held < self.limit and not self._waiters:
            self._held += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as the wait was cancelled
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a slot back: to the next in line, or free."""
        self._held -= 1
        self._hand_over()

    @contextmanager
    def pacing(self) -> Iterator[None]:
        """Mark a slot's request as waiting for the rate limiter, not for the API."""
        self._pacing += 1
        try:
            yield
        finally:
            self._pacing -= 1
            self.peak = max(self.peak, self._held - self._pacing)

    async def wait_for_room(self) -> None:
        """Until a new request would get a slot without queueing: a crawl takes new work only
        then, so work starts in order and no more is open than the window serves."""
        self._waiting_for_room += 1
        try:
            while self._held + len(self._waiters) >= self.limit:
                waiter = asyncio.get_running_loop().create_future()
                self._room_waiters.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter in self._room_waiters:
                        self._room_waiters.remove(waiter)
        finally:
            self._waiting_for_room -= 1

    def on_success(self) -> None:
        """A request went through unthrottled: widen the window if it held requests back."""
        waiting = self._waiters or self._waiting_for_room
        if not waiting or self._pacing * 2 > self.limit:
            return
        step = 1.0 / self._window if self._throttled else 1.0
        self._window = min(float(self.ceiling), self._window + step)
        self._hand_over()

    def on_throttled(self) -> None:
        """The API said 429: halve the window (once per volley); requests in flight finish."""
        self._throttled = True
        now = self._clock()
        if now - self._last_decrease >= self.decrease_interval:
            self._window = max(float(self.floor), self._window * self.decrease)
            self._last_decrease = now
            self.decreases += 1

    def _hand_over(self) -> None:
        while self._waiters and self._held < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._held += 1
        if self._held + len(self._waiters) < self.limit:
            for waiter in self._room_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._room_waiters.clear()
