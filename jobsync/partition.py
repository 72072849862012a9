"""Partition planning: which flows go into one `flow_id_in` request, and which time windows
a backfill is cut into. Pure functions, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from jobsync.cursor import CursorState

DAY_MS = 86_400_000
REQUEST_LINE_LIMIT = 8192


@dataclass(frozen=True)
class Partition:
    """A flow batch x a time window [window_gte, window_lte] (ms, inclusive), with its cursor."""

    key: str
    flow_ids: tuple[str, ...]
    window_gte: int | None
    window_lte: int
    cursor: CursorState

    @classmethod
    def fresh(
        cls, key: str, flow_ids: tuple[str, ...], window_gte: int | None, window_lte: int
    ) -> Partition:
        """A partition not yet read: its cursor starts at the top of the window."""
        return cls(key, flow_ids, window_gte, window_lte, CursorState(window_lte))


def pack_flow_batches(
    flow_ids: Sequence[str],
    line_length: Callable[[tuple[str, ...]], int],
    limit: int = REQUEST_LINE_LIMIT,
    *,
    joins_with_commas: bool = False,
) -> list[tuple[str, ...]]:
    """Pack flows, in order, into batches whose longest request line stays within `limit`.

    `line_length(batch)` is the length of the longest request the crawler may send for a
    batch (window bounds and split filters included). Each flow joins the current batch if
    the batch's request line still fits, measured exactly: a list item costs a comma in one
    dialect and a whole indexed key (`_flowId_in[17]=`) in the other. Where the dialect
    `joins_with_commas` (`flow_id_in=a,b`), a flow id holding a comma (the API's to give) is
    a batch of its own: one flow is sent as `flow_id`, whole.
    """
    batches: list[tuple[str, ...]] = []
    current: tuple[str, ...] = ()
    for flow_id in flow_ids:
        if line_length((flow_id,)) > limit:
            raise ValueError(f"flow id too long for one request: {flow_id[:40]!r}...")
        if joins_with_commas and "," in flow_id:
            batches.append((flow_id,))
            continue
        if current and line_length((*current, flow_id)) > limit:
            batches.append(current)
            current = ()
        current = (*current, flow_id)
    if current:
        batches.append(current)
    return batches


def plan_windows(
    lo: int | None, hi: int, span_ms: int = DAY_MS, open_spans: int = 31
) -> list[tuple[int | None, int]]:
    """Cut [lo, hi] into windows of `span_ms`, oldest first, sharing no millisecond.

    At most `open_spans` windows reach back from `hi`; one window below them takes everything
    older (back to `lo`, or without bound for a first backfill), so a far `--since` does not
    cost a request per day of the past. Fetching the oldest windows first
    secures the jobs nearest their purge when a backfill is interrupted.
    """
    if lo is not None and lo > hi:
        return []
    floor = hi - open_spans * span_ms + 1
    if lo is None or lo < floor:  # one window below the last `open_spans` spans
        starts = [hi - k * span_ms + 1 for k in range(open_spans, 0, -1)]
        windows: list[tuple[int | None, int]] = [(lo, starts[0] - 1)]
    else:
        starts = list(range(lo, hi + 1, span_ms))
        windows = []
    for index, start in enumerate(starts):
        end = starts[index + 1] - 1 if index + 1 < len(starts) else hi
        windows.append((start, end))
    return windows


def plan_partitions(
    run_id: str,
    flow_ids: Sequence[str],
    planned_through: dict[str, int],
    *,
    until: int,
    since: int | None,
    overlap_ms: int,
    line_length: Callable[[tuple[str, ...]], int],
    span_ms: int = DAY_MS,
    open_spans: int = 31,
    joins_with_commas: bool = False,
) -> list[Partition]:
    """The new partitions of one run, oldest window first.

    A flow's window starts at `since` when given, else `overlap_ms` before where the last run
    planned through (re-reading jobs that were listed late), else nowhere (a full backfill).
    Flows that start at the same moment share `flow_id_in` batches (see pack_flow_batches).
    """
    starts: dict[int | None, list[str]] = {}
    for flow_id in flow_ids:
        if since is not None:
            start: int | None = since
        elif flow_id in planned_through:
            start = planned_through[flow_id] - overlap_ms
        else:
            start = None
        starts.setdefault(start, []).append(flow_id)
    partitions: list[Partition] = []
    for group, (start, flows) in enumerate(starts.items()):
        windows = plan_windows(start, until, span_ms, open_spans)
        batches = pack_flow_batches(flows, line_length, joins_with_commas=joins_with_commas)
        for batch_index, batch in enumerate(batches):
            for window_index, (gte, lte) in enumerate(windows):
                key = f"{run_id}-{group}-{batch_index}-{window_index}"
                partitions.append(Partition.fresh(key, batch, gte, lte))
    return sorted(partitions, key=lambda p: (p.window_lte, p.key))


def purge_first(
    partitions: Sequence[Partition], retention_ms: Mapping[str, int], default_ms: int
) -> list[Partition]:
    """Partitions in the order the API purges their jobs: a window's end plus the shortest
    retention of its flows (`retention_ms`, else `default_ms`). With one retention for every
    flow this is oldest window first."""

    def deadline(partition: Partition) -> tuple[int, str]:
        kept = min(retention_ms.get(flow, default_ms) for flow in partition.flow_ids)
        return partition.window_lte + kept, partition.key

    return sorted(partitions, key=deadline)
