"""The simulator's notion of "now": every job's state is a pure function of it, so tests
move a manual clock to watch jobs start, finish, appear and get purged."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Protocol


class Clock(Protocol):
    """Anything that tells the simulated account what time it is."""

    def now_ms(self) -> int: ...


class ManualClock:
    """A clock that only moves when told to; safe to move from another thread."""

    def __init__(self, start_ms: int) -> None:
        self._now = start_ms

    def now_ms(self) -> int:
        return self._now

    def set(self, ms: int) -> None:
        self._now = ms

    def advance(self, delta: int | timedelta) -> int:
        """Move forward by milliseconds or a timedelta; returns the new time."""
        if isinstance(delta, timedelta):
            delta = round(delta.total_seconds() * 1000)
        self._now += delta
        return self._now


class WallClock:
    """Real time, shifted so that it reads `start_ms` at construction."""

    def __init__(self, start_ms: int) -> None:
        self._start_ms = start_ms
        self._origin_ns = time.monotonic_ns()

    def now_ms(self) -> int:
        return self._start_ms + (time.monotonic_ns() - self._origin_ns) // 1_000_000


class MachineClock:
    """The machine's own clock (epoch milliseconds): a harness in another process can then
    ask an identical account what the API showed at any moment of a run."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000
