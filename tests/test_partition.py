"""Partition planning: flow batches within the request-line budget, windows oldest first."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from jobsync.crawl import widest_query
from jobsync.dialect import dialect_named
from jobsync.partition import (
    DAY_MS,
    REQUEST_LINE_LIMIT,
    Partition,
    pack_flow_batches,
    plan_partitions,
    plan_windows,
    purge_first,
)
from jobsync.query import request_line_length


def line_length_in(dialect: str) -> Callable[[tuple[str, ...]], int]:
    """The longest request line the crawler sends for a flow batch, in `dialect`."""
    spoken = dialect_named(dialect)
    return lambda batch: request_line_length("/v1/jobs", widest_query(batch), spoken)


line_length = line_length_in("reference")


@pytest.mark.parametrize(("dialect", "expected"), [("reference", 4), ("integrator", 6)])
def test_batches_fill_the_request_line_without_passing_it(dialect: str, expected: int) -> None:
    line_length = line_length_in(dialect)
    flows = [f"{i:024x}" for i in range(1000)]
    batches = pack_flow_batches(flows, line_length)
    assert [f for batch in batches for f in batch] == flows
    assert all(line_length(batch) <= REQUEST_LINE_LIMIT for batch in batches)
    # an indexed key (`_flowId_in%5B123%5D=`) costs about 45 bytes a flow, a comma 27
    assert all(line_length(batch) > REQUEST_LINE_LIMIT - 50 for batch in batches[:-1])
    assert len(batches) == expected


def test_odd_characters_cost_their_encoded_length(dialect: str) -> None:
    line_length = line_length_in(dialect)
    flows = ["ä&=/ #" * 20 + f"{n}" for n in range(100)]
    batches = pack_flow_batches(flows, line_length)
    assert [f for batch in batches for f in batch] == flows
    assert all(line_length(batch) <= REQUEST_LINE_LIMIT for batch in batches)
    assert len(batches) < 100


def test_a_flow_id_with_a_comma_is_alone_where_lists_are_comma_joined(dialect: str) -> None:
    """`flow_id_in=a,b` would read `a,b` as two flows; alone, a flow is sent as `flow_id`."""
    line_length = line_length_in(dialect)
    joined = not dialect_named(dialect).indexed_lists
    flows = ["f1", "odd,id", "f2", "f3"]
    batches = pack_flow_batches(flows, line_length, joins_with_commas=joined)
    if joined:
        assert batches == [("odd,id",), ("f1", "f2", "f3")]
    else:
        assert batches == [tuple(flows)]
    assert all(line_length(batch) <= REQUEST_LINE_LIMIT for batch in batches)


def test_a_flow_id_longer_than_a_request_is_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        pack_flow_batches(["x" * 9000], line_length)


def test_no_flows_no_batches() -> None:
    assert pack_flow_batches([], line_length) == []


def test_backfill_windows_reach_back_then_open_oldest_first() -> None:
    hi = 100 * DAY_MS
    windows = plan_windows(None, hi, DAY_MS, 3)
    assert windows[0] == (None, hi - 3 * DAY_MS)
    assert windows[-1] == (hi - DAY_MS + 1, hi)
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert start == end + 1


def test_bounded_windows_cover_every_millisecond_once() -> None:
    windows = plan_windows(7, 7 + 2 * DAY_MS + 5, DAY_MS)
    assert windows[0][0] == 7
    assert windows[-1][1] == 7 + 2 * DAY_MS + 5
    covered = sum(end - start + 1 for start, end in windows)  # type: ignore[operator]
    assert covered == 2 * DAY_MS + 6


def test_an_empty_range_plans_nothing() -> None:
    assert plan_windows(10, 9) == []


def test_new_flows_backfill_and_known_flows_resume_with_overlap() -> None:
    hour = 3_600_000
    until = 50 * DAY_MS
    parts = plan_partitions(
        "r",
        ["new1", "new2", "old"],
        {"old": until - 2 * hour},
        until=until,
        since=None,
        overlap_ms=hour,
        line_length=line_length,
        open_spans=31,
    )
    old = [p for p in parts if p.flow_ids == ("old",)]
    assert [(p.window_gte, p.window_lte) for p in old] == [(until - 3 * hour, until)]
    new = [p for p in parts if p.flow_ids == ("new1", "new2")]
    assert len(new) == 32 and new[0].window_gte is None
    assert [p.window_lte for p in parts] == sorted(p.window_lte for p in parts)
    assert len({p.key for p in parts}) == len(parts)
    assert all(p.cursor.lte == p.window_lte and not p.cursor.seen for p in parts)


def test_since_overrides_where_flows_stopped() -> None:
    parts = plan_partitions(
        "r",
        ["a"],
        {"a": 10 * DAY_MS},
        until=10 * DAY_MS,
        since=8 * DAY_MS,
        overlap_ms=0,
        line_length=line_length,
    )
    assert parts[0].window_gte == 8 * DAY_MS and len(parts) == 3


def test_a_far_lower_bound_gets_one_window_below_the_recent_spans() -> None:
    hi = 20_000 * DAY_MS
    windows = plan_windows(0, hi, DAY_MS, 31)
    assert len(windows) == 32
    assert windows[0] == (0, hi - 31 * DAY_MS)
    assert windows[1][0] == hi - 31 * DAY_MS + 1


def test_partitions_go_in_the_order_the_api_purges_them() -> None:
    day = DAY_MS
    short = Partition.fresh("short", ("A",), 5 * day, 6 * day)  # A's jobs kept 2 days
    old = Partition.fresh("old", ("B",), 0, day)  # B: no purgeAt, the default 30 days
    mixed = Partition.fresh("mixed", ("B", "A"), 20 * day, 21 * day)
    ordered = purge_first([old, mixed, short], {"A": 2 * day}, default_ms=30 * day)
    assert [p.key for p in ordered] == ["short", "mixed", "old"]
    same = purge_first([mixed, old], {}, default_ms=30 * day)
    assert [p.key for p in same] == ["old", "mixed"], "one retention: oldest window first"
