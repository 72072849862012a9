"""How to learn how unfinished jobs ended: list them again or fetch them one by one.

A job that was queued or running when last seen must be read again. `GET /jobs/{id}` costs
one request per job; listing a flow batch over the span in which its unfinished jobs were
created costs one request per page of the jobs stored in that span. Unfinished jobs cluster
(a flow job and its running children, tonight's scheduled runs), so listing usually wins;
each batch takes whichever is cheaper. Pure planning, no I/O.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from jobsync.partition import Partition
from jobsync.store import Unfinished


@dataclass
class RefreshPlan:
    """Listings to crawl, each with the unfinished ids it should bring back, and the ids to
    fetch one by one."""

    listings: list[Partition] = field(default_factory=list)
    targets: dict[str, set[str]] = field(default_factory=dict)
    job_ids: list[str] = field(default_factory=list)


def plan_refresh(
    unfinished: Sequence[Unfinished],
    batches: Callable[[list[str]], list[tuple[str, ...]]],
    stored: Callable[[tuple[str, ...], int, int], int],
    page_size: int,
    key_prefix: str,
) -> RefreshPlan:
    """`batches(flows)` packs flows into request-sized batches; `stored(batch, gte, lte)`
    counts the stored jobs a listing of that span would bring back."""
    plan = RefreshPlan()
    by_flow: defaultdict[str, list[Unfinished]] = defaultdict(list)
    for job in unfinished:
        if job.flow_id is None:
            plan.job_ids.append(job.job_id)  # no flow to list it by
        else:
            by_flow[job.flow_id].append(job)
    for number, batch in enumerate(batches(sorted(by_flow))):
        jobs = [job for flow_id in batch for job in by_flow[flow_id]]
        gte = min(job.created_ms for job in jobs)
        lte = max(job.created_ms for job in jobs)
        pages = stored(batch, gte, lte) // page_size + 1
        if pages < len(jobs):
            key = f"{key_prefix}-refresh-{number}"
            plan.listings.append(Partition.fresh(key, batch, gte, lte))
            plan.targets[key] = {job.job_id for job in jobs}
        else:
            plan.job_ids.extend(job.job_id for job in jobs)
    return plan
