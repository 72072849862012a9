"""Archive health: the purge-risk and gap arithmetic as plain functions of `now`, then the
queries on a real warehouse file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobsync.partition import Partition
from jobsync.records import Reject, normalise_page
from jobsync.status import (
    ArchiveHealth,
    FlowHealth,
    Retention,
    RunRecord,
    assess,
    find_gaps,
    latest_success,
    purge_risk,
    read_health,
    shortest_retention,
)
from jobsync.store import RunCounts, Warehouse

T0 = datetime(2026, 11, 1, 2, 30, tzinfo=UTC)
DAY = timedelta(days=1)


def run(run_id: str, started: datetime, outcome: str = "succeeded") -> RunRecord:
    return RunRecord(run_id, started, started + timedelta(minutes=20), outcome, None)


def health(*runs: RunRecord) -> ArchiveHealth:
    return ArchiveHealth(runs, (), 0, None, 0)


# -- purge risk -----------------------------------------------------------------------------


def test_a_fresh_archive_is_not_at_risk() -> None:
    risk = purge_risk(T0, T0 + DAY, retention_days=30, margin_days=7)
    assert not risk.at_risk
    assert risk.deadline == T0 + 30 * DAY
    assert risk.days_left == pytest.approx(29.0)
    assert "29.0 more days" in risk.message


def test_the_risk_starts_when_less_than_the_margin_is_left() -> None:
    threshold = T0 + 23 * DAY  # 30 days of retention, 7 of margin
    just_before = purge_risk(T0, threshold - timedelta(seconds=1), 30, 7)
    at = purge_risk(T0, threshold, 30, 7)
    just_after = purge_risk(T0, threshold + timedelta(seconds=1), 30, 7)
    assert (just_before.at_risk, at.at_risk, just_after.at_risk) == (False, False, True)
    assert just_after.days_left == pytest.approx(7.0, abs=1e-4)
    assert "in 7.0 days (2026-12-01 02:30 UTC)" in just_after.message


def test_past_the_retention_the_lost_window_is_named() -> None:
    risk = purge_risk(T0, T0 + 40 * DAY, 30, 7)
    assert risk.at_risk
    assert risk.days_left == pytest.approx(-10.0)
    assert "from 2026-11-01 02:30 UTC to 2026-11-11 02:30 UTC" in risk.message


def test_no_successful_run_is_a_risk() -> None:
    risk = purge_risk(None, T0, 30, 7)
    assert risk.at_risk and risk.deadline is None and risk.days_left is None
    assert "no successful sync" in risk.message


def test_retention_and_margin_come_from_the_caller() -> None:
    assert purge_risk(T0, T0 + 5 * DAY, retention_days=7, margin_days=3).at_risk
    assert not purge_risk(T0, T0 + 3 * DAY, retention_days=7, margin_days=3).at_risk
    assert not purge_risk(T0, T0 + 29 * DAY, retention_days=30, margin_days=0).at_risk


# -- gaps -----------------------------------------------------------------------------------


def test_nightly_runs_leave_no_gap() -> None:
    runs = [run(f"r{n}", T0 + n * DAY) for n in range(60)]
    assert find_gaps(runs, 30) == []


def test_a_run_more_than_the_retention_after_the_last_success_is_a_gap() -> None:
    last_good = run("good", T0)
    failures = [run(f"bad{n}", T0 + n * DAY, "failed") for n in (1, 10, 20)]
    late = run("late", T0 + 45 * DAY)
    gaps = find_gaps([late, *failures, last_good], 30)
    assert len(gaps) == 1
    gap = gaps[0]
    assert (gap.last_success, gap.next_run) == (last_good, late)
    assert (gap.lost_from, gap.lost_until) == (T0, T0 + 15 * DAY)
    assert "2026-11-01 02:30 UTC to 2026-11-16 02:30 UTC" in gap.message()


def test_a_gap_is_reported_once_however_many_runs_follow_it() -> None:
    runs = [run("a", T0), run("b", T0 + 31 * DAY, "failed"), run("c", T0 + 32 * DAY, "failed")]
    runs += [run("d", T0 + 33 * DAY), run("e", T0 + 70 * DAY, "partial")]
    gaps = find_gaps(runs, 30)
    assert [(g.last_success.run_id, g.next_run.run_id) for g in gaps] == [("a", "b"), ("d", "e")]


def test_exactly_the_retention_is_no_gap_and_the_first_run_has_none() -> None:
    assert find_gaps([run("a", T0), run("b", T0 + 30 * DAY)], 30) == []
    assert find_gaps([run("first", T0)], 30) == []
    assert find_gaps([run("x", T0, "failed"), run("y", T0 + 90 * DAY)], 30) == []


def test_assess_judges_the_latest_success() -> None:
    runs = (run("old", T0), run("new", T0 + 2 * DAY), run("broken", T0 + 3 * DAY, "failed"))
    assert latest_success(runs) == runs[1]
    report = assess(health(*runs), T0 + 24 * DAY, retention_days=30, margin_days=7)
    assert report.last_success == runs[1] and report.last_run == runs[2]
    assert not report.at_risk
    later = assess(health(*runs), T0 + 26 * DAY, retention_days=30, margin_days=7)
    assert later.at_risk
    assert later.warnings() == [f"purge risk: {later.purge.message}"]
    assert later.as_dict()["last_success"]["age_seconds"] == 24 * 86400


def flow(flow_id: str, retention_days: float | None) -> FlowHealth:
    return FlowHealth(flow_id, 10, T0 - 9 * DAY, T0, 0, retention_days)


def test_the_shortest_retention_learned_from_purge_at_wins_else_the_default() -> None:
    assert shortest_retention([], 30) == Retention(30, "--retention-days")
    plans = [flow("a", 90.0), flow("b", 60.0)]
    assert shortest_retention(plans, 30) == Retention(60.0, "purgeAt of flow b")
    assert shortest_retention([*plans, flow("c", None)], 30) == Retention(30, "--retention-days")
    assert shortest_retention([flow("a", 180.0), flow("c", None)], 200).days == 180.0


def test_flows_that_keep_nothing_do_not_set_the_deadline() -> None:
    nothing = flow("n", 0.0)
    assert nothing.keeps_nothing and not flow("a", 1.0).keeps_nothing
    assert not flow("u", None).keeps_nothing
    assert shortest_retention([nothing, flow("a", 90.0)], 30).days == 90.0
    assert shortest_retention([nothing], 30) == Retention(30, "--retention-days")


def test_assess_uses_the_learned_retention_for_risk_and_gaps() -> None:
    runs = (run("a", T0), run("b", T0 + 50 * DAY))
    longer = ArchiveHealth(runs, (flow("a", 60.0), flow("n", 0.0)), 0, None, 0)
    report = assess(longer, T0 + 75 * DAY, retention_days=30, margin_days=7)
    assert not report.at_risk and report.gaps == ()
    assert report.purge.days_left == pytest.approx(35.0)
    assert [f.flow_id for f in report.keeping_nothing] == ["n"]
    assert report.as_dict()["flows_keeping_nothing"] == ["n"]
    assert report.warnings() == []
    default = assess(health(*runs), T0 + 75 * DAY, retention_days=30, margin_days=7)
    assert default.at_risk and len(default.gaps) == 1


# -- the queries, on a real warehouse ---------------------------------------------------------


def job(job_id: str, flow: str, created: str, status: str = "completed") -> dict:
    return {
        "_id": job_id,
        "type": "flow",
        "status": status,
        "_flowId": flow,
        "createdAt": created,
        "lastModified": created,
    }


def test_read_health_reports_runs_flows_rejects_and_pending_work(tmp_path: Path) -> None:
    start_ms = int(T0.timestamp() * 1000)
    with Warehouse.open(tmp_path / "jobs.duckdb") as warehouse:
        warehouse.begin_run("r1", start_ms)
        warehouse.finish_run("r1", start_ms + 60_000, "succeeded", None, RunCounts())
        warehouse.begin_run("r2", start_ms + 40 * 86_400_000)
        warehouse.finish_run(
            "r2", start_ms + 40 * 86_400_000 + 60_000, "failed", "boom", RunCounts()
        )
        records = [
            job("a", "f1", "2026-10-01T00:00:00.000Z"),
            job("b", "f1", "2026-10-20T12:00:00.000Z", "running"),
            job("c", "f2", "2026-10-05T00:00:00.000Z", "queued"),
        ]
        page = normalise_page([*records, {"type": "flow"}])
        extra = [Reject("{}", "missing _id")]
        warehouse.commit_batch(page.rows, page.rejects + extra, {}, "r1", start_ms)
        warehouse.save_plan("r2", [Partition.fresh("p", ("f1",), None, start_ms)], {})
        found = read_health(warehouse)
    assert [(r.run_id, r.outcome, r.error) for r in found.runs] == [
        ("r1", "succeeded", None),
        ("r2", "failed", "boom"),
    ]
    flows = {f.flow_id: f for f in found.flows}
    assert (flows["f1"].jobs, flows["f1"].unfinished) == (2, 1)
    assert (flows["f2"].jobs, flows["f2"].unfinished) == (1, 1)
    assert flows["f1"].oldest_created_at == datetime(2026, 10, 1, tzinfo=UTC)
    assert flows["f1"].newest_created_at == datetime(2026, 10, 20, 12, tzinfo=UTC)
    assert found.rejects == 2 and found.last_reject_at == T0
    assert found.partitions_pending == 1
    report = assess(found, T0 + 41 * DAY, retention_days=30, margin_days=7)
    assert report.at_risk
    assert len(report.gaps) == 1 and report.gaps[0].next_run.run_id == "r2"
    warnings = report.warnings()
    assert [w.split(":")[0] for w in warnings] == ["purge risk", "gap"]


def test_read_health_learns_each_flows_retention_from_its_newest_ended_job(
    tmp_path: Path,
) -> None:
    def ended(job_id: str, flow: str, created: str, ended: str, purge: str | None) -> dict:
        return {**job(job_id, flow, created), "endedAt": ended, "purgeAt": purge}

    records = [
        ended(
            "a",
            "f1",
            "2026-10-01T00:00:00.000Z",
            "2026-10-01T01:00:00.000Z",
            "2026-10-31T01:00:00.000Z",
        ),
        ended(
            "b",
            "f1",
            "2026-10-02T00:00:00.000Z",
            "2026-10-02T01:00:00.000Z",
            "2026-12-01T01:00:00.000Z",
        ),
        ended("c", "f1", "2026-10-03T00:00:00.000Z", "2026-10-03T01:00:00.000Z", None),
        job("d", "f1", "2026-10-04T00:00:00.000Z", "running"),
        ended(
            "e",
            "f2",
            "2026-10-02T00:00:00.000Z",
            "2026-10-02T00:10:00.000Z",
            "2026-10-02T00:10:00.000Z",
        ),
        job("f", "f3", "2026-10-02T00:00:00.000Z"),
    ]
    with Warehouse.open(tmp_path / "jobs.duckdb") as warehouse:
        page = normalise_page(records)
        warehouse.commit_batch(page.rows, page.rejects, {}, "r1", 0)
        flows = {f.flow_id: f for f in read_health(warehouse).flows}
    assert flows["f1"].retention_days == pytest.approx(60.0)  # b: the newest with a purgeAt
    assert flows["f2"].retention_days == 0.0 and flows["f2"].keeps_nothing
    assert flows["f3"].retention_days is None


def test_an_empty_warehouse_is_at_risk(tmp_path: Path) -> None:
    with Warehouse.open(tmp_path / "jobs.duckdb") as warehouse:
        found = read_health(warehouse)
    assert found == ArchiveHealth((), (), 0, None, 0)
    report = assess(found, T0, 30)
    assert report.at_risk and report.last_run is None
