"""Timestamps as the API writes them (ISO 8601, milliseconds, UTC) and as jobsync computes
with them (integer milliseconds since the epoch, exact and cheap to compare)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
# A day inside the calendar's ends, so that every moment converts back to a datetime.
FIRST_MS = -62_135_596_800_000 + 86_400_000  # 0001-01-02
LAST_MS = 253_402_214_400_000  # 9999-12-30
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_iso_ms(text: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 timestamp that names its offset.

    Raises ValueError for anything else, including a timestamp without a timezone:
    guessing one would silently shift a job in time.
    """
    if not isinstance(text, str):
        raise ValueError(f"timestamp is not a string: {text!r}")
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"timestamp has no timezone: {text!r}")
    return _epoch_ms(moment, text)


def format_iso_ms(ms: int) -> str:
    """The API's own spelling of a moment: `2024-01-15T10:00:00.000Z`."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def ms_to_datetime(ms: int) -> datetime:
    """An aware UTC datetime for DuckDB's TIMESTAMPTZ."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def parse_user_time(text: str) -> int:
    """A moment typed by a user: a date (`2024-01-15`, midnight UTC) or an ISO timestamp;
    a timestamp without an offset is taken as UTC."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _epoch_ms(moment, text)


def _epoch_ms(moment: datetime, text: str) -> int:
    """Milliseconds since the epoch; ValueError (not OverflowError) at the calendar's ends."""
    try:
        ms = round(moment.timestamp() * 1000)
    except (OverflowError, ValueError):
        ms = None
    if ms is None or not FIRST_MS <= ms <= LAST_MS:
        raise ValueError(f"timestamp out of range: {text!r}")
    return ms


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `1h`, `2d`, `1w` or a plain number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 15m, 1h, 2d)")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def now_ms() -> int:
    """The wall clock in milliseconds since the epoch."""
    return round(datetime.now(tz=UTC).timestamp() * 1000)
