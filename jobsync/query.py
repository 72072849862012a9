"""A listing query for `GET /jobs`, spelled in a dialect's parameter names.

The reference spells resource filters `flow_id`, `flow_id_in`, ... and joins lists with
commas; integrator.io spells them `_flowId`, `_flowId_in`, ... and sends lists as indexed
keys (`_flowId_in[0]=A&_flowId_in[1]=B`). Everything else in jobsync uses the field names
of `JobQuery` and never a query parameter name.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from urllib.parse import urlencode

from jobsync.dialect import DIALECTS, REFERENCE, Dialect
from jobsync.timestamps import format_iso_ms

# JobQuery fields spelled the same in every dialect (resource filters are in the dialect).
_COMMON_NAMES = {
    "status": "status",
    "type": "type",
    "created_at_gte": "createdAt_gte",
    "created_at_lte": "createdAt_lte",
    "num_success_gte": "numSuccess_gte",
    "num_success_lte": "numSuccess_lte",
    "num_error_gte": "numError_gte",
    "num_error_lte": "numError_lte",
    "num_ignore_gte": "numIgnore_gte",
    "num_ignore_lte": "numIgnore_lte",
    "num_export_gte": "numExport_gte",
    "num_export_lte": "numExport_lte",
}
RESOURCE_FIELDS = ("flow_id", "flow_ids", "integration_id", "export_id", "import_id", "flow_job_id")
CHILD_FIELDS = ("export_id", "import_id", "flow_job_id")  # filters that list child jobs


def parameter_names(dialect: Dialect) -> dict[str, str]:
    """JobQuery field -> query parameter name in `dialect` (the filters it has)."""
    return {**dialect.resource_names, **_COMMON_NAMES, **dialect.own_filter_names}


@dataclass(frozen=True)
class JobQuery:
    """Filters of one `GET /jobs` request. Times are epoch milliseconds, both bounds inclusive."""

    flow_id: str | None = None
    flow_ids: tuple[str, ...] = ()
    integration_id: str | None = None
    export_id: str | None = None
    import_id: str | None = None
    flow_job_id: str | None = None
    status: str | None = None
    type: str | None = None
    types: tuple[str, ...] = ()
    created_at_gte: int | None = None
    created_at_lte: int | None = None
    num_success_gte: int | None = None
    num_success_lte: int | None = None
    num_error_gte: int | None = None
    num_error_lte: int | None = None
    num_ignore_gte: int | None = None
    num_ignore_lte: int | None = None
    num_export_gte: int | None = None
    num_export_lte: int | None = None
    num_resolved_gte: int | None = None  # integrator.io only, like `retriable`
    num_resolved_lte: int | None = None
    retriable: bool | None = None

    def params(self, dialect: Dialect = REFERENCE) -> list[tuple[str, str]]:
        """The query parameters, in field order; lists comma-joined or indexed as the dialect
        wants, times ISO 8601 with milliseconds (which every dialect accepts). A filter the
        dialect lacks is a ValueError: the API would ignore it and list too much."""
        names = parameter_names(dialect)
        out: list[tuple[str, str]] = []
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None or value == ():
                continue
            name = names.get(field.name)
            if name is None:
                spelled = _spelling(field.name)
                raise ValueError(f"the {dialect.name} dialect has no {spelled} filter")
            if isinstance(value, tuple) and dialect.indexed_lists:
                out.extend((f"{name}[{index}]", item) for index, item in enumerate(value))
                continue
            if isinstance(value, tuple):
                if any("," in item for item in value):  # pack_flow_batches keeps them apart
                    raise ValueError(f"{name}: an item holds a comma, which separates items")
                text = ",".join(value)
            elif field.name.startswith("created_at"):
                text = format_iso_ms(value)
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            out.append((name, text))
        return out

    def query_string(self, dialect: Dialect = REFERENCE) -> str:
        """The URL-encoded query string, without the leading `?`."""
        return urlencode(self.params(dialect))

    def has_resource_or_date(self) -> bool:
        """Whether the query names a resource or a date: integrator.io refuses one without."""
        named = (getattr(self, name) not in (None, ()) for name in RESOURCE_FIELDS)
        return any(named) or self.created_at_gte is not None or self.created_at_lte is not None


def _spelling(field: str) -> str:
    """A filter's parameter name in the dialect that has it."""
    return next(
        (d.own_filter_names[field] for d in DIALECTS.values() if field in d.own_filter_names),
        field,
    )


def request_line_length(path: str, query: JobQuery, dialect: Dialect) -> int:
    """Bytes in `GET <path>?<query> HTTP/1.1`: what the API's 8 KB limit (414) applies to."""
    qs = query.query_string(dialect)
    target = f"{path}?{qs}" if qs else path
    return len(f"GET {target} HTTP/1.1".encode())
