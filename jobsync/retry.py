"""When to retry a request and how long to wait first. Pure arithmetic: the client sleeps.

Backoff is exponential with full jitter (a uniform draw between 0 and the exponential
ceiling), so that many requests failing together do not come back together.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# 501 Not Implemented and 505 HTTP Version Not Supported will answer the same every time.
_FINAL_SERVER_STATUSES = frozenset({501, 505})


def is_retryable_status(status: int) -> bool:
    """429 (throttled) and server errors are transient; every other 4xx is final."""
    return status == 429 or (500 <= status <= 599 and status not in _FINAL_SERVER_STATUSES)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date.

    `now` is the moment the date is measured from (best: the response's own `Date`, so a
    skewed local clock does not matter). None when the header is absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - (now or datetime.now(tz=UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass
class RetryPolicy:
    """How often and how long one request is retried; `delay` says how long to wait."""

    max_attempts: int
    max_total: float
    base: float = 0.5
    cap: float = 30.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1 = the first request).

        A server's Retry-After is honoured as given; otherwise a full-jitter draw below
        `min(cap, base * 2**(attempt-1))`.
        """
        if retry_after is not None:
            return max(0.0, retry_after)
        ceiling = min(self.cap, self.base * 2 ** max(0, attempt - 1))
        return self.rng.uniform(0.0, ceiling)

    def allows(self, attempt: int, elapsed: float, delay: float) -> bool:
        """Whether to try again after failed attempt `attempt`, `elapsed` seconds after the
        first one started, waiting `delay` seconds first."""
        return attempt < self.max_attempts and elapsed + delay <= self.max_total
