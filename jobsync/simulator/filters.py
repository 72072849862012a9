"""The filters of one `GET /jobs` request, read from its query string in one dialect.

The reference spells resource filters `flow_id`, `flow_id_in`, ...; integrator.io spells
them `_flowId`, `_flowId_in`, ... List items may come comma-joined or as indexed keys
(`_flowId_in[0]=A&_flowId_in[1]=B`). Unknown parameters, including the other dialect's
spellings, are ignored, as the real API ignores a misspelled filter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from jobsync.dialect import DIALECTS, REFERENCE, Dialect
from jobsync.query import parameter_names
from jobsync.simulator.history import COUNT_FIELDS
from jobsync.timestamps import parse_iso_ms

_INDEXED = re.compile(r"^(.+)\[\d*\]$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")
_LIST_FIELDS = ("flow_ids", "types")
_SET_FIELDS = (
    "flow_id",
    "integration_id",
    "export_id",
    "import_id",
    "flow_job_id",
    "status",
    "type",
)
# JobQuery count fields -> position in the simulator's counts (COUNT_FIELDS order)
_COUNT_POSITIONS = {
    "num_success": COUNT_FIELDS.index("numSuccess"),
    "num_error": COUNT_FIELDS.index("numError"),
    "num_ignore": COUNT_FIELDS.index("numIgnore"),
    "num_export": COUNT_FIELDS.index("numExport"),
}
_RESOLVED = "num_resolved"  # not a stored count: derived from numError (render.py)
_BOOLEANS = {"true": True, "false": False}


class InvalidQuery(ValueError):
    """A filter value the API cannot read (400 `invalid_query`)."""


@dataclass(frozen=True)
class JobFilter:
    """What a listing must match. None = no constraint; an empty set matches nothing.

    `count_ranges` holds (count position, lowest, highest) with inclusive bounds;
    `resolved_range` is (lowest, highest) of numResolved.
    """

    flow_ids: frozenset[str] | None = None
    integration_ids: frozenset[str] | None = None
    export_ids: frozenset[str] | None = None
    import_ids: frozenset[str] | None = None
    flow_job_ids: frozenset[str] | None = None
    statuses: frozenset[str] | None = None
    types: frozenset[str] | None = None
    created_gte: int | None = None
    created_lte: int | None = None
    count_ranges: tuple[tuple[int, float, float], ...] = ()
    resolved_range: tuple[float, float] | None = None
    retriable: bool | None = None

    def names_resource_or_date(self) -> bool:
        """Whether a resource or a date narrows the listing (integrator.io requires one)."""
        resources = (self.flow_ids, self.integration_ids, self.export_ids, self.import_ids)
        named = any(r is not None for r in (*resources, self.flow_job_ids))
        return named or self.created_gte is not None or self.created_lte is not None

    def names_children(self) -> bool:
        """Whether it asks for child jobs the way integrator.io requires: by parent or step."""
        return any(r is not None for r in (self.flow_job_ids, self.export_ids, self.import_ids))


# dialect name -> (query parameter name -> JobQuery field)
_FIELD_OF = {
    name: {param: field for field, param in parameter_names(dialect).items()}
    for name, dialect in DIALECTS.items()
}


def parse_filter(items: Iterable[tuple[str, str]], dialect: Dialect = REFERENCE) -> JobFilter:
    """The filter of a query string's (name, value) pairs; raises InvalidQuery."""
    field_of = _FIELD_OF[dialect.name]
    sets: dict[str, set[str]] = {}
    lists: dict[str, set[str]] = {}
    gte: int | None = None
    lte: int | None = None
    lows: dict[str, float] = {}
    highs: dict[str, float] = {}
    retriable: bool | None = None
    for name, value in items:
        indexed = _INDEXED.match(name)
        field = field_of.get(indexed.group(1) if indexed else name)
        if field is None or value == "" or (indexed and field not in _LIST_FIELDS):
            continue
        if field in _LIST_FIELDS:
            lists.setdefault(field, set()).update(v.strip() for v in value.split(",") if v.strip())
        elif field in _SET_FIELDS:
            sets.setdefault(field, set()).add(value)
        elif field == "created_at_gte":
            moment = _timestamp(name, value)
            gte = moment if gte is None else max(gte, moment)
        elif field == "created_at_lte":
            moment = _timestamp(name, value)
            lte = moment if lte is None else min(lte, moment)
        elif field == "retriable":
            if value not in _BOOLEANS:
                raise InvalidQuery(f"{name} must be true or false; got {value[:64]!r}")
            retriable = _BOOLEANS[value]
        else:
            count = field[: -len("_gte")]
            number = _number(name, value)
            if field.endswith("_gte"):
                lows[count] = max(number, lows.get(count, -math.inf))
            else:
                highs[count] = min(number, highs.get(count, math.inf))

    def both(one: str, many: str) -> frozenset[str] | None:
        given = [sets[one]] if one in sets else []
        given += [lists[many]] if many in lists else []
        return frozenset(set.intersection(*given)) if given else None

    def single(field: str) -> frozenset[str] | None:
        return frozenset(sets[field]) if field in sets else None

    bounded = lows.keys() | highs.keys()

    return JobFilter(
        flow_ids=both("flow_id", "flow_ids"),
        integration_ids=single("integration_id"),
        export_ids=single("export_id"),
        import_ids=single("import_id"),
        flow_job_ids=single("flow_job_id"),
        statuses=single("status"),
        types=both("type", "types"),
        created_gte=gte,
        created_lte=lte,
        count_ranges=tuple(
            (_COUNT_POSITIONS[count], lows.get(count, -math.inf), highs.get(count, math.inf))
            for count in sorted(bounded - {_RESOLVED}, key=_COUNT_POSITIONS.__getitem__)
        ),
        resolved_range=(
            (lows.get(_RESOLVED, -math.inf), highs.get(_RESOLVED, math.inf))
            if _RESOLVED in bounded
            else None
        ),
        retriable=retriable,
    )


def _timestamp(name: str, value: str) -> int:
    try:
        return parse_iso_ms(value)
    except ValueError:
        raise InvalidQuery(
            f"{name} must be an ISO 8601 timestamp with a timezone, "
            f"e.g. 2024-01-15T10:00:00.000Z; got {value[:64]!r}"
        ) from None


def _number(name: str, value: str) -> float:
    if not _NUMBER.match(value.strip()):
        raise InvalidQuery(f"{name} must be a number; got {value[:64]!r}")
    return float(value)
