"""Archive health: how fresh the last successful sync is, whether the API is about to purge jobs
the archive has not got, and where past runs left holes the API may have purged unseen.

The judgement is plain functions of `now` (tested without a clock); `read_health` is the one
place that asks the warehouse. A job lives in the API for the retention after it ends, so
jobs created after the last successful run started start to vanish, unarchived, one
retention after that start. The retention is 30 days by default, 60, 90 or 180 on some
plans, and nothing for a flow set to keep nothing: each flow's is learned from its stored
jobs' `purgeAt` (minus `endedAt`) where they carry one, else it is `--retention-days`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobsync.store import UNFINISHED_STATUSES, Warehouse

DEFAULT_MARGIN_DAYS = 7
# A flow whose jobs purge sooner than this after they end keeps nothing worth a schedule:
# no sync can promise to save them, so they are reported rather than judged at risk.
KEEPS_NOTHING_BELOW_DAYS = 1 / 24
_DAY = timedelta(days=1)

_RUNS = """
SELECT run_id, started_at, ended_at, outcome, error FROM sync_runs ORDER BY started_at, run_id
"""
# A flow's retention is that of its newest ended job with a purgeAt: the flow's setting now.
_FLOWS = f"""
SELECT flow_id, count(*), min(created_at), max(created_at),
       count(*) FILTER (WHERE status IN ({", ".join("?" for _ in UNFINISHED_STATUSES)})),
       arg_max((epoch_ms(purge_at) - epoch_ms(ended_at)) / 86400000.0, created_at)
           FILTER (WHERE purge_at IS NOT NULL AND ended_at IS NOT NULL)
FROM jobs GROUP BY flow_id ORDER BY flow_id NULLS FIRST
"""
_REJECTS = "SELECT count(*), max(seen_at) FROM rejects"
_PENDING = "SELECT count(*) FROM sync_partitions"


@dataclass(frozen=True)
class RunRecord:
    """One row of `sync_runs`, as far as health goes."""

    run_id: str
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    error: str | None


@dataclass(frozen=True)
class FlowHealth:
    """What the archive holds of one flow."""

    flow_id: str | None
    jobs: int
    oldest_created_at: datetime
    newest_created_at: datetime
    unfinished: int  # queued or running when last seen: the next sync fetches them again
    retention_days: float | None = None  # purgeAt - endedAt of its newest such job; None: none

    @property
    def keeps_nothing(self) -> bool:
        """The API purges its jobs (next to) as soon as they end."""
        return self.retention_days is not None and self.retention_days < KEEPS_NOTHING_BELOW_DAYS


@dataclass(frozen=True)
class ArchiveHealth:
    """The facts the warehouse holds about itself; `assess` judges them."""

    runs: tuple[RunRecord, ...]
    flows: tuple[FlowHealth, ...]
    rejects: int
    last_reject_at: datetime | None
    partitions_pending: int


@dataclass(frozen=True)
class Retention:
    """How long the API keeps the jobs that purge first, and where that was learned."""

    days: float
    source: str  # "--retention-days", or the flow whose jobs' purgeAt says so


def shortest_retention(flows: Sequence[FlowHealth], default_days: float) -> Retention:
    """The shortest retention of the stored flows that keep something: learned from purgeAt
    where their jobs carry it, else the default (alone when no flow is stored)."""
    default = Retention(default_days, "--retention-days")
    candidates = [
        default
        if flow.retention_days is None
        else Retention(flow.retention_days, f"purgeAt of flow {flow.flow_id}")
        for flow in flows
        if not flow.keeps_nothing
    ]
    return min(candidates, key=lambda r: r.days, default=default)


@dataclass(frozen=True)
class PurgeRisk:
    """Whether the API will soon purge (or has purged) jobs that no successful run has read."""

    at_risk: bool
    deadline: datetime | None  # from then on the API purges jobs the archive has not got
    days_left: float | None  # before the deadline; negative once it has passed
    message: str


@dataclass(frozen=True)
class Gap:
    """More than the retention between a successful run and the next run: jobs created from
    `lost_from` until `lost_until` may have been purged before any run read them."""

    last_success: RunRecord
    next_run: RunRecord
    lost_from: datetime
    lost_until: datetime

    def message(self) -> str:
        days = (self.next_run.started_at - self.last_success.started_at) / _DAY
        return (
            f"no run for {days:.1f} days after the successful run of "
            f"{_when(self.last_success.started_at)}, until {_when(self.next_run.started_at)}; "
            f"jobs created from {_when(self.lost_from)} to {_when(self.lost_until)} may have "
            "been purged by the API before any run read them"
        )


@dataclass(frozen=True)
class StatusReport:
    """The health of the archive at `now`, judged."""

    now: datetime
    retention_days: int  # the default, for flows whose jobs carry no purgeAt
    margin_days: int
    health: ArchiveHealth
    last_success: RunRecord | None
    purge: PurgeRisk
    gaps: tuple[Gap, ...]
    retention: Retention  # the shortest that applies: what the purge risk and gaps use

    @property
    def at_risk(self) -> bool:
        return self.purge.at_risk

    @property
    def keeping_nothing(self) -> tuple[FlowHealth, ...]:
        """Flows whose jobs the API purges as they end: no schedule saves them all."""
        return tuple(flow for flow in self.health.flows if flow.keeps_nothing)

    @property
    def last_run(self) -> RunRecord | None:
        return self.health.runs[-1] if self.health.runs else None

    def warnings(self) -> list[str]:
        """What needs a human: the purge risk first, then the gaps, oldest first."""
        risk = [f"purge risk: {self.purge.message}"] if self.purge.at_risk else []
        return risk + [f"gap: {gap.message()}" for gap in self.gaps]

    def as_dict(self) -> dict[str, Any]:
        """The report for `--json`: times as ISO 8601 strings."""
        return {
            "now": self.now.isoformat(),
            "retention_days": self.retention_days,
            "retention": {"days": self.retention.days, "source": self.retention.source},
            "flows_keeping_nothing": [flow.flow_id for flow in self.keeping_nothing],
            "margin_days": self.margin_days,
            "at_risk": self.at_risk,
            "last_success": _run_dict(self.last_success, self.now),
            "last_run": _run_dict(self.last_run, self.now),
            "purge_risk": {
                "at_risk": self.purge.at_risk,
                "deadline": _iso(self.purge.deadline),
                "days_left": self.purge.days_left,
                "message": self.purge.message,
            },
            "gaps": [
                {
                    "last_success_run_id": gap.last_success.run_id,
                    "next_run_id": gap.next_run.run_id,
                    "lost_from": gap.lost_from.isoformat(),
                    "lost_until": gap.lost_until.isoformat(),
                }
                for gap in self.gaps
            ],
            "flows": [
                {
                    "flow_id": flow.flow_id,
                    "jobs": flow.jobs,
                    "oldest_created_at": flow.oldest_created_at.isoformat(),
                    "newest_created_at": flow.newest_created_at.isoformat(),
                    "unfinished": flow.unfinished,
                    "retention_days": flow.retention_days,
                }
                for flow in self.health.flows
            ],
            "rejects": self.health.rejects,
            "last_reject_at": _iso(self.health.last_reject_at),
            "partitions_pending": self.health.partitions_pending,
            "warnings": self.warnings(),
        }


def purge_risk(
    last_success_at: datetime | None, now: datetime, retention_days: float, margin_days: int
) -> PurgeRisk:
    """At risk when the last successful run started more than `retention_days - margin_days`
    days before `now`, or when there has been none."""
    if last_success_at is None:
        return PurgeRisk(
            True,
            None,
            None,
            "no successful sync yet: the API purges every job it lists "
            f"{retention_days:g} days after it ends; run `jobsync sync`",
        )
    retention = timedelta(days=retention_days)
    deadline = last_success_at + retention
    days_left = (deadline - now) / _DAY
    age = f"the last successful run started {(now - last_success_at) / _DAY:.1f} days ago"
    if days_left >= margin_days:
        message = (
            f"{age}; jobs the archive has not got stay in the API for {days_left:.1f} more "
            f"days (until {_when(deadline)})"
        )
        return PurgeRisk(False, deadline, days_left, message)
    if days_left > 0:
        message = (
            f"{age}; in {days_left:.1f} days ({_when(deadline)}) the API starts "
            "purging jobs the archive has not got; run `jobsync sync`"
        )
    else:
        message = (
            f"{age}, longer than the API keeps jobs ({retention_days:g} days); jobs "
            f"created from {_when(last_success_at)} to {_when(now - retention)} may already "
            "be purged and lost; run `jobsync sync` now to save the rest"
        )
    return PurgeRisk(True, deadline, days_left, message)


def find_gaps(runs: Sequence[RunRecord], retention_days: float) -> list[Gap]:
    """Each successful run that the next run (of any outcome) started more than the retention
    after, once, with the window of jobs that may have been purged unseen meanwhile."""
    retention = timedelta(days=retention_days)
    gaps: list[Gap] = []
    last_success: RunRecord | None = None
    reported: RunRecord | None = None
    for run in sorted(runs, key=lambda r: (r.started_at, r.run_id)):
        if (
            last_success is not None
            and last_success is not reported
            and run.started_at - last_success.started_at > retention
        ):
            gaps.append(Gap(last_success, run, last_success.started_at, run.started_at - retention))
            reported = last_success
        if run.outcome == "succeeded":
            last_success = run
    return gaps


def latest_success(runs: Sequence[RunRecord]) -> RunRecord | None:
    """The successful run that started last, if any."""
    succeeded = [run for run in runs if run.outcome == "succeeded"]
    return max(succeeded, key=lambda r: (r.started_at, r.run_id)) if succeeded else None


def assess(
    health: ArchiveHealth,
    now: datetime,
    retention_days: int,
    margin_days: int = DEFAULT_MARGIN_DAYS,
) -> StatusReport:
    """Judge `health` at `now`, by the shortest retention of the flows that keep something."""
    last = latest_success(health.runs)
    retention = shortest_retention(health.flows, retention_days)
    risk = purge_risk(last.started_at if last else None, now, retention.days, margin_days)
    gaps = tuple(find_gaps(health.runs, retention.days))
    return StatusReport(now, retention_days, margin_days, health, last, risk, gaps, retention)


def read_health(warehouse: Warehouse) -> ArchiveHealth:
    """Runs, per-flow coverage, rejects and pending partitions, from the warehouse."""
    connection = warehouse.connection
    runs = tuple(RunRecord(*row) for row in connection.execute(_RUNS).fetchall())
    flows = tuple(
        FlowHealth(*row) for row in connection.execute(_FLOWS, list(UNFINISHED_STATUSES)).fetchall()
    )
    rejects, last_reject_at = connection.execute(_REJECTS).fetchone() or (0, None)
    pending = connection.execute(_PENDING).fetchone()
    return ArchiveHealth(runs, flows, rejects, last_reject_at, pending[0] if pending else 0)


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _run_dict(run: RunRecord | None, now: datetime) -> dict[str, Any] | None:
    if run is None:
        return None
    return {
        "run_id": run.run_id,
        "started_at": run.started_at.isoformat(),
        "ended_at": _iso(run.ended_at),
        "outcome": run.outcome,
        "error": run.error,
        "age_seconds": round((now - run.started_at).total_seconds(), 3),
    }
