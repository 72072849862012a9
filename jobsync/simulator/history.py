"""The synthetic account's history: flows and every run they make, generated once from a seed.

Each job is a row across a few typed arrays (about 75 bytes a job, so 300k jobs stay small);
the rows are sorted by createdAt so that a row number orders jobs in time, and per-flow row
lists are kept for listings filtered by flow. Nothing here knows about "now": the state of a
job at a moment is computed from these rows by `jobsync.simulator.render`.
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial

from jobsync.timestamps import format_iso_ms, parse_iso_ms

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

FLOW, EXPORT, IMPORT = 0, 1, 2
TYPES = ("flow", "export", "import")
QUEUED, RUNNING, COMPLETED, FAILED, CANCELED = range(5)
STATUSES = ("queued", "running", "completed", "failed", "canceled")

# Bits of a job's `odd` column: the variations real records show now and then.
ODD_RESOLVED, ODD_TRIGGERED, ODD_FILES, ODD_NO_IGNORE, ODD_NULLS = 1, 2, 4, 8, 16
ODD_ALL = 31

COUNT_FIELDS = (
    "numSuccess",
    "numError",
    "numIgnore",
    "numExport",
    "numPagesGenerated",
    "numPagesProcessed",
)
COUNTS = len(COUNT_FIELDS)
MAX_CHILD_DELAY_MS = 4  # children are created this many ms after their flow job at most
USERS = ("ops@example.com", "ana.lopez@example.com", "dev@example.com", "scheduler@example.com")

_APPS = ("Salesforce", "NetSuite", "Shopify", "Zendesk", "HubSpot", "Jira", "SAP", "Snowflake")
_THINGS = ("Accounts", "Orders", "Invoices", "Contacts", "Items", "Tickets", "Payments", "Vendors")
_INTEGRATIONS = ("Order to Cash", "Customer Sync", "Finance", "Support", "Inventory", "Marketing")


@dataclass(frozen=True)
class AccountConfig:
    """Knobs of a synthetic account. The defaults give a small, realistic account; 200 flows
    over 35 days list about 300k jobs at the start moment."""

    seed: int = 1
    flows: int = 20
    days: int = 35
    future_days: int = 10
    start_ms: int = parse_iso_ms("2026-11-01T00:00:00.000Z")
    runs_per_flow_per_day: float = 16.25
    retention_days: int = 30
    integrations: int = 4
    disabled_share: float = 0.1
    burst_share: float = 0.25
    crowded_ms_jobs: int = 0
    late_share: float = 0.02
    long_running_share: float = 0.01
    odd_share: float = 0.02
    failure_share: float = 0.04
    cancel_share: float = 0.01
    edited_share: float = 0.0  # flows that lose their last import inside the history

    def __post_init__(self) -> None:
        if min(self.flows, self.integrations, self.retention_days) < 1:
            raise ValueError("flows, integrations and retention_days must be at least 1")
        if self.days < 0 or self.future_days < 0:
            raise ValueError("days and future_days must not be negative")
        if self.runs_per_flow_per_day <= 0 or self.crowded_ms_jobs < 0:
            raise ValueError("runs_per_flow_per_day must be > 0 and crowded_ms_jobs >= 0")
        shares = (self.disabled_share, self.burst_share, self.late_share)
        shares += (self.long_running_share, self.odd_share, self.failure_share)
        shares += (self.cancel_share, self.edited_share)
        if not all(0 <= share <= 1 for share in shares):
            raise ValueError("every *_share must be between 0 and 1")
        if self.failure_share + self.cancel_share > 1:
            raise ValueError("failure_share + cancel_share must not exceed 1")

    @property
    def crowded_ms(self) -> int:
        """The one millisecond that holds `crowded_ms_jobs` flow runs (two days before start)."""
        return self.start_ms - 2 * DAY_MS + 40_662_123


@dataclass(frozen=True)
class Flow:
    """A flow of the account, with the exports and imports its runs create jobs for.

    An edited flow loses its last import at `import_removed_ms`: runs from then on create no
    job for it, and `GET /flows` no longer lists it, while its earlier jobs stay listed.
    """

    id: str
    name: str
    integration_id: str
    disabled: bool
    export_ids: tuple[str, ...]
    import_ids: tuple[str, ...]  # every import it ever had, the removed one last
    created_ms: int
    import_removed_ms: int | None = None

    def import_ids_at(self, moment: int) -> tuple[str, ...]:
        """The imports of the flow at `moment` (a run then creates a job for each)."""
        removed = self.import_removed_ms
        edited = removed is not None and moment >= removed
        return self.import_ids[:-1] if edited else self.import_ids

    def last_modified_at(self, moment: int) -> int:
        """When the flow's steps last changed, as seen at `moment`."""
        removed = self.import_removed_ms
        return removed if removed is not None and moment >= removed else self.created_ms

    def as_dict(self, now_ms: int) -> dict[str, object]:
        return {
            "_id": self.id,
            "name": self.name,
            "_integrationId": self.integration_id,
            "disabled": self.disabled,
            "lastModified": format_iso_ms(self.last_modified_at(now_ms)),
        }


@dataclass
class History:
    """Every job ever created, one row per job, rows ordered by createdAt."""

    flows: list[Flow]
    created: array = field(default_factory=partial(array, "q"))
    started: array = field(default_factory=partial(array, "q"))  # >= ended: never started
    ended: array = field(default_factory=partial(array, "q"))
    listed_from: array = field(default_factory=partial(array, "q"))  # late jobs list later
    type: array = field(default_factory=partial(array, "b"))
    final: array = field(default_factory=partial(array, "b"))  # status once ended
    flow: array = field(default_factory=partial(array, "i"))
    parent: array = field(default_factory=partial(array, "i"))  # flow job's row, -1 for flows
    resource: array = field(default_factory=partial(array, "b"))  # index in export/import ids
    odd: array = field(default_factory=partial(array, "b"))
    counts: array = field(default_factory=partial(array, "i"))  # COUNTS per row, in a run
    by_flow: list[array] = field(default_factory=list)  # rows of each flow, ascending
    id_salt: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __post_init__(self) -> None:
        self._job_machine = f"{self.id_salt[0]:06x}"
        self._group_machine = f"{self.id_salt[2]:06x}"

    def __len__(self) -> int:
        return len(self.created)

    def columns(self) -> list[array]:
        """The one-value-per-row columns (`counts` holds COUNTS values per row)."""
        return [
            self.created,
            self.started,
            self.ended,
            self.listed_from,
            self.type,
            self.final,
            self.flow,
            self.parent,
            self.resource,
            self.odd,
        ]

    def final_counts(self, row: int) -> array:
        """The row's counts once it has ended, in COUNT_FIELDS order."""
        return self.counts[row * COUNTS : row * COUNTS + COUNTS]

    def job_id(self, row: int) -> str:
        """A Mongo-style id (creation second, machine, counter) that encodes the row."""
        return f"{self.created[row] // 1000:08x}{self._job_machine}{row ^ self.id_salt[1]:010x}"

    def group_id(self, row: int) -> str:
        """flowExecutionGroupId: one per run, derived from the flow job's row."""
        root = self.parent[row]
        root = row if root < 0 else root
        mask = self.id_salt[3]
        return f"{self.created[root] // 1000:08x}{self._group_machine}{root ^ mask:010x}"

    def row_of(self, job_id: str) -> int | None:
        """The row of a job id, or None when no job ever had it."""
        if len(job_id) != 24:
            return None
        try:
            row = int(job_id[14:], 16) ^ self.id_salt[1]
        except ValueError:
            return None
        if 0 <= row < len(self) and self.job_id(row) == job_id:
            return row
        return None


def generate_history(config: AccountConfig) -> History:
    """The account's flows and all their runs from `days` before start to `future_days` after."""
    rng = random.Random(config.seed)
    begin = config.start_ms - config.days * DAY_MS
    end = config.start_ms + config.future_days * DAY_MS
    flows = _make_flows(rng, config)
    if config.edited_share:  # drawn only then: unedited accounts keep their history
        flows = _edit_flows(rng, flows, round(len(flows) * config.edited_share), begin, end)
    salt = (rng.getrandbits(24), rng.getrandbits(40), rng.getrandbits(24), rng.getrandbits(40))
    history = History(flows=flows, id_salt=salt)
    runs = _Runs(rng, config, history)
    bursty = set(rng.sample(range(len(flows)), round(len(flows) * config.burst_share)))
    for index, flow in enumerate(flows):
        stop = end
        if flow.disabled:
            stop = min(end, config.start_ms - rng.randint(2 * DAY_MS, 20 * DAY_MS))
        if index in bursty:
            times = _burst_instants(config, begin, stop)
        else:
            times = _flow_schedule(rng, config, begin, stop)
        for created in times:
            runs.add(index, created)
    active = [index for index, flow in enumerate(flows) if not flow.disabled] or [0]
    for number in range(config.crowded_ms_jobs):
        outcome = rng.choices((COMPLETED, FAILED, CANCELED), (6, 2.5, 1.5))[0]
        runs.add(active[number % len(active)], config.crowded_ms, outcome)
    _sort_by_created(history)
    return history


def _object_id(rng: random.Random, seconds: int) -> str:
    return f"{seconds:08x}{rng.getrandbits(64):016x}"


def _make_flows(rng: random.Random, config: AccountConfig) -> list[Flow]:
    seconds = (config.start_ms - (config.days + 400) * DAY_MS) // 1000
    count = min(config.integrations, config.flows)
    integrations = [_object_id(rng, seconds + n) for n in range(count)]
    disabled = set(rng.sample(range(config.flows), round(config.flows * config.disabled_share)))
    flows = []
    for index in range(config.flows):
        source, target = rng.sample(_APPS, 2)
        integration = index % count
        name = f"{_INTEGRATIONS[integration % len(_INTEGRATIONS)]}: {source} "
        name += f"{rng.choice(_THINGS)} to {target} ({index + 1})"
        exports = 1 if rng.random() < 0.9 else 2
        imports = 1 if rng.random() < 0.85 else 2
        at = seconds + 86_400 + index * 600
        flows.append(
            Flow(
                id=_object_id(rng, at),
                name=name,
                integration_id=integrations[integration],
                disabled=index in disabled,
                export_ids=tuple(_object_id(rng, at + 1) for _ in range(exports)),
                import_ids=tuple(_object_id(rng, at + 2) for _ in range(imports)),
                created_ms=at * 1000,
            )
        )
    return flows


def _edit_flows(
    rng: random.Random, flows: list[Flow], count: int, begin: int, end: int
) -> list[Flow]:
    """`count` random flows get one more import, removed at a random moment of [begin, end):
    a step a user deleted, whose earlier jobs the API still lists."""
    edited = set(rng.sample(range(len(flows)), count))
    return [
        replace(
            flow,
            import_ids=(*flow.import_ids, _object_id(rng, flow.created_ms // 1000 + 3)),
            import_removed_ms=rng.randrange(begin, max(begin + 1, end)),
        )
        if index in edited
        else flow
        for index, flow in enumerate(flows)
    ]


def _burst_instants(config: AccountConfig, begin: int, stop: int) -> range:
    """Whole-minute instants shared by every bursty flow: one scheduler tick starts them all."""
    period = max(60_000, round(DAY_MS / config.runs_per_flow_per_day / 60_000) * 60_000)
    first = -(-begin // period) * period
    return range(first, stop, period)


def _flow_schedule(rng: random.Random, config: AccountConfig, begin: int, stop: int) -> list[int]:
    """Run times of one flow: a fixed period with jitter, or random (event-driven) arrivals."""
    mean_gap = DAY_MS / (config.runs_per_flow_per_day * rng.uniform(0.2, 1.8))
    times = []
    if rng.random() < 0.5:
        at = begin + rng.random() * mean_gap
        while at < stop:
            times.append(int(at) + rng.randrange(1000))
            at += mean_gap
    else:
        at = begin + rng.expovariate(1 / mean_gap)
        while at < stop:
            times.append(int(at))
            at += rng.expovariate(1 / mean_gap)
    return times


class _Runs:
    """Appends one run (a flow job and its export and import jobs) at a time."""

    def __init__(self, rng: random.Random, config: AccountConfig, history: History) -> None:
        self.rng = rng
        self.config = config
        self.history = history
        self.appends = [column.append for column in history.columns()]
        self.add_counts = history.counts.extend

    def add(self, flow_index: int, created: int, outcome: int | None = None) -> None:
        rng, config = self.rng, self.config
        flow = self.history.flows[flow_index]
        if outcome is None:
            draw = rng.random()
            outcome = COMPLETED
            if draw < config.failure_share:
                outcome = FAILED
            elif draw < config.failure_share + config.cancel_share:
                outcome = CANCELED
        queue, duration = self._timing()
        start = created + queue
        natural_end = start + duration
        cut = rng.randint(created + 5, natural_end - 1) if outcome == CANCELED else natural_end

        exports = _split(rng, _records(rng), len(flow.export_ids))
        total = sum(exports)
        page_size = (100, 200, 500, 1000)[flow_index % 4]
        pages_total = -(-total // page_size)
        children = []
        for number, records in enumerate(exports):
            child_created = created + rng.randrange(3)
            child_start = max(child_created, start)
            child_end = max(child_start + 1, start + duration * 3 // 5)
            counts = (records, 0, 0, records, -(-records // page_size), 0)
            children.append(
                (EXPORT, number, child_created, child_start, child_end, COMPLETED, counts)
            )
        imports = len(flow.import_ids_at(created))
        failing = imports - 1 if outcome == FAILED else -1
        for number in range(imports):
            child_created = created + 1 + rng.randrange(MAX_CHILD_DELAY_MS)
            child_start = max(child_created, start + duration // 5)
            child_end = max(child_start + 1, natural_end - rng.randrange(duration // 10))
            errors, ignored = _outcomes(rng, total, number == failing)
            counts = (max(0, total - errors - ignored), errors, ignored, 0, 0, pages_total)
            status = FAILED if number == failing else COMPLETED
            children.append((IMPORT, number, child_created, child_start, child_end, status, counts))

        # the flow job adds up its exports' records and pages and its imports' outcomes
        flow_counts = [0] * COUNTS
        for child in children:
            for column in (3, 4) if child[0] == EXPORT else (0, 1, 2, 5):
                flow_counts[column] += child[6][column]
        parent = len(self.history)
        self._append(created, start, cut, FLOW, outcome, flow_index, -1, 0, flow_counts)
        for kind, number, child_created, child_start, child_end, status, counts in children:
            if child_end > cut:
                # canceled with its run; a child that had not started never will
                child_end, status = cut, CANCELED
            self._append(
                child_created,
                min(child_start, child_end),
                child_end,
                kind,
                status,
                flow_index,
                parent,
                number,
                counts,
            )

    def _timing(self) -> tuple[int, int]:
        """Milliseconds queued, then running: seconds to minutes, or hours to days."""
        rng = self.rng
        if rng.random() < self.config.long_running_share:
            queue = rng.randint(HOUR_MS, 6 * HOUR_MS) if rng.random() < 0.5 else 0
            if rng.random() < 0.3:
                return queue, rng.randint(DAY_MS, 3 * DAY_MS)
            return queue, rng.randint(2 * HOUR_MS, 12 * HOUR_MS)
        queue = min(30_000, int(rng.expovariate(1 / 800)))
        return queue, int(math.exp(rng.uniform(math.log(2_000), math.log(900_000))))

    def _append(
        self,
        created: int,
        start: int,
        end: int,
        kind: int,
        final: int,
        flow: int,
        parent: int,
        resource: int,
        counts: Sequence[int],
    ) -> None:
        rng, config = self.rng, self.config
        listed = created
        if rng.random() < config.late_share:
            listed += rng.randint(60_000, 600_000)
        odd = rng.randint(1, ODD_ALL) if rng.random() < config.odd_share else 0
        values = (created, start, end, listed, kind, final, flow, parent, resource, odd)
        for append, value in zip(self.appends, values, strict=True):
            append(value)
        self.add_counts(counts)


def _records(rng: random.Random) -> int:
    """Records one run exports: often none or a few, sometimes many."""
    draw = rng.random()
    if draw < 0.12:
        return 0
    if draw < 0.6:
        return rng.randint(1, 100)
    if draw < 0.95:
        return rng.randint(100, 5_000)
    return rng.randint(5_000, 100_000)


def _split(rng: random.Random, total: int, parts: int) -> list[int]:
    if parts == 1:
        return [total]
    first = rng.randint(0, total)
    return [first, total - first]


def _outcomes(rng: random.Random, records: int, failing: bool) -> tuple[int, int]:
    """(errors, ignored) of one import; a failing import always has errors."""
    errors = 0
    if failing or rng.random() < 0.12:
        errors = rng.randint(1, max(1, records // 20))
    ignored = rng.randint(1, max(1, records // 5)) if rng.random() < 0.2 else 0
    ignored = max(0, min(ignored, records - errors))
    return errors, ignored


def _sort_by_created(history: History) -> None:
    """Reorder rows by createdAt (ties keep generation order: a flow job before its children)
    and build the per-flow row lists."""
    created = history.created
    order = sorted(range(len(created)), key=created.__getitem__)
    rank = array("i", bytes(4 * len(order)))
    for new, old in enumerate(order):
        rank[old] = new
    for column in history.columns():
        column[:] = array(column.typecode, map(column.__getitem__, order))
    history.counts = array("i", (value for old in order for value in history.final_counts(old)))
    parent = history.parent
    parent[:] = array("i", (rank[p] if p >= 0 else -1 for p in parent))
    by_flow = [array("i") for _ in history.flows]
    appends = [rows.append for rows in by_flow]
    for row, flow in enumerate(history.flow):
        appends[flow](row)
    history.by_flow = by_flow
