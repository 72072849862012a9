"""The tie-safe cursor decides every next page from the page alone."""

from __future__ import annotations

import pytest

from jobsync.cursor import (
    Advance,
    CursorState,
    CursorStuck,
    Done,
    SplitMillisecond,
    next_step,
    unseen,
)


def test_a_short_page_ends_the_window() -> None:
    assert next_step(CursorState(100), None, [(90, "a")], full=False) == Done()


def test_an_empty_page_ends_the_window() -> None:
    assert next_step(CursorState(100), 0, [], full=False) == Done()


def test_a_full_page_moves_to_its_oldest_millisecond_inclusively() -> None:
    keys = [(100, "a"), (95, "b"), (90, "c"), (90, "d")]
    step = next_step(CursorState(100), None, keys, full=True)
    assert step == Advance(CursorState(90, frozenset({"c", "d"})))


def test_the_oldest_millisecond_is_found_whatever_the_order() -> None:
    keys = [(90, "c"), (100, "a"), (95, "b")]
    assert next_step(CursorState(100), None, keys, full=True) == Advance(
        CursorState(90, frozenset({"c"}))
    )


def test_a_full_page_inside_one_millisecond_asks_for_a_split() -> None:
    keys = [(100, f"j{i}") for i in range(5)]
    step = next_step(CursorState(100, frozenset({"j0"})), None, keys, full=True)
    assert step == SplitMillisecond(100, CursorState(99))


def test_a_split_at_the_window_floor_ends_the_window() -> None:
    keys = [(50, "a"), (50, "b")]
    assert next_step(CursorState(50), 50, keys, full=True) == SplitMillisecond(50, None)


def test_jobs_outside_the_window_do_not_move_the_cursor() -> None:
    keys = [(200, "late"), (80, "a"), (10, "below")]
    step = next_step(CursorState(100), 50, keys, full=True)
    assert step == Advance(CursorState(80, frozenset({"a"})))


def test_a_full_page_without_positions_is_stuck() -> None:
    with pytest.raises(CursorStuck):
        next_step(CursorState(100), None, [], full=True)


def test_unseen_drops_only_ids_already_taken() -> None:
    state = CursorState(90, frozenset({"c"}))
    records = [{"_id": "c"}, {"_id": "d"}, "junk"]
    assert unseen(state, records, ["c", "d", None]) == [{"_id": "d"}, "junk"]
