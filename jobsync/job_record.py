"""The job fields jobsync stores, and `JobRecord`: a listed job decoded straight from the
page's JSON into typed fields, with no dict in between.

Decoding a page into dicts and then converting them was most of the event loop's time per
job (scripts/bench.py, ingest). A page whose records all plainly follow the normaliser's type
rules (see `jobsync.records`) is decoded by msgspec into JobRecords instead, each keeping its
own JSON text (`raw`) exactly as the API sent it; any other page is decoded into dicts as
before, and the normaliser's checking path says what is wrong with it. The crawl reads a
JobRecord like the dict it stands for (`get`, `[]`).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
import orjson

# (column, API field, kind), in the column order of `jobs`: the normaliser's rule per kind
# is in jobsync.records. `_id` and `createdAt` are required; flow_job_id falls back to
# `_parentJobId`.
JOB_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("id", "_id", "id"),
    ("type", "type", "string"),
    ("status", "status", "string"),
    ("integration_id", "_integrationId", "string"),
    ("flow_id", "_flowId", "string"),
    ("export_id", "_exportId", "string"),
    ("import_id", "_importId", "string"),
    ("flow_job_id", "_flowJobId", "string"),
    ("flow_execution_group_id", "flowExecutionGroupId", "string"),
    ("num_success", "numSuccess", "count"),
    ("num_error", "numError", "count"),
    ("num_ignore", "numIgnore", "count"),
    ("num_export", "numExport", "count"),
    ("num_pages_generated", "numPagesGenerated", "count"),
    ("num_pages_processed", "numPagesProcessed", "count"),
    ("num_resolved", "numResolved", "count"),
    ("retriable", "retriable", "boolean"),
    ("done_exporting", "doneExporting", "boolean"),
    ("canceled_by", "canceledBy", "string"),
    ("created_at", "createdAt", "time"),
    ("started_at", "startedAt", "time"),
    ("ended_at", "endedAt", "time"),
    ("last_modified", "lastModified", "time"),
    ("purge_at", "purgeAt", "time"),
)
REQUIRED_FIELDS = frozenset({"_id", "createdAt"})
PARENT_JOB_FIELD = "_parentJobId"

_INT64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_NON_EMPTY = Annotated[str, msgspec.Meta(min_length=1)]
# The plain form of each kind: what msgspec accepts without a word (no bools for counts, no
# floats, no strings of digits); anything else sends the page to the dict path.
_PLAIN_TYPE: dict[str, Any] = {
    "id": _NON_EMPTY,
    "string": str | None,
    "count": _INT64 | None,
    "boolean": bool | None,
    "time": str | None,
}
_ATTRIBUTE = {key: column for column, key, _ in JOB_FIELDS} | {PARENT_JOB_FIELD: "parent_job_id"}
_MISSING = object()


def _field(column: str, key: str, kind: str) -> tuple[str, Any, Any]:
    if key in REQUIRED_FIELDS:
        plain = _NON_EMPTY if kind == "id" else str
        return column, plain, msgspec.field(name=key)
    return column, _PLAIN_TYPE[kind], msgspec.field(name=key, default=None)


def _get(self: Any, key: str, default: Any = None) -> Any:
    """As `dict.get` on the record as sent: a field that is null, missing or not typed here
    is looked up in `raw` (rare: the crawl reads typed fields that are set)."""
    attribute = _ATTRIBUTE.get(key)
    if attribute is not None:
        value = getattr(self, attribute)
        if value is not None:
            return value
    return self.as_dict().get(key, default)


def _getitem(self: Any, key: str) -> Any:
    value = _get(self, key, _MISSING)
    if value is _MISSING:
        raise KeyError(key)
    return value


def _as_dict(self: Any) -> dict[str, Any]:
    """The record as the dict a JSON decoder makes of `raw`."""
    value: dict[str, Any] = orjson.loads(self.raw)
    return value


# `raw` is set from the page after decoding; a key of that name in a record is overwritten.
JobRecord = msgspec.defstruct(
    "JobRecord",
    [
        *(_field(*spec) for spec in JOB_FIELDS),
        ("parent_job_id", str | None, msgspec.field(name=PARENT_JOB_FIELD, default=None)),
        ("raw", bytes, msgspec.field(name="__jobsync_raw__", default=b"")),
    ],
    kw_only=True,
    gc=False,  # holds no containers, so no cycles: untracked, decoding is twice as fast
    namespace={"get": _get, "__getitem__": _getitem, "as_dict": _as_dict},
    module=__name__,
)
RAW_AT = len(JOB_FIELDS) + 1  # index of `raw` in a JobRecord's fields
PARENT_AT = len(JOB_FIELDS)

_PAGE = msgspec.json.Decoder(list[JobRecord])
_SLICES = msgspec.json.Decoder(list[msgspec.Raw])
# Records that one call decodes or converts. A call into C holds the GIL throughout, and
# the sync's writer, which takes the GIL back many times per statement, waits for whatever
# call the event loop is in: with a page's records decoded and transposed in single calls
# (0.6 to 0.9 ms and 0.25 to 0.5 ms), the writer waited 0.55-0.65 s for the GIL in a
# 300k-job ingest (scripts/bench.py; perf probes on take_gil), on the ingest's critical
# path. In calls of 256 records the same work costs as much CPU.
RECORDS_PER_CALL = 256


def decode_job_page(body: bytes) -> list[Any] | None:
    """The page's records as JobRecords, or None unless the body is a JSON list of objects
    whose known fields all have their plain type (the caller then decodes it into dicts)."""
    try:
        body.decode()  # msgspec does not check the UTF-8 of what it skips
        slices = _SLICES.decode(body)
        jobs: list[Any] = []
        for start in range(0, len(slices), RECORDS_PER_CALL):
            part = slices[start : start + RECORDS_PER_CALL]
            jobs += _PAGE.decode(b"[" + b",".join(part) + b"]")
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None  # RecursionError: nesting deeper than msgspec goes (orjson goes deeper)
    for job, raw in zip(jobs, slices, strict=True):
        job.raw = bytes(raw)
    return jobs


def is_record(value: Any) -> bool:
    """Whether a listed item is a job record (a JSON object), typed or not."""
    return isinstance(value, dict | JobRecord)


def as_dicts(records: list[Any]) -> list[Any]:
    """Listed items with each JobRecord as the dict it stands for."""
    return [r.as_dict() if isinstance(r, JobRecord) else r for r in records]
