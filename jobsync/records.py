"""Raw job records (as decoded from the API's JSON) -> rows of the warehouse's `jobs` table,
or rejects that say why.

Nothing is guessed: a value of the wrong type makes its record a reject (kept, with its raw
text, in `rejects`) rather than a silent NULL, and every field, known or not, survives in
`raw`. The rules, per kind of field:

- the record must be a JSON object; `_id` a non-empty string; `createdAt` present and
  parseable, because the crawl's cursor stands on it;
- strings: a string or null; `type` and `status` keep values the reference does not list;
- counts: an integer within int64 (negative ones too: they are the API's to explain), an
  integral float (`5.0`), or a string of decimal digits (`"12"`: unambiguous, and `raw`
  keeps its spelling); never a boolean;
- booleans: true, false or null;
- timestamps: ISO 8601 strings that name their offset, stored as UTC milliseconds; a number
  is refused (seconds or milliseconds?), and so is a timestamp without a timezone;
- `flow_job_id` is `_flowJobId`, or `_parentJobId` when the record has no `_flowJobId`.

This is the sync's hot path. A page the client decoded into JobRecords (every known field of
its plain type, see jobsync.job_record) becomes columns straight from their fields, with
`raw` the record's text as the API sent it. A page of dicts whose records all plainly follow
the rules is converted by Arrow's C++ converters in one go. Any other page takes the checking
path, column by column, which finds each bad value and says why. All give the same rows
(`raw` aside, which the dict paths write as compact JSON).
"""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any

import msgspec
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from jobsync.job_record import (
    JOB_FIELDS,
    PARENT_AT,
    PARENT_JOB_FIELD,
    RAW_AT,
    RECORDS_PER_CALL,
    REQUIRED_FIELDS,
    JobRecord,
    as_dicts,
)
from jobsync.timestamps import FIRST_MS, LAST_MS, parse_iso_ms

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_DIGITS = re.compile(r"[+-]?[0-9]+")
_MAX_SHOWN = 80
_TIMESTAMP = pa.timestamp("ms", tz="UTC")
_NONE = type(None)
# ISO spellings with every field in range that Arrow's cast and `parse_iso_ms` read alike
# (other spellings take the checking path).
_PLAIN_ISO = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]"
    r":[0-5][0-9](\.[0-9]{1,3})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
# The one spelling the API writes, with its digits as zeros. A page's texts that all have it
# need no regex (0.41 ms for a page's 5,005 timestamps, against 0.05 for this check): Arrow's
# cast then refuses a field out of range, as the regex would (a day the month lacks too).
_API_SPELLING = b"0000-00-00T00:00:00.000Z"
_DIGITS_AS_ZEROS = bytes.maketrans(b"123456789", b"000000000")


class _Invalid(ValueError):
    """A value that breaks its field's rule; the message says how."""


def _short_repr() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxstring = short.maxother = _MAX_SHOWN
    short.maxlevel = 3
    return short


_SHORT = _short_repr()


def _show(value: Any) -> str:
    """A value for a reject's reason, short even when the value is huge or deep."""
    return _SHORT.repr(value)


def _job_id(value: Any) -> str:
    if type(value) is not str:
        raise _Invalid(f"expected a string, got {_show(value)}")
    if not value:
        raise _Invalid("is empty")
    return value


def _string(value: Any) -> str:
    if type(value) is not str:
        raise _Invalid(f"expected a string, got {_show(value)}")
    return value


def _count(value: Any) -> int:
    kind = type(value)
    if kind is int:
        number = value
    elif kind is float and value.is_integer():
        number = int(value)
    elif kind is str and _DIGITS.fullmatch(value):
        number = _decimal(value)
    else:
        raise _Invalid(f"expected an integer, got {_show(value)}")
    if number is None or not _INT64_MIN <= number <= _INT64_MAX:
        raise _Invalid(f"{_show(value)} is outside the 64-bit integer range")
    return number


def _decimal(text: str) -> int | None:
    """The value of a signed string of digits, or None when it has more digits than int64
    (Python would refuse to read thousands of them)."""
    significant = text.lstrip("+-").lstrip("0")
    if len(significant) > 19:
        return None
    number = int(significant or "0")
    return -number if text.startswith("-") else number


def _boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise _Invalid(f"expected true or false, got {_show(value)}")
    return value


def _timestamp(value: Any) -> int:
    if type(value) is not str:
        hint = " (seconds or milliseconds?)" if type(value) in (int, float) else ""
        raise _Invalid(f"expected an ISO 8601 string, got {_show(value)}{hint}")
    try:
        return parse_iso_ms(value)
    except ValueError as exc:
        # parse_iso_ms may quote a huge text whole, or not quote it at all.
        message = str(exc)
        if len(message) > 2 * _MAX_SHOWN:
            message = f"not an ISO 8601 timestamp: {_show(value)}"
        elif repr(value) not in message:
            message = f"{message}: {_show(value)}"
        raise _Invalid(message) from None


def _as_is(*kinds: type) -> Callable[[list[Any]], list[Any]]:
    """A column that needs no conversion when every value is already of `kinds` (or null)."""
    allowed = frozenset((*kinds, _NONE))

    def check(values: list[Any]) -> list[Any]:
        if not set(map(type, values)) <= allowed:
            raise ValueError("a value of another type")
        return values

    return check


def _ids(values: list[Any]) -> list[Any]:
    if "" in values:
        raise ValueError("an empty id")
    return _strings(values)


def _int64s(values: list[Any]) -> list[Any]:
    numbers = [value for value in _integers(values) if value is not None]
    if numbers and not (min(numbers) >= _INT64_MIN and max(numbers) <= _INT64_MAX):
        raise ValueError("a count out of range")
    return values


def _timestamps(values: list[Any]) -> list[Any]:
    return [None if value is None else parse_iso_ms(value) for value in values]


_strings = _as_is(str)
_integers = _as_is(int)


@dataclass(frozen=True, slots=True)
class _Kind:
    """How one kind of field is checked: `convert` is the rule for one value, with a reason
    when it fails; `bulk` converts a whole column in one go when every value is plainly good
    (the common case) and raises ValueError otherwise, never accepting what `convert` refuses."""

    arrow: pa.DataType
    convert: Callable[[Any], Any]
    bulk: Callable[[list[Any]], list[Any]]


_ID = _Kind(pa.string(), _job_id, _ids)
_STRING = _Kind(pa.string(), _string, _strings)
_COUNT = _Kind(pa.int64(), _count, _int64s)
_BOOLEAN = _Kind(pa.bool_(), _boolean, _as_is(bool))
_TIME = _Kind(_TIMESTAMP, _timestamp, _timestamps)

_KINDS = {"id": _ID, "string": _STRING, "count": _COUNT, "boolean": _BOOLEAN, "time": _TIME}
# (column, API field, kind), in the column order of `jobs`; flow_job_id and raw are special.
_FIELDS: tuple[tuple[str, str, _Kind], ...] = tuple(
    (column, key, _KINDS[kind]) for column, key, kind in JOB_FIELDS
)

_COUNT_KEYS = tuple(key for _, key, kind in _FIELDS if kind is _COUNT)
_INT_OR_NULL = frozenset({int, _NONE})
_PLAIN_STRUCT = pa.struct(
    [
        *((key, pa.string() if kind is _TIME else kind.arrow) for _, key, kind in _FIELDS),
        (PARENT_JOB_FIELD, pa.string()),
    ]
)

JOB_COLUMNS: tuple[str, ...] = (*(column for column, _, _ in _FIELDS), "raw")
_FLOW_JOB_AT = JOB_COLUMNS.index("flow_job_id")
_TIME_AT = tuple(at for at, (_, _, kind) in enumerate(_FIELDS) if kind is _TIME)
_MODIFIED_AT = JOB_COLUMNS.index("last_modified")
JOB_ARROW_SCHEMA = pa.schema(
    [
        *(
            pa.field(column, kind.arrow, nullable=key not in REQUIRED_FIELDS)
            for column, key, kind in _FIELDS
        ),
        pa.field("raw", pa.string(), nullable=False),
    ]
)


@dataclass(frozen=True, slots=True)
class Reject:
    """A record that could not become a row: its text (JSON where possible) and why."""

    raw: str
    reason: str


@dataclass(frozen=True, slots=True)
class NormalisedPage:
    """One page, normalised: `rows` (JOB_ARROW_SCHEMA), their `ids` in row order, the
    `rejects`, and how many records were `duplicates` of a row kept. Every one of the
    `count` records is exactly one of: a row, a reject, a duplicate."""

    rows: pa.Table
    ids: list[str]
    rejects: list[Reject]
    count: int
    duplicates: int


def normalise_page(records: list[Any]) -> NormalisedPage:
    """Rows and rejects of one page of raw records (dicts, other JSON values, JobRecords).

    Within the page, records that share an `_id` collapse to one row: the one with the
    latest `lastModified` (a missing one counts as oldest); on a tie, the later in the page.
    """
    if records and all(type(record) is JobRecord for record in records):
        typed = _typed_page(records)
        if typed is not None:
            return typed
    records = as_dicts(records)
    plain = _plain_page(records)
    return plain if plain is not None else _checked_page(records)


def _typed_page(jobs: list[Any]) -> NormalisedPage | None:
    """The page of JobRecords (every known field of its plain type, see jobsync.job_record)
    as columns, or None when an id repeats or a timestamp is not in the API's spelling."""
    columns = _columns(jobs)
    ids = columns[0]
    if len(set(ids)) != len(ids):
        return None
    # every timestamp of the page in one array: one check and one cast, not one per field
    texts = chain.from_iterable(columns[at] for at in _TIME_AT)
    moments = _plain_timestamps(pa.array(list(texts), type=pa.string()))
    if moments is None:
        return None
    size = len(jobs)
    arrays = [
        moments.slice(_TIME_AT.index(at) * size, size)
        if kind is _TIME
        else pa.array(values, type=kind.arrow)
        for at, (values, (_, _, kind)) in enumerate(zip(columns, _FIELDS, strict=False))
    ]
    parents = columns[PARENT_AT]
    if any(parent is not None for parent in parents):
        own = arrays[_FLOW_JOB_AT]
        arrays[_FLOW_JOB_AT] = pc.coalesce(own, pa.array(parents, type=pa.string()))
    # The texts are slices of a body that decode_job_page found to be UTF-8: checked in
    # place, not copied by a cast (0.1 ms a page against 0.28).
    raws = pa.array(columns[RAW_AT], type=pa.binary()).view(pa.string())
    raws.validate(full=True)
    arrays.append(raws)
    return NormalisedPage(
        rows=pa.Table.from_arrays(arrays, schema=JOB_ARROW_SCHEMA),
        ids=ids,
        rejects=[],
        count=len(jobs),
        duplicates=0,
    )


def _columns(jobs: list[Any]) -> list[list[Any]]:
    """The JobRecords' fields as columns, transposed RECORDS_PER_CALL records a call."""
    parts = []
    for start in range(0, len(jobs), RECORDS_PER_CALL):
        rows = map(msgspec.structs.astuple, jobs[start : start + RECORDS_PER_CALL])
        parts.append(list(zip(*rows, strict=True)))
    fields = range(len(JobRecord.__struct_fields__))
    return [list(chain.from_iterable(part[at] for part in parts)) for at in fields]


def _checked_page(records: list[Any]) -> NormalisedPage:
    """The checking path: every value against its rule, one column at a time."""
    rejected: list[tuple[int, Reject]] = []
    jobs, raws, positions = _objects(records, rejected)
    problems: dict[int, list[str]] = {}
    columns = [_column(jobs, key, kind, problems) for _, key, kind in _FIELDS]
    _fill_flow_job_id(jobs, columns, problems)
    for index, reasons in problems.items():
        raw = raws[index].decode()
        rejected.append((positions[index], Reject(raw, "; ".join(reasons))))
    keep = _keep(columns, problems)
    ids = columns[0] if keep is None else [columns[0][index] for index in keep]
    arrays = [
        pa.array(values, type=kind.arrow)
        for values, (_, _, kind) in zip(columns, _FIELDS, strict=True)
    ]
    arrays.append(pa.array(raws, type=pa.binary()).cast(pa.string()))
    rows = pa.Table.from_arrays(arrays, schema=JOB_ARROW_SCHEMA)
    if keep is not None:
        rows = rows.take(pa.array(keep, type=pa.int64()))
    rejected.sort(key=lambda item: item[0])
    return NormalisedPage(
        rows=rows,
        ids=ids,
        rejects=[reject for _, reject in rejected],
        count=len(records),
        duplicates=len(jobs) - len(problems) - len(ids),
    )


def _plain_page(records: list[Any]) -> NormalisedPage | None:
    """The page converted by Arrow in one go, or None unless every record plainly follows
    the rules: objects, unique ids, JSON-writable, counts that are ints, timestamps in the
    API's own spelling. Never accepts what the checking path would refuse."""
    if not all(type(record) is dict for record in records):
        return None
    # Arrow truncates fractional floats into int64 fields: counts must be ints (or null).
    for key in _COUNT_KEYS:
        if not set(map(type, map(dict.get, records, repeat(key)))) <= _INT_OR_NULL:
            return None
    try:
        raws = [orjson.dumps(record) for record in records]
        struct = pa.array(records, type=_PLAIN_STRUCT)
    except (TypeError, ValueError, OverflowError, pa.ArrowException):
        return None
    ids = struct.field("_id")
    if ids.null_count or struct.field("createdAt").null_count:
        return None
    if len(ids) and (
        pc.min(pc.utf8_length(ids)).as_py() == 0 or pc.count_distinct(ids).as_py() != len(ids)
    ):
        return None
    arrays: list[pa.Array] = []
    for column, key, kind in _FIELDS:
        values = struct.field(key)
        if kind is _TIME:
            values = _plain_timestamps(values)
            if values is None:
                return None
        elif column == "flow_job_id":
            values = pc.coalesce(values, struct.field(PARENT_JOB_FIELD))
        arrays.append(values)
    arrays.append(pa.array(raws, type=pa.binary()).cast(pa.string()))
    return NormalisedPage(
        rows=pa.Table.from_arrays(arrays, schema=JOB_ARROW_SCHEMA),
        ids=ids.to_pylist(),
        rejects=[],
        count=len(records),
        duplicates=0,
    )


def _plain_timestamps(texts: pa.Array) -> pa.Array | None:
    """UTC milliseconds of ISO texts in the API's spelling, or None when any text is spelled
    otherwise or falls outside the range `parse_iso_ms` accepts."""
    if texts.null_count == len(texts):
        return pa.nulls(len(texts), type=_TIMESTAMP)
    if (
        not _in_api_spelling(texts)
        and not pc.all(pc.match_substring_regex(texts, _PLAIN_ISO)).as_py()
    ):
        return None
    try:
        moments = texts.cast(_TIMESTAMP)
    except pa.ArrowException:
        return None  # a day the month does not have
    first, last = pc.min_max(moments.cast(pa.int64())).values()
    if first.as_py() < FIRST_MS or last.as_py() > LAST_MS:
        return None
    return moments


def _in_api_spelling(texts: pa.Array) -> bool:
    """Whether every text that is not null reads like `_API_SPELLING`, digit for digit: one
    pass over the texts' bytes, every digit made a zero."""
    shortest, longest = pc.min_max(pc.binary_length(texts)).values()
    if shortest.as_py() != len(_API_SPELLING) or longest.as_py() != len(_API_SPELLING):
        return False
    _, offsets, data = texts.buffers()
    ends = memoryview(offsets).cast("i")  # int32: where each text ends in `data`
    spelled = data[ends[texts.offset] : ends[texts.offset + len(texts)]].to_pybytes()
    count = len(texts) - texts.null_count
    return spelled.translate(_DIGITS_AS_ZEROS) == _API_SPELLING * count


def normalise_job(record: Any) -> dict[str, Any] | Reject:
    """One record as a row (column -> value; timestamps as aware UTC datetimes) or a
    Reject: the page rules applied to a page of one."""
    page = normalise_page([record])
    return page.rejects[0] if page.rejects else page.rows.to_pylist()[0]


def _objects(
    records: list[Any], rejected: list[tuple[int, Reject]]
) -> tuple[list[dict[str, Any]], list[bytes], list[int]]:
    """The records that are JSON objects, their JSON text, and their places in the page;
    the others go to `rejected`."""
    if all(type(record) is dict for record in records):
        try:
            return records, [orjson.dumps(record) for record in records], list(range(len(records)))
        except TypeError:
            pass  # some record orjson cannot write: sort them out one by one
    jobs: list[dict[str, Any]] = []
    raws: list[bytes] = []
    positions: list[int] = []
    for position, record in enumerate(records):
        try:
            raw = _dump(record)
        except ValueError as exc:
            reason = f"record cannot be written as JSON: {exc}"
            rejected.append((position, Reject(repr(record), reason)))
            continue
        if type(record) is dict:
            jobs.append(record)
            raws.append(raw)
            positions.append(position)
        else:
            reason = f"record is not an object ({type(record).__name__})"
            rejected.append((position, Reject(raw.decode(), reason)))
    return jobs, raws, positions


def _dump(record: Any) -> bytes:
    """The record as compact JSON; ValueError says why when it has no JSON spelling."""
    try:
        return orjson.dumps(record)
    except TypeError as exc:
        problem = str(exc)
    # orjson refuses integers beyond 64 bits, which Python's own JSON decoder produces.
    try:
        text = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode()
    except (TypeError, ValueError, RecursionError):
        raise ValueError(problem) from None


def _column(
    jobs: list[dict[str, Any]], key: str, kind: _Kind, problems: dict[int, list[str]]
) -> list[Any]:
    """The column of field `key`; a value that breaks its rule becomes None and a problem of
    its record."""
    values = [job.get(key) for job in jobs]
    if key in REQUIRED_FIELDS and None in values:
        for index, value in enumerate(values):
            if value is None:
                problems.setdefault(index, []).append(f"missing {key}")
    try:
        return kind.bulk(values)
    except ValueError:
        pass  # at least one bad value: find each and say why
    convert = kind.convert
    converted: list[Any] = []
    for index, value in enumerate(values):
        try:
            converted.append(None if value is None else convert(value))
        except _Invalid as exc:
            problems.setdefault(index, []).append(f"{key}: {exc}")
            converted.append(None)
    return converted


def _fill_flow_job_id(
    jobs: list[dict[str, Any]], columns: list[list[Any]], problems: dict[int, list[str]]
) -> None:
    """Falls back to `_parentJobId` where `_flowJobId` is missing; both must be strings."""
    parents = _column(jobs, PARENT_JOB_FIELD, _STRING, problems)
    if not any(value is not None for value in parents):
        return
    columns[_FLOW_JOB_AT] = [
        own if own is not None else parent
        for own, parent in zip(columns[_FLOW_JOB_AT], parents, strict=True)
    ]


def _keep(columns: list[list[Any]], problems: dict[int, list[str]]) -> list[int] | None:
    """Indices of the rows to keep, in page order, or None when every row stays."""
    ids = columns[0]
    if not problems and len(set(ids)) == len(ids):
        return None
    modified = columns[_MODIFIED_AT]
    best: dict[str, int] = {}
    for index, job_id in enumerate(ids):
        if index in problems:
            continue
        held = best.get(job_id)
        if held is None or not _older(modified[index], modified[held]):
            best[job_id] = index
    return sorted(best.values())


def _older(candidate: int | None, held: int | None) -> bool:
    """Whether a duplicate's lastModified loses to the one held (None is the oldest)."""
    if candidate is None:
        return held is not None
    return held is not None and candidate < held
