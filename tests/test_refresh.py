"""Refreshing unfinished jobs: each flow batch is listed again over the span of its unfinished
jobs when that costs fewer requests than fetching them one by one."""

from __future__ import annotations

from jobsync.refresh import plan_refresh
from jobsync.store import Unfinished


def pairs(flows: list[str]) -> list[tuple[str, ...]]:
    return [tuple(flows[i : i + 2]) for i in range(0, len(flows), 2)]


def test_clustered_jobs_are_listed_over_their_span_and_others_fetched() -> None:
    unfinished = [
        Unfinished("a1", "A", 1_000),
        Unfinished("a2", "A", 5_000),
        Unfinished("b1", "B", 3_000),
        Unfinished("c1", "C", 9_000),
        Unfinished("orphan", None, 2_000),
    ]
    counted: list[tuple[tuple[str, ...], int, int]] = []

    def stored(batch: tuple[str, ...], gte: int, lte: int) -> int:
        counted.append((batch, gte, lte))
        return 1500 if batch == ("A", "B") else 10

    plan = plan_refresh(unfinished, pairs, stored, page_size=1000, key_prefix="run")
    # A+B: 1500 stored jobs = 2 pages < 3 GETs; C: 1 page, not fewer than 1 GET
    assert [(p.key, p.flow_ids, p.window_gte, p.window_lte) for p in plan.listings] == [
        ("run-refresh-0", ("A", "B"), 1_000, 5_000)
    ]
    assert plan.listings[0].cursor.lte == 5_000
    assert plan.targets == {"run-refresh-0": {"a1", "a2", "b1"}}
    assert plan.job_ids == ["orphan", "c1"]
    assert counted == [(("A", "B"), 1_000, 5_000), (("C",), 9_000, 9_000)]


def test_a_crowded_span_is_fetched_one_by_one() -> None:
    unfinished = [Unfinished("a1", "A", 0), Unfinished("a2", "A", 86_400_000)]
    plan = plan_refresh(unfinished, pairs, lambda *_: 5000, page_size=1000, key_prefix="r")
    assert plan.listings == [] and plan.job_ids == ["a1", "a2"]


def test_nothing_unfinished_plans_nothing() -> None:
    plan = plan_refresh([], pairs, lambda *_: 0, page_size=1000, key_prefix="r")
    assert (plan.listings, plan.targets, plan.job_ids) == ([], {}, [])
