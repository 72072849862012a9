"""The tie-safe timestamp cursor: a pure object that looks at one page and says what to
ask next. No I/O, so every decision is unit-tested.

Pages come newest first. The reference moves its cursor to "last createdAt minus 1 ms",
which skips the rest of a group of jobs sharing that millisecond when a page ends inside
it. Here the cursor is inclusive (`createdAt_lte` = the oldest createdAt on the page) and
remembers which ids at that millisecond it already has. A full page that lies entirely in
one millisecond cannot be paged past: that millisecond must be split by other filters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CursorState:
    """Every job created after `lte` is fetched; of those created at `lte`, the ids in `seen`."""

    lte: int
    seen: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Advance:
    """Ask for the next page with this state."""

    state: CursorState


@dataclass(frozen=True)
class SplitMillisecond:
    """More jobs share millisecond `ms` than a page holds: fetch it by sub-filters, then go on
    with `then` (None when the window ends there)."""

    ms: int
    then: CursorState | None


@dataclass(frozen=True)
class Done:
    """The window is exhausted."""


Step = Advance | SplitMillisecond | Done


class CursorStuck(Exception):
    """A full page from which no position can be read (no job with a usable createdAt)."""


def next_step(
    state: CursorState, gte: int | None, keys: Sequence[tuple[int, str]], full: bool
) -> Step:
    """Decide what follows a page.

    `keys` are (createdAt ms, _id) of the page's jobs that have both; `full` says whether the
    page held as many jobs as the API's cap (so more may follow).
    """
    if not full:
        return Done()
    in_window = [key for key in keys if key[0] <= state.lte and (gte is None or key[0] >= gte)]
    if not in_window:
        raise CursorStuck("a full page holds no job with a usable createdAt inside the window")
    oldest = min(created for created, _ in in_window)
    if oldest < state.lte:
        seen = frozenset(job_id for created, job_id in in_window if created == oldest)
        return Advance(CursorState(oldest, seen))
    below = oldest - 1
    then = None if gte is not None and below < gte else CursorState(below)
    return SplitMillisecond(oldest, then)


def unseen(state: CursorState, records: Sequence[object], ids: Sequence[str | None]) -> list:
    """The records of a page minus those the cursor already has (by `_id` at `state.lte`)."""
    if not state.seen:
        return list(records)
    return [rec for rec, job_id in zip(records, ids, strict=True) if job_id not in state.seen]
