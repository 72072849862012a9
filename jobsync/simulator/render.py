"""A job as the API shows it at one moment: its status, growing counts and timestamps are a
pure function of its history row, an optional cancellation and the clock's "now"."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from jobsync.simulator.history import (
    CANCELED,
    COMPLETED,
    DAY_MS,
    EXPORT,
    FLOW,
    IMPORT,
    ODD_FILES,
    ODD_NO_IGNORE,
    ODD_NULLS,
    ODD_RESOLVED,
    ODD_TRIGGERED,
    QUEUED,
    RUNNING,
    STATUSES,
    TYPES,
    USERS,
    History,
)
from jobsync.timestamps import format_iso_ms

Cancel = tuple[int, str]  # (when, by) of a cancellation through the API
INTEGRATOR = "integrator"


def type_name(history: History, row: int, dialect: str) -> str:
    """The job's type as the dialect shows it: integrator.io also has retry jobs, top-level
    jobs that some flow runs show up as."""
    kind = history.type[row]
    if dialect == INTEGRATOR and kind == FLOW:
        if row % 29 == 3:
            return "retry"
        if row % 29 == 17:
            return "bulk_retry"
    return TYPES[kind]


def status_name(history: History, row: int, status: int, dialect: str) -> str:
    """The job's status as the dialect shows it: integrator.io reports some running flow
    jobs as `retrying` (retrying failed records, still unfinished)."""
    if dialect == INTEGRATOR and status == RUNNING and history.type[row] == FLOW and row % 3 == 1:
        return "retrying"
    return STATUSES[status]


@lru_cache(maxsize=512)
def _minutes_of_day(day: int) -> tuple[str, ...]:
    date = format_iso_ms(day * DAY_MS)[:11]
    return tuple(f"{date}{hour:02d}:{minute:02d}:" for hour in range(24) for minute in range(60))


@lru_cache(maxsize=60_000)
def _second_and_ms(rest: int) -> str:
    return f"{rest // 1000:02d}.{rest % 1000:03d}Z"


def iso(ms: int) -> str:
    """`format_iso_ms`, ten times faster: a listing page formats thousands of these."""
    day, rest = divmod(ms, DAY_MS)
    minute, rest = divmod(rest, 60_000)
    return _minutes_of_day(day)[minute] + _second_and_ms(rest)


def tick_ms(duration: int) -> int:
    """How often a running job reports progress (moving its counts and lastModified)."""
    return min(600_000, max(1_000, duration // 10))


def end_of(history: History, row: int, cancel: Cancel | None) -> int:
    """When the job ends (or ended): its scheduled end, or when it was canceled."""
    return history.ended[row] if cancel is None else cancel[0]


def status_at(history: History, row: int, now: int, cancel: Cancel | None) -> int:
    if cancel is None:
        end, final = history.ended[row], history.final[row]
    else:
        end, final = cancel[0], CANCELED
    if now >= end:
        return final
    return RUNNING if now >= history.started[row] else QUEUED


def progress_at(history: History, row: int, moment: int) -> tuple[int, int, int]:
    """(done, of, last tick): counts are `final * done // of` at `moment`, last reported then.

    Progress follows the job's own schedule, so a cancellation freezes it where it was.
    """
    start, end = history.started[row], history.ended[row]
    if start >= end or moment < start:
        return 0, 1, start
    if moment >= end:
        return 1, 1, end
    duration = end - start
    tick = tick_ms(duration)
    ticks = (duration - 1) // tick
    done = min((moment - start) // tick, ticks)
    return done, ticks + 1, start + done * tick


def counts_at(history: History, row: int, now: int, cancel: Cancel | None) -> Sequence[int]:
    """The counts in COUNT_FIELDS order: they grow with the job's progress."""
    done, of, _ = progress_at(history, row, min(now, end_of(history, row, cancel)))
    finals = history.final_counts(row)
    return finals if done == of else [value * done // of for value in finals]


def render_job(
    history: History,
    row: int,
    now: int,
    cancel: Cancel | None,
    retention_ms: int,
    dialect: str = "reference",
) -> dict[str, Any]:
    """The job object exactly as `GET /jobs` and `GET /jobs/{id}` return it at `now`.

    In the integrator dialect some child jobs name their flow job `_parentJobId` instead of
    `_flowJobId`, and some finished jobs have no `purgeAt`."""
    flow = history.flows[history.flow[row]]
    kind = history.type[row]
    odd = history.odd[row]
    nulls = bool(odd & ODD_NULLS)
    status = status_at(history, row, now, cancel)
    start, end = history.started[row], end_of(history, row, cancel)
    started = start < end and now >= start
    finished = now >= end
    moment = end if finished else now
    done, of, last_tick = progress_at(history, row, moment)
    counts = history.final_counts(row)
    if done != of:
        counts = [value * done // of for value in counts]
    success, error, ignored, exported, generated, processed = counts

    job: dict[str, Any] = {
        "_id": history.job_id(row),
        "type": type_name(history, row, dialect),
        "status": status_name(history, row, status, dialect),
        "_integrationId": flow.integration_id,
        "_flowId": flow.id,
    }
    if kind == IMPORT:
        job["_importId"] = flow.import_ids[history.resource[row]]
    else:
        job["_exportId"] = flow.export_ids[history.resource[row]]
    if kind != FLOW:
        parent_key = "_parentJobId" if dialect == INTEGRATOR and row % 4 == 0 else "_flowJobId"
        job[parent_key] = history.job_id(history.parent[row])
    job["numSuccess"] = success
    job["numError"] = error
    if not odd & ODD_NO_IGNORE:
        job["numIgnore"] = ignored
    job["numExport"] = exported
    job["numPagesGenerated"] = generated
    job["numPagesProcessed"] = None if nulls and not processed else processed
    if kind == FLOW:
        # the flow's exports finish three fifths into its scheduled run
        exports_done = start + (history.ended[row] - start) * 3 // 5
        job["doneExporting"] = started and moment >= exports_done
    elif kind == EXPORT:
        job["doneExporting"] = status == COMPLETED
    job["flowExecutionGroupId"] = history.group_id(row)
    job["createdAt"] = iso(history.created[row])
    if started:
        job["startedAt"] = iso(start)
    elif nulls:
        job["startedAt"] = None
    if finished:
        job["endedAt"] = iso(end)
        job["lastModified"] = job["endedAt"]
        if dialect != INTEGRATOR or row % 9 != 4:
            job["purgeAt"] = iso(end + retention_ms)
    else:
        if nulls:
            job["endedAt"] = None
        job["lastModified"] = iso(last_tick if started else history.created[row])
        if nulls:
            job["purgeAt"] = None
    if status == CANCELED:
        job["canceledBy"] = cancel[1] if cancel else _canceled_by(history, row)
    if odd:
        _add_odd_fields(job, history, row, odd)
    return job


def resolution(num_error: int) -> tuple[int, bool]:
    """`numResolved` and `retriable` of a job that carries them: half its errors resolved,
    and retriable while some are not."""
    resolved = num_error // 2
    return resolved, num_error > resolved


def _canceled_by(history: History, row: int) -> str:
    root = history.parent[row]
    return USERS[(row if root < 0 else root) % len(USERS)]


def _add_odd_fields(job: dict[str, Any], history: History, row: int, odd: int) -> None:
    """Fields the reference does not list but real records carry now and then."""
    if odd & ODD_RESOLVED:
        job["numResolved"], job["retriable"] = resolution(job["numError"])
    if odd & ODD_TRIGGERED:
        job["triggeredBy"] = "scheduler" if row % 3 else USERS[row % len(USERS)]
    if odd & ODD_FILES:
        job["files"] = [
            {
                "id": f"{row:024x}",
                "name": f"{TYPES[history.type[row]]}-{row}.csv",
                "size": 120 * job["numExport"],
                "meta": {"contentType": "text/csv", "compressed": False},
            }
        ]
