"""The synthetic integrator.io account: what the Jobs API lists, returns and cancels at a moment.

Pure Python, no I/O and no clock of its own: every question takes `now_ms`, so the server,
the tests' ground truth and the benchmark all see the same account from the same history.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from typing import Any

from jobsync.simulator.filters import JobFilter
from jobsync.simulator.history import (
    COMPLETED,
    COUNT_FIELDS,
    DAY_MS,
    EXPORT,
    FLOW,
    IMPORT,
    MAX_CHILD_DELAY_MS,
    ODD_NO_IGNORE,
    ODD_RESOLVED,
    STATUSES,
    AccountConfig,
    generate_history,
)
from jobsync.simulator.render import (
    INTEGRATOR,
    Cancel,
    counts_at,
    end_of,
    render_job,
    resolution,
    status_at,
    status_name,
    type_name,
)

__all__ = ["Account", "AccountConfig", "CancelRefused", "JobNotFound"]

_NUM_IGNORE = COUNT_FIELDS.index("numIgnore")
_NUM_ERROR = COUNT_FIELDS.index("numError")


class JobNotFound(LookupError):
    """No such job at this moment: never created, not yet created, or purged."""


class CancelRefused(Exception):
    """A cancellation the API refuses; `code` is the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Account:
    """Flows and jobs of one synthetic account; only cancellations change it after it is built."""

    def __init__(self, config: AccountConfig | None = None) -> None:
        self.config = config or AccountConfig()
        self.history = generate_history(self.config)
        self.retention_ms = self.config.retention_days * DAY_MS
        self._cancels: dict[int, Cancel] = {}
        flows = self.history.flows
        self._flow_index = {flow.id: index for index, flow in enumerate(flows)}
        self._integration_flows: dict[str, list[int]] = {}
        self._export_owner: dict[str, tuple[int, int]] = {}
        self._import_owner: dict[str, tuple[int, int]] = {}
        for index, flow in enumerate(flows):
            self._integration_flows.setdefault(flow.integration_id, []).append(index)
            for number, export_id in enumerate(flow.export_ids):
                self._export_owner[export_id] = (index, number)
            for number, import_id in enumerate(flow.import_ids):
                self._import_owner[import_id] = (index, number)

    def __len__(self) -> int:
        """Every job ever generated, listed or not (future, purged) at any given moment."""
        return len(self.history)

    def flows(self, now_ms: int, dialect: str = "reference") -> list[dict[str, Any]]:
        """`GET /flows` at `now_ms`: every flow's `_id`, `name`, `_integrationId`, `disabled`
        and `lastModified`; in the integrator dialect also its current steps
        (`pageGenerators`, `pageProcessors`)."""
        flows = self.history.flows
        if dialect != INTEGRATOR:
            return [flow.as_dict(now_ms) for flow in flows]
        return [
            {
                **flow.as_dict(now_ms),
                "pageGenerators": [{"_exportId": e} for e in flow.export_ids],
                "pageProcessors": [
                    {"type": "import", "_importId": i} for i in flow.import_ids_at(now_ms)
                ],
            }
            for flow in flows
        ]

    def job(self, job_id: str, now_ms: int, dialect: str = "reference") -> dict[str, Any] | None:
        """`GET /jobs/{id}` at `now_ms`, or None (404)."""
        row = self._existing_row(job_id, now_ms)
        return None if row is None else self._render(row, now_ms, dialect)

    def listed_jobs(self, now_ms: int, dialect: str = "reference") -> dict[str, dict[str, Any]]:
        """Ground truth: every job the API lists at `now_ms` (in the integrator dialect, by
        several listings: top-level jobs by flow, child jobs by flow job or step)."""
        history = self.history
        rows = range(bisect_right(history.created, now_ms))
        return {
            history.job_id(row): self._render(row, now_ms, dialect)
            for row in rows
            if self._listed(row, now_ms)
        }

    def count_listed(self, now_ms: int) -> int:
        """How many jobs `listed_jobs(now_ms)` holds, without rendering them."""
        rows = range(bisect_right(self.history.created, now_ms))
        return sum(1 for row in rows if self._listed(row, now_ms))

    def list_jobs(
        self,
        query: JobFilter,
        now_ms: int,
        limit: int = 1001,
        shuffle: random.Random | None = None,
        dialect: str = "reference",
    ) -> list[dict[str, Any]]:
        """`GET /jobs`: up to `limit` matching jobs, newest first. With `shuffle`, jobs of one
        millisecond come in random order, and a page ending inside one takes a random subset.

        In the integrator dialect only top-level jobs are listed unless the query names a flow
        job or a step, and children listed by their flow job come without `_flowId` and
        `_integrationId`."""
        rows = self._matching_rows(query, now_ms, limit, dialect)
        if shuffle is not None:
            _shuffle_ties(rows, self.history.created, shuffle)
        jobs = [self._render(row, now_ms, dialect) for row in rows[:limit]]
        if dialect == INTEGRATOR and query.flow_job_ids is not None:
            for job in jobs:
                del job["_flowId"], job["_integrationId"]
        return jobs

    def cancel(
        self, job_id: str, now_ms: int, by: str, dialect: str = "reference"
    ) -> dict[str, Any]:
        """Cancel a running or queued flow job and its unfinished children; returns the job."""
        row = self._existing_row(job_id, now_ms)
        if row is None:
            raise JobNotFound(job_id)
        if self.history.type[row] != FLOW:
            raise CancelRefused("invalid_operation", "Only flow jobs can be canceled")
        status = self._status(row, now_ms)
        if status >= COMPLETED:
            raise CancelRefused("conflict", f"Cannot cancel {STATUSES[status]} job")
        self._cancels[row] = (now_ms, by)
        for child in self._child_rows(row):
            when = max(now_ms, self.history.created[child])
            if self._status(child, when) < COMPLETED:
                self._cancels[child] = (when, by)
        return self._render(row, now_ms, dialect)

    def _render(self, row: int, now_ms: int, dialect: str = "reference") -> dict[str, Any]:
        cancel = self._cancels.get(row)
        return render_job(self.history, row, now_ms, cancel, self.retention_ms, dialect)

    def _status(self, row: int, now_ms: int) -> int:
        return status_at(self.history, row, now_ms, self._cancels.get(row))

    def _purged(self, row: int, now_ms: int) -> bool:
        end = end_of(self.history, row, self._cancels.get(row))
        return now_ms >= end + self.retention_ms

    def _listed(self, row: int, now_ms: int) -> bool:
        return self.history.listed_from[row] <= now_ms and not self._purged(row, now_ms)

    def _existing_row(self, job_id: str, now_ms: int) -> int | None:
        row = self.history.row_of(job_id)
        if row is None or self.history.created[row] > now_ms or self._purged(row, now_ms):
            return None
        return row

    def _child_rows(self, row: int) -> list[int]:
        """Export and import jobs of a flow job: its flow's rows within a few ms after it."""
        history = self.history
        rows = history.by_flow[history.flow[row]]
        latest = history.created[row] + MAX_CHILD_DELAY_MS
        children = []
        for position in range(bisect_right(rows, row), len(rows)):
            child = rows[position]
            if history.created[child] > latest:
                break
            if history.parent[child] == row:
                children.append(child)
        return children

    def _matching_rows(
        self, query: JobFilter, now_ms: int, limit: int, dialect: str = "reference"
    ) -> list[int]:
        """Matching rows newest first: the first `limit`, plus the rest of the last one's
        millisecond (so that shuffling can pick any of them)."""
        created = self.history.created
        top = now_ms if query.created_lte is None else min(query.created_lte, now_ms)
        high = bisect_right(created, top)
        low = 0 if query.created_gte is None else bisect_left(created, query.created_gte)
        candidates = self._candidates(query, low, high)
        rows: list[int] = []
        boundary = None
        for row in candidates:
            if boundary is not None and created[row] != boundary:
                break
            if self._listed(row, now_ms) and self._matches(row, query, now_ms, dialect):
                rows.append(row)
                if boundary is None and len(rows) == limit:
                    boundary = created[row]
        return rows

    def _candidates(self, query: JobFilter, low: int, high: int) -> Iterable[int]:
        """Rows in [low, high) the resource filters allow, newest first, without scanning
        the whole account when flows narrow it down."""
        if high <= low:
            return ()
        flows = self._flows_allowed(query)
        if query.flow_job_ids is not None:
            parents = (self.history.row_of(job_id) for job_id in query.flow_job_ids)
            children = {
                child
                for parent in parents
                if parent is not None and self.history.type[parent] == FLOW
                for child in self._child_rows(parent)
                if low <= child < high and (flows is None or self.history.flow[child] in flows)
            }
            return sorted(children, reverse=True)
        if flows is None:
            return range(high - 1, low - 1, -1)
        per_flow = [self.history.by_flow[flow] for flow in sorted(flows)]
        return _merge_newest_first(per_flow, low, high)

    def _flows_allowed(self, query: JobFilter) -> set[int] | None:
        """Flows the resource filters leave (None: any); each filter narrows the set."""
        allowed: set[int] | None = None

        def narrow(flows: Iterable[int]) -> None:
            nonlocal allowed
            allowed = set(flows) if allowed is None else allowed & set(flows)

        if query.flow_ids is not None:
            narrow(self._flow_index[f] for f in query.flow_ids if f in self._flow_index)
        if query.integration_ids is not None:
            narrow(f for i in query.integration_ids for f in self._integration_flows.get(i, ()))
        if query.export_ids is not None:
            narrow(self._export_owner[e][0] for e in query.export_ids if e in self._export_owner)
        if query.import_ids is not None:
            narrow(self._import_owner[i][0] for i in query.import_ids if i in self._import_owner)
        return allowed

    def _matches(self, row: int, query: JobFilter, now_ms: int, dialect: str) -> bool:
        """The filters other than createdAt and the flows, which the candidates already obey."""
        history = self.history
        kind = history.type[row]
        if dialect == INTEGRATOR:
            listed = _LISTED_KIND[_listing_of(query)]
            if listed is not None and kind != listed:
                return False
        if query.types is not None and type_name(history, row, dialect) not in query.types:
            return False
        if query.statuses is not None:
            status = status_name(history, row, self._status(row, now_ms), dialect)
            if status not in query.statuses:
                return False
        if query.export_ids is not None:
            exports = history.flows[history.flow[row]].export_ids
            if kind == IMPORT or exports[history.resource[row]] not in query.export_ids:
                return False
        if query.import_ids is not None:
            imports = history.flows[history.flow[row]].import_ids
            if kind != IMPORT or imports[history.resource[row]] not in query.import_ids:
                return False
        if query.count_ranges:
            counts = counts_at(history, row, now_ms, self._cancels.get(row))
            for position, lowest, highest in query.count_ranges:
                if position == _NUM_IGNORE and history.odd[row] & ODD_NO_IGNORE:
                    return False  # a record without numIgnore matches no range on it
                if not lowest <= counts[position] <= highest:
                    return False
        if query.resolved_range is not None or query.retriable is not None:
            if not history.odd[row] & ODD_RESOLVED:
                return False  # nor does one without numResolved and retriable a filter on them
            counts = counts_at(history, row, now_ms, self._cancels.get(row))
            resolved, retriable = resolution(counts[_NUM_ERROR])
            lowest, highest = query.resolved_range or (-math.inf, math.inf)
            if not lowest <= resolved <= highest:
                return False
            if query.retriable is not None and retriable != query.retriable:
                return False
        return True


_LISTED_KIND: dict[str, int | None] = {
    "flow_job": None,
    "export": EXPORT,
    "import": IMPORT,
    "top": FLOW,
}


def _listing_of(query: JobFilter) -> str:
    """Which jobs an integrator.io listing holds: children of flow jobs, of one step, or
    top-level jobs only."""
    if query.flow_job_ids is not None:
        return "flow_job"
    if query.export_ids is not None:
        return "export"
    if query.import_ids is not None:
        return "import"
    return "top"


def _merge_newest_first(per_flow: Iterable[Any], low: int, high: int) -> Iterator[int]:
    """Merge per-flow row lists (ascending) into one descending stream within [low, high).

    Rows are numbered in createdAt order, so comparing rows compares creation times.
    """
    streams = [
        reversed(rows[bisect_left(rows, low) : bisect_left(rows, high)]) for rows in per_flow
    ]
    if len(streams) == 1:
        return iter(streams[0])
    return heapq.merge(*streams, reverse=True)


def _shuffle_ties(rows: list[int], created: Any, rng: random.Random) -> None:
    """Shuffle, in place, every run of rows that share a createdAt millisecond."""
    start = 0
    for end in range(1, len(rows) + 1):
        if end == len(rows) or created[rows[end]] != created[rows[start]]:
            if end - start > 1:
                group = rows[start:end]
                rng.shuffle(group)
                rows[start:end] = group
            start = end
