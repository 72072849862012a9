"""The retry policy: which statuses are transient, full-jitter backoff, Retry-After parsing."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from jobsync.retry import RetryPolicy, is_retryable_status, parse_retry_after


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 599])
def test_transient_statuses_are_retried(status: int) -> None:
    assert is_retryable_status(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 414, 422, 501, 505])
def test_final_statuses_are_not_retried(status: int) -> None:
    assert not is_retryable_status(status)


def test_delay_is_full_jitter_under_an_exponential_ceiling() -> None:
    policy = RetryPolicy(max_attempts=20, max_total=1e9, base=0.5, cap=30.0, rng=random.Random(1))
    for attempt in range(1, 15):
        ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
        draws = [policy.delay(attempt) for _ in range(300)]
        assert all(0.0 <= d <= ceiling for d in draws)
        # Full jitter spreads over the whole range, not just near the ceiling.
        assert min(draws) < ceiling * 0.1
        assert max(draws) > ceiling * 0.9


def test_delay_honours_retry_after() -> None:
    policy = RetryPolicy(max_attempts=8, max_total=600, rng=random.Random(1))
    assert policy.delay(1, retry_after=7.5) == 7.5
    assert policy.delay(6, retry_after=0.0) == 0.0


def test_allows_caps_attempts_and_total_time() -> None:
    policy = RetryPolicy(max_attempts=3, max_total=10.0)
    assert policy.allows(1, elapsed=0.0, delay=1.0)
    assert policy.allows(2, elapsed=5.0, delay=5.0)
    assert not policy.allows(3, elapsed=0.0, delay=0.0)  # the third attempt was the last
    assert not policy.allows(1, elapsed=9.0, delay=1.5)  # would end past the budget
    assert not policy.allows(1, elapsed=0.0, delay=11.0)  # a Retry-After past the budget


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0.25", 0.25),
        ("-5", 0.0),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # already past
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(header, now) == expected
