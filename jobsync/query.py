"""A listing query for `GET /jobs` and the one table that spells its filters.

The reference spells resource filters `flow_id`, `flow_id_in`, ...; integrator.io's public
docs spell them `_flowId`, `_flowId_in`, ... Everything else in jobsync uses the field
names of `JobQuery` and never a query parameter name.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from urllib.parse import urlencode

from jobsync.timestamps import format_iso_ms

FILTER_STYLES = ("reference", "integrator")

# JobQuery field -> query parameter name, per filter style. Fields not listed here
# (status, type, createdAt and count ranges) are spelled the same in both.
_RESOURCE_NAMES: dict[str, dict[str, str]] = {
    "reference": {
        "flow_id": "flow_id",
        "flow_ids": "flow_id_in",
        "integration_id": "integration_id",
        "export_id": "export_id",
        "import_id": "import_id",
        "flow_job_id": "flow_job_id",
        "types": "type_in",
    },
    "integrator": {
        "flow_id": "_flowId",
        "flow_ids": "_flowId_in",
        "integration_id": "_integrationId",
        "export_id": "_exportId",
        "import_id": "_importId",
        "flow_job_id": "_flowJobId",
        "types": "type_in",
    },
}
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
}


def parameter_names(style: str) -> dict[str, str]:
    """JobQuery field -> query parameter name in `style` ("reference" or "integrator")."""
    if style not in _RESOURCE_NAMES:
        raise ValueError(f"unknown filter style {style!r}; expected one of {FILTER_STYLES}")
    return {**_RESOURCE_NAMES[style], **_COMMON_NAMES}


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

    def params(self, style: str = "reference") -> list[tuple[str, str]]:
        """The query parameters, in field order; lists are comma-joined, times ISO with ms."""
        names = parameter_names(style)
        out: list[tuple[str, str]] = []
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None or value == ():
                continue
            if isinstance(value, tuple):
                text = ",".join(value)
            elif field.name.startswith("created_at"):
                text = format_iso_ms(value)
            else:
                text = str(value)
            out.append((names[field.name], text))
        return out

    def query_string(self, style: str = "reference") -> str:
        """The URL-encoded query string, without the leading `?`."""
        return urlencode(self.params(style))


def request_line_length(path: str, query: JobQuery, style: str) -> int:
    """Bytes in `GET <path>?<query> HTTP/1.1`: what the API's 8 KB limit (414) applies to."""
    qs = query.query_string(style)
    target = f"{path}?{qs}" if qs else path
    return len(f"GET {target} HTTP/1.1".encode())
