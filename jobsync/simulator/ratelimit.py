"""The API's throttle: a leaky bucket per token, measured in real (monotonic) time."""

from __future__ import annotations

import time
from collections.abc import Callable


class LeakyBucket:
    """Each request pours one unit in, the bucket drains `rate` units a second, and a request
    that would overflow `capacity` is refused with the seconds to wait."""

    def __init__(
        self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._levels: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """0.0 when the request may go now, else the seconds until it would fit."""
        now = self._clock()
        level, since = self._levels.get(key, (0.0, now))
        level = max(0.0, level - (now - since) * self.rate)
        if level + 1 > self.capacity:
            self._levels[key] = (level, now)
            return (level + 1 - self.capacity) / self.rate
        self._levels[key] = (level + 1, now)
        return 0.0
