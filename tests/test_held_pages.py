"""Held pages: which rows, rejects and cursor moves each take stores (see jobsync.held_pages)."""

from __future__ import annotations

from typing import Any

import pytest

from jobsync.cursor import CursorState
from jobsync.held_pages import HeldPages, PageToStore
from jobsync.records import normalise_page
from jobsync.timestamps import format_iso_ms

T0 = 1_767_225_600_000


def held_page(key: str, ids: range, cursor: CursorState | None, bad: int = 0) -> PageToStore:
    records: list[Any] = [
        {"_id": f"job{n:03d}", "type": "flow", "createdAt": format_iso_ms(T0 + n)} for n in ids
    ]
    records += [{"_id": f"bad{n}", "type": "flow"} for n in range(bad)]
    return PageToStore(normalise_page(records), key, cursor, finished=cursor is None)


def ids_of(table: Any) -> list[str]:
    return table.column("id").to_pylist()


def test_a_page_taken_in_three_cuts_gives_its_rows_in_order_and_its_cursor_with_the_last() -> None:
    cursor = CursorState(T0 + 9, frozenset({"job009"}))
    held = HeldPages()
    held.add(held_page("a", range(10), cursor, bad=2))
    cuts = [held.take(3), held.take(3), held.take(4)]
    assert [ids_of(cut.rows) for cut in cuts] == [
        [f"job{n:03d}" for n in range(0, 3)],
        [f"job{n:03d}" for n in range(3, 6)],
        [f"job{n:03d}" for n in range(6, 10)],
    ]
    assert [(len(cut.rejects), cut.cursors, cut.pages) for cut in cuts] == [
        (0, {}, 0),
        (0, {}, 0),
        (2, {"a": cursor}, 1),
    ]
    assert held.rows == 0 and not held.pages


def test_pages_without_rows_complete_once_the_rows_before_them_are_taken() -> None:
    held = HeldPages()
    held.add(held_page("a", range(5), CursorState(T0 + 4)))
    held.add(held_page("b", range(0), None))  # a partition finished on an empty page
    held.add(held_page("a", range(5, 10), None))
    first = held.take(4)
    assert (first.rows.num_rows, first.cursors) == (4, {})
    second = held.take(1)  # the last row of the first page: the empty one completes too
    assert (second.rows.num_rows, second.cursors, second.pages) == (
        1,
        {"a": CursorState(T0 + 4), "b": None},
        1,
    )
    third = held.take(5)
    assert (third.cursors, third.pages) == ({"a": None}, 1)


def test_taking_more_rows_than_are_held_is_refused() -> None:
    held = HeldPages()
    held.add(held_page("a", range(3), None))
    with pytest.raises(ValueError, match="cannot take 4 of 3 rows held"):
        held.take(4)
    assert held.rows == 3  # nothing taken
