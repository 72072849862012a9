"""Raw job records -> warehouse rows or rejects: every rule, one value at a time, then
properties over generated records (valid ones round-trip, anything else never crashes and
every record ends as exactly one row, one reject or one superseded duplicate)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import orjson
import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jobsync.job_record import decode_job_page
from jobsync.records import (
    JOB_ARROW_SCHEMA,
    JOB_COLUMNS,
    NormalisedPage,
    Reject,
    _checked_page,
    _in_api_spelling,
    _plain_page,
    _plain_timestamps,
    normalise_job,
    normalise_page,
)
from jobsync.schema_files import schema_text
from jobsync.timestamps import parse_iso_ms

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
AMBIGUOUS = "(seconds or milliseconds?)"

JOB: dict[str, Any] = {
    "_id": "job123",
    "type": "export",
    "status": "completed",
    "_integrationId": "int123",
    "_flowId": "flow123",
    "_exportId": "exp123",
    "_importId": "imp123",
    "_flowJobId": "flowjob123",
    "flowExecutionGroupId": "group123",
    "numSuccess": 100,
    "numError": 2,
    "numIgnore": 5,
    "numExport": 107,
    "numPagesGenerated": 2,
    "numPagesProcessed": 3,
    "numResolved": 1,
    "retriable": False,
    "doneExporting": True,
    "canceledBy": "user@example.com",
    "createdAt": "2024-01-15T10:00:00.000Z",
    "startedAt": "2024-01-15T10:00:01.000Z",
    "endedAt": "2024-01-15T10:05:00.000Z",
    "lastModified": "2024-01-15T10:05:00.500Z",
    "purgeAt": "2024-02-14T10:05:00.000Z",
}

# API field -> column, for every field that has a column of its own.
STRING_FIELDS = {
    "_id": "id",
    "type": "type",
    "status": "status",
    "_integrationId": "integration_id",
    "_flowId": "flow_id",
    "_exportId": "export_id",
    "_importId": "import_id",
    "_flowJobId": "flow_job_id",
    "flowExecutionGroupId": "flow_execution_group_id",
    "canceledBy": "canceled_by",
}
COUNT_FIELDS = {
    "numSuccess": "num_success",
    "numError": "num_error",
    "numIgnore": "num_ignore",
    "numExport": "num_export",
    "numPagesGenerated": "num_pages_generated",
    "numPagesProcessed": "num_pages_processed",
    "numResolved": "num_resolved",
}
BOOLEAN_FIELDS = {"retriable": "retriable", "doneExporting": "done_exporting"}
TIME_FIELDS = {
    "createdAt": "created_at",
    "startedAt": "started_at",
    "endedAt": "ended_at",
    "lastModified": "last_modified",
    "purgeAt": "purge_at",
}
OPTIONAL_FIELDS = sorted(
    {**STRING_FIELDS, **COUNT_FIELDS, **BOOLEAN_FIELDS, **TIME_FIELDS}.keys() - {"_id", "createdAt"}
)


def job(**changes: Any) -> dict[str, Any]:
    """JOB with fields replaced; a value of `...` removes the field."""
    record = {**JOB, **changes}
    return {key: value for key, value in record.items() if value is not ...}


def row_of(record: Any) -> dict[str, Any]:
    result = normalise_job(record)
    assert isinstance(result, dict), result
    return result


def reason_of(record: Any) -> str:
    result = normalise_job(record)
    assert isinstance(result, Reject), result
    return result.reason


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# --- the table -----------------------------------------------------------------------------


def test_columns_are_the_warehouse_columns_in_order() -> None:
    ddl = schema_text("warehouse.sql")
    body = ddl.split("CREATE TABLE IF NOT EXISTS jobs (", 1)[1].split(");", 1)[0]
    columns = [re.match(r"\s*(\w+)", line).group(1) for line in body.strip().splitlines()]
    assert columns[: len(JOB_COLUMNS)] == list(JOB_COLUMNS)
    assert columns[len(JOB_COLUMNS) :] == ["first_seen_at", "last_synced_at"]


def test_arrow_schema_types() -> None:
    assert JOB_ARROW_SCHEMA.names == list(JOB_COLUMNS)
    types = {field.name: field.type for field in JOB_ARROW_SCHEMA}
    assert {types[c] for c in STRING_FIELDS.values()} == {pa.string()}
    assert {types[c] for c in COUNT_FIELDS.values()} == {pa.int64()}
    assert {types[c] for c in BOOLEAN_FIELDS.values()} == {pa.bool_()}
    assert {types[c] for c in TIME_FIELDS.values()} == {pa.timestamp("ms", tz="UTC")}
    assert types["raw"] == pa.string()
    required = {field.name for field in JOB_ARROW_SCHEMA if not field.nullable}
    assert required == {"id", "created_at", "raw"}


def test_a_full_record_fills_every_column() -> None:
    assert row_of(JOB) == {
        "id": "job123",
        "type": "export",
        "status": "completed",
        "integration_id": "int123",
        "flow_id": "flow123",
        "export_id": "exp123",
        "import_id": "imp123",
        "flow_job_id": "flowjob123",
        "flow_execution_group_id": "group123",
        "num_success": 100,
        "num_error": 2,
        "num_ignore": 5,
        "num_export": 107,
        "num_pages_generated": 2,
        "num_pages_processed": 3,
        "num_resolved": 1,
        "retriable": False,
        "done_exporting": True,
        "canceled_by": "user@example.com",
        "created_at": datetime(2024, 1, 15, 10, 0, tzinfo=UTC),
        "started_at": datetime(2024, 1, 15, 10, 0, 1, tzinfo=UTC),
        "ended_at": datetime(2024, 1, 15, 10, 5, tzinfo=UTC),
        "last_modified": datetime(2024, 1, 15, 10, 5, 0, 500000, tzinfo=UTC),
        "purge_at": datetime(2024, 2, 14, 10, 5, tzinfo=UTC),
        "raw": orjson.dumps(JOB).decode(),
    }


def test_the_page_table_has_the_schema_and_one_row_per_job() -> None:
    page = normalise_page([job(_id="a"), job(_id="b")])
    assert page.rows.schema == JOB_ARROW_SCHEMA
    assert page.rows.column("id").to_pylist() == ["a", "b"] == page.ids
    assert page.count == 2
    assert (page.rejects, page.duplicates) == ([], 0)


def test_an_empty_page() -> None:
    page = normalise_page([])
    assert page.rows.schema == JOB_ARROW_SCHEMA
    assert (page.rows.num_rows, page.ids, page.rejects, page.count) == (0, [], [], 0)


# --- raw -----------------------------------------------------------------------------------


def test_raw_is_the_record_as_sent_with_unknown_fields() -> None:
    record = job(newField={"nested": [1, 2.5, None, "ü"]}, type="flow", **{"weird key": True})
    raw = row_of(record)["raw"]
    assert raw == orjson.dumps(record).decode()
    assert orjson.loads(raw) == record
    assert list(orjson.loads(raw)) == list(record)  # field order too


def test_raw_keeps_what_the_columns_convert() -> None:
    record = job(numSuccess="12", numError=5.0, createdAt="2024-01-15T11:00:00+01:00")
    raw = orjson.loads(row_of(record)["raw"])
    assert (raw["numSuccess"], raw["numError"]) == ("12", 5.0)
    assert raw["createdAt"] == "2024-01-15T11:00:00+01:00"


def test_integers_beyond_64_bits_in_unknown_fields_survive_in_raw() -> None:
    # Python's own JSON decoder yields such ints; orjson cannot write them.
    record = job(bigNumber=2**80, alsoBig=[-(2**70)])
    raw = row_of(record)["raw"]
    assert json.loads(raw) == record


# --- required fields -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "raw", "kind"),
    [
        ([JOB], orjson.dumps([JOB]).decode(), "list"),
        ("job123", '"job123"', "str"),
        (42, "42", "int"),
        (None, "null", "NoneType"),
        (True, "true", "bool"),
    ],
)
def test_a_record_that_is_not_an_object_is_rejected(record: Any, raw: str, kind: str) -> None:
    assert normalise_job(record) == Reject(raw, f"record is not an object ({kind})")


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"_id": ...}, "missing _id"),
        ({"_id": None}, "missing _id"),
        ({"_id": ""}, "_id: is empty"),
        ({"_id": 123}, "_id: expected a string, got 123"),
        ({"_id": {"$oid": "x"}}, "_id: expected a string, got {'$oid': 'x'}"),
        ({"_id": True}, "_id: expected a string, got True"),
        ({"createdAt": ...}, "missing createdAt"),
        ({"createdAt": None}, "missing createdAt"),
    ],
)
def test_required_fields(changes: dict[str, Any], reason: str) -> None:
    record = job(**changes)
    assert normalise_job(record) == Reject(orjson.dumps(record).decode(), reason)


def test_only_id_and_created_at_are_required() -> None:
    row = row_of({"_id": "a", "createdAt": "2024-01-15T10:00:00.000Z"})
    assert row["id"] == "a"
    assert row["created_at"] == datetime(2024, 1, 15, 10, tzinfo=UTC)
    assert all(row[column] is None for column in set(JOB_COLUMNS) - {"id", "created_at", "raw"})


@pytest.mark.parametrize("field", OPTIONAL_FIELDS)
@pytest.mark.parametrize("value", [..., None])
def test_optional_fields_missing_or_null_are_null(field: str, value: Any) -> None:
    columns = {**STRING_FIELDS, **COUNT_FIELDS, **BOOLEAN_FIELDS, **TIME_FIELDS}
    assert row_of(job(**{field: value}))[columns[field]] is None


def test_every_problem_of_a_record_is_named() -> None:
    reason = reason_of(job(_id=..., numError="x", retriable="yes", endedAt=0))
    assert reason.split("; ") == [
        "missing _id",
        "numError: expected an integer, got 'x'",
        "retriable: expected true or false, got 'yes'",
        "endedAt: expected an ISO 8601 string, got 0 (seconds or milliseconds?)",
    ]


# --- strings -------------------------------------------------------------------------------


@pytest.mark.parametrize("field", [*STRING_FIELDS, "_parentJobId"])
@pytest.mark.parametrize("value", [5, 1.5, True, {"a": 1}, ["x"]])
def test_a_string_field_with_another_type_is_rejected(field: str, value: Any) -> None:
    assert reason_of(job(**{field: value})) == f"{field}: expected a string, got {value!r}"


@pytest.mark.parametrize("field", ["type", "status"])
def test_unknown_types_and_statuses_are_kept(field: str) -> None:
    assert row_of(job(**{field: "retrying"}))[field] == "retrying"


def test_empty_strings_other_than_id_are_kept() -> None:
    row = row_of(job(_flowId="", canceledBy=""))
    assert row["flow_id"] == "" == row["canceled_by"]


def test_flow_job_id_comes_from_flow_job_id_first() -> None:
    assert row_of(job(_parentJobId="parent"))["flow_job_id"] == "flowjob123"


def test_flow_job_id_falls_back_to_parent_job_id() -> None:
    assert row_of(job(_flowJobId=..., _parentJobId="parent"))["flow_job_id"] == "parent"
    assert row_of(job(_flowJobId=None, _parentJobId="parent"))["flow_job_id"] == "parent"
    assert row_of(job(_flowJobId=...))["flow_job_id"] is None


def test_huge_strings_are_kept_whole() -> None:
    huge = "x" * 5_000_000
    record = job(_id=huge, _flowId=huge, note=huge)
    row = row_of(record)
    assert row["id"] == huge == row["flow_id"]
    assert orjson.loads(row["raw"])["note"] == huge


def test_strings_with_any_unicode_are_kept() -> None:
    text = "ü\u0000\u2028😀\t\"'\\"
    row = row_of(job(_flowId=text, status=text))
    assert row["flow_id"] == text == row["status"]


# --- counts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (7, 7),
        (-3, -3),  # kept as the API sent it; raw says the same
        (INT64_MAX, INT64_MAX),
        (INT64_MIN, INT64_MIN),
        (5.0, 5),
        (-0.0, 0),
        (1e18, 10**18),
        ("12", 12),
        ("-12", -12),
        ("+12", 12),
        ("007", 7),
        ("0" * 5000 + "1", 1),
        ("9223372036854775807", INT64_MAX),
    ],
)
@pytest.mark.parametrize("field", list(COUNT_FIELDS))
def test_counts_accepted(field: str, value: Any, expected: int) -> None:
    result = row_of(job(**{field: value}))[COUNT_FIELDS[field]]
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (True, "expected an integer, got True"),
        (False, "expected an integer, got False"),
        ("abc", "expected an integer, got 'abc'"),
        ("", "expected an integer, got ''"),
        ("1.5", "expected an integer, got '1.5'"),
        ("12.0", "expected an integer, got '12.0'"),
        (" 12", "expected an integer, got ' 12'"),
        ("1_000", "expected an integer, got '1_000'"),
        ("١٢", "expected an integer, got '١٢'"),  # Arabic-Indic digits: int() would take them
        (5.5, "expected an integer, got 5.5"),
        (float("nan"), "expected an integer, got nan"),
        (float("inf"), "expected an integer, got inf"),
        ([1], "expected an integer, got [1]"),
        ({"n": 1}, "expected an integer, got {'n': 1}"),
        (2**63, "9223372036854775808 is outside the 64-bit integer range"),
        (INT64_MIN - 1, "-9223372036854775809 is outside the 64-bit integer range"),
        (1e19, "1e+19 is outside the 64-bit integer range"),
        ("9223372036854775808", "'9223372036854775808' is outside the 64-bit integer range"),
    ],
)
def test_counts_rejected(value: Any, problem: str) -> None:
    assert reason_of(job(numSuccess=value)) == f"numSuccess: {problem}"


def test_a_count_of_thousands_of_digits_is_rejected_briefly() -> None:
    reason = reason_of(job(numError="9" * 100_000))
    assert reason.startswith("numError: '999")
    assert reason.endswith("is outside the 64-bit integer range")
    assert len(reason) < 300


# --- booleans ------------------------------------------------------------------------------


@pytest.mark.parametrize("field", list(BOOLEAN_FIELDS))
@pytest.mark.parametrize("value", [True, False])
def test_booleans_accepted(field: str, value: bool) -> None:
    assert row_of(job(**{field: value}))[BOOLEAN_FIELDS[field]] is value


@pytest.mark.parametrize("field", list(BOOLEAN_FIELDS))
@pytest.mark.parametrize("value", [0, 1, "true", "false", "", 1.0, [], {}])
def test_booleans_rejected(field: str, value: Any) -> None:
    assert reason_of(job(**{field: value})) == f"{field}: expected true or false, got {value!r}"


# --- timestamps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-15T10:00:00.000Z", datetime(2024, 1, 15, 10, tzinfo=UTC)),
        ("2024-01-15T10:00:00Z", datetime(2024, 1, 15, 10, tzinfo=UTC)),
        ("2024-01-15T10:00:00.123Z", datetime(2024, 1, 15, 10, 0, 0, 123000, tzinfo=UTC)),
        ("2024-01-15T11:30:00.000+01:30", datetime(2024, 1, 15, 10, tzinfo=UTC)),
        ("2024-01-15T05:00:00.000-05:00", datetime(2024, 1, 15, 10, tzinfo=UTC)),
        ("2024-01-01T00:30:00+01:00", datetime(2023, 12, 31, 23, 30, tzinfo=UTC)),
    ],
)
@pytest.mark.parametrize("field", list(TIME_FIELDS))
def test_timestamps_with_a_timezone_become_utc(field: str, text: str, expected: datetime) -> None:
    value = row_of(job(**{field: text}))[TIME_FIELDS[field]]
    assert value == expected
    assert value.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (1705312800000, f"expected an ISO 8601 string, got 1705312800000 {AMBIGUOUS}"),
        (1705312800.5, f"expected an ISO 8601 string, got 1705312800.5 {AMBIGUOUS}"),
        (True, "expected an ISO 8601 string, got True"),
        ({"$date": 1}, "expected an ISO 8601 string, got {'$date': 1}"),
        ("2024-01-01T00:00:00", "timestamp has no timezone: '2024-01-01T00:00:00'"),
        ("2024-01-01", "timestamp has no timezone: '2024-01-01'"),
        ("yesterday", "Invalid isoformat string: 'yesterday'"),
        ("2024-13-01T00:00:00Z", "month must be in 1..12: '2024-13-01T00:00:00Z'"),
        ("", "Invalid isoformat string: ''"),
    ],
)
@pytest.mark.parametrize("field", list(TIME_FIELDS))
def test_timestamps_rejected(field: str, value: Any, problem: str) -> None:
    assert reason_of(job(**{field: value})) == f"{field}: {problem}"


def test_a_huge_bad_timestamp_gives_a_short_reason() -> None:
    record = job(createdAt="9" * 1_000_000)
    result = normalise_job(record)
    assert isinstance(result, Reject)
    assert result.reason.startswith("createdAt: ")
    assert "'999" in result.reason
    assert len(result.reason) < 300
    assert result.raw == orjson.dumps(record).decode()


# --- pages ---------------------------------------------------------------------------------


def test_rejects_do_not_stop_the_page_and_keep_page_order() -> None:
    records = [
        job(_id="a"),
        "oops",
        job(_id="b", numSuccess="many"),
        job(_id="c"),
        job(_id=...),
    ]
    page = normalise_page(records)
    assert page.ids == ["a", "c"]
    assert [r.reason for r in page.rejects] == [
        "record is not an object (str)",
        "numSuccess: expected an integer, got 'many'",
        "missing _id",
    ]
    assert (page.count, page.duplicates) == (5, 0)


def test_a_record_that_cannot_be_json_is_rejected_with_its_repr() -> None:
    record = job(note="\ud800")  # a lone surrogate: no UTF-8 spelling
    result = normalise_job(record)
    assert isinstance(result, Reject)
    assert result.raw == repr(record)
    assert result.reason.startswith("record cannot be written as JSON")
    assert normalise_page([record, job(_id="ok")]).ids == ["ok"]


def test_a_bad_value_in_one_record_leaves_the_others_exact() -> None:
    good = [job(_id=str(i), numSuccess=i, createdAt=f"2024-01-15T10:00:0{i}Z") for i in range(5)]
    bad = job(_id="bad", numSuccess="x", createdAt="never")
    mixed = normalise_page([*good[:2], bad, *good[2:]])
    clean = normalise_page(good)
    assert mixed.rows.equals(clean.rows)
    assert mixed.ids == clean.ids


def test_page_rows_are_the_single_record_rows() -> None:
    records = [job(_id="a"), job(_id="b", numSuccess="5", type="new")]
    page = normalise_page(records)
    assert page.rows.to_pylist() == [row_of(record) for record in records]


# --- duplicates within a page --------------------------------------------------------------


def test_duplicates_keep_the_latest_last_modified_wherever_it_is() -> None:
    newer = job(lastModified="2024-01-15T10:06:00.000Z", status="completed")
    older = job(lastModified="2024-01-15T10:05:00.000Z", status="running")
    for records in ([newer, older], [older, newer]):
        page = normalise_page(records)
        assert page.ids == ["job123"]
        assert page.rows.column("status").to_pylist() == ["completed"]
        assert (page.count, page.duplicates, page.rejects) == (2, 1, [])


def test_duplicates_compare_moments_not_spellings() -> None:
    later = job(lastModified="2024-01-15T09:30:00.000-01:00", status="later")  # 10:30Z
    earlier = job(lastModified="2024-01-15T10:29:00.000Z", status="earlier")
    assert normalise_page([later, earlier]).rows.column("status").to_pylist() == ["later"]


def test_duplicates_tie_to_the_later_in_the_page() -> None:
    first, second = job(status="first"), job(status="second")
    assert normalise_page([first, second]).rows.column("status").to_pylist() == ["second"]


def test_a_missing_last_modified_loses_to_any() -> None:
    dated = job(status="dated")
    undated = job(lastModified=..., status="undated")
    for records in ([dated, undated], [undated, dated]):
        assert normalise_page(records).rows.column("status").to_pylist() == ["dated"]
    both = normalise_page([job(lastModified=None, status="a"), job(lastModified=..., status="b")])
    assert both.rows.column("status").to_pylist() == ["b"]


def test_a_rejected_duplicate_does_not_hide_the_good_record() -> None:
    page = normalise_page(
        [job(status="good"), job(numSuccess="bad", lastModified="2099-01-01T00:00:00Z")]
    )
    assert page.rows.column("status").to_pylist() == ["good"]
    assert len(page.rejects) == 1
    assert page.duplicates == 0


def test_duplicates_keep_the_page_order_of_the_winners() -> None:
    records = [
        job(_id="a", lastModified="2024-01-15T10:00:00Z"),
        job(_id="b"),
        job(_id="a", lastModified="2024-01-15T09:00:00Z"),
        job(_id="c"),
    ]
    page = normalise_page(records)
    assert page.ids == ["a", "b", "c"] == page.rows.column("id").to_pylist()
    assert page.duplicates == 1


# --- properties ----------------------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
moments = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000))
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@st.composite
def timestamps(draw: st.DrawFn) -> tuple[str, datetime]:
    """An API-style timestamp text and the moment it names."""
    moment = draw(moments)
    if draw(st.booleans()):
        text = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    else:
        text = moment.astimezone(draw(offsets)).isoformat(timespec="milliseconds")
    return text, moment


def count_values(plain: bool = False) -> st.SearchStrategy[tuple[Any, int]]:
    """Counts as sent and held; `plain`: integers only (the typed path's form)."""
    ints = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)
    if plain:
        return ints.map(lambda n: (n, n))
    return (
        ints.map(lambda n: (n, n))
        | st.integers(min_value=-(2**53), max_value=2**53).map(lambda n: (float(n), n))
        | ints.map(lambda n: (str(n), n))
    )


def valid_value(field: str, plain: bool = False) -> st.SearchStrategy[tuple[Any, Any]]:
    """(value as the API sends it, value the column should hold) for a known field."""
    if field == "_id":
        return st.text(min_size=1).map(lambda s: (s, s))
    if field in STRING_FIELDS or field == "_parentJobId":
        return st.text().map(lambda s: (s, s))
    if field in COUNT_FIELDS:
        return count_values(plain)
    if field in BOOLEAN_FIELDS:
        return st.booleans().map(lambda b: (b, b))
    return timestamps()


@st.composite
def valid_records(draw: st.DrawFn, plain: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """A record built from valid fields (some missing, some null, some unknown) and the row
    it should give; `plain`: counts are integers."""
    record: dict[str, Any] = {}
    expected: dict[str, Any] = dict.fromkeys(JOB_COLUMNS)
    columns = {**STRING_FIELDS, **COUNT_FIELDS, **BOOLEAN_FIELDS, **TIME_FIELDS}
    for field in draw(st.permutations([*columns, "_parentJobId"])):
        required = field in ("_id", "createdAt")
        choice = "value" if required else draw(st.sampled_from(["value", "null", "missing"]))
        if choice == "missing":
            continue
        if choice == "null":
            record[field] = None
            continue
        sent, held = draw(valid_value(field, plain))
        record[field] = sent
        if field != "_parentJobId":
            expected[columns[field]] = held
    if expected["flow_job_id"] is None and record.get("_parentJobId") is not None:
        expected["flow_job_id"] = record["_parentJobId"]
    record.update(draw(st.dictionaries(st.text(min_size=1).map("x-".__add__), json_values)))
    expected["raw"] = compact_json(record)
    return record, expected


def compact_json(record: dict[str, Any]) -> str:
    """The record as the normaliser writes it: orjson, or Python's encoder for the integers
    beyond 64 bits that orjson refuses."""
    try:
        return orjson.dumps(record).decode()
    except TypeError:
        return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


@settings(max_examples=300, deadline=None)
@given(valid_records())
def test_valid_records_round_trip(case: tuple[dict[str, Any], dict[str, Any]]) -> None:
    record, expected = case
    assert row_of(record) == expected
    assert json.loads(expected["raw"]) == record


def known_field_values(field: str) -> st.SearchStrategy[Any]:
    return valid_value(field).map(lambda pair: pair[0]) | json_values


any_records = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={
            field: known_field_values(field)
            for field in [*STRING_FIELDS, *COUNT_FIELDS, *BOOLEAN_FIELDS, *TIME_FIELDS]
        },
    ),
    st.dictionaries(st.text(max_size=8), json_values, max_size=5),
)


def check_conservation(records: list[Any], page: NormalisedPage) -> None:
    assert page.count == len(records)
    assert page.rows.num_rows + len(page.rejects) + page.duplicates == len(records)
    assert page.rows.schema == JOB_ARROW_SCHEMA
    assert page.ids == page.rows.column("id").to_pylist()
    assert len(set(page.ids)) == len(page.ids)
    assert all(reject.reason and isinstance(reject.raw, str) for reject in page.rejects)


@settings(max_examples=500, deadline=None)
@given(st.lists(any_records, max_size=12))
def test_any_json_never_raises_and_every_record_is_accounted_for(records: list[Any]) -> None:
    check_conservation(records, normalise_page(records))


@settings(max_examples=300, deadline=None)
@given(st.lists(any_records, max_size=8))
def test_a_page_gives_what_its_records_give_one_by_one(records: list[Any]) -> None:
    # Unique ids, so that no record supersedes another.
    records = [
        {**r, "_id": f"{i}:{r['_id']}"}
        if isinstance(r, dict) and isinstance(r.get("_id"), str)
        else r
        for i, r in enumerate(records)
    ]
    page = normalise_page(records)
    singles = [normalise_job(record) for record in records]
    assert page.rows.to_pylist() == [s for s in singles if isinstance(s, dict)]
    assert page.rejects == [s for s in singles if isinstance(s, Reject)]
    assert page.duplicates == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(valid_records().map(lambda case: case[0]) | any_records, max_size=8))
def test_the_plain_path_gives_exactly_what_the_checking_path_gives(records: list[Any]) -> None:
    plain = _plain_page(records)
    if plain is not None:
        checked = _checked_page(records)
        assert plain.rows.equals(checked.rows)
        assert (plain.ids, plain.rejects, plain.duplicates) == (checked.ids, [], 0)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        valid_records(plain=True).map(lambda case: case[0])
        | valid_records().map(lambda case: case[0])
        | any_records,
        max_size=8,
    )
)
def test_the_typed_path_gives_exactly_what_the_checking_path_gives(records: list[Any]) -> None:
    try:
        body = orjson.dumps(records)
    except TypeError:
        assume(False)  # integers beyond 64 bits: orjson writes no such page
    typed = decode_job_page(body)
    if typed is not None:
        page = normalise_page(typed)
        checked = _checked_page(orjson.loads(body))
        assert page.rows.equals(checked.rows)
        assert (page.ids, page.rejects, page.duplicates) == (
            checked.ids,
            checked.rejects,
            checked.duplicates,
        )


def test_pages_in_the_api_spelling_take_the_plain_path() -> None:
    records = [
        {**JOB, "_id": f"job{n}", "createdAt": "2024-01-15T11:00:00.5+01:00"} for n in range(3)
    ]
    records.append({"_id": "child", "createdAt": JOB["createdAt"], "_parentJobId": "job0"})
    plain = _plain_page(records)
    assert plain is not None
    assert plain.rows.equals(_checked_page(records).rows)
    assert plain.rows.column("flow_job_id").to_pylist()[-1] == "job0"


@pytest.mark.parametrize(
    "changes",
    [
        {"numSuccess": 5.5},
        {"numSuccess": 5.0},
        {"createdAt": "2024-02-30T10:00:00Z"},
        {"createdAt": "2024-01-15 10:00:00Z"},
        {"endedAt": "2024-01-15T10:00:00.123456Z"},
        {"endedAt": "9999-12-31T00:00:01Z"},
        {"_id": ""},
    ],
)
def test_anything_unusual_takes_the_checking_path(changes: dict[str, Any]) -> None:
    assert _plain_page([{**JOB, **changes}]) is None
    assert _plain_page([JOB, JOB]) is None  # duplicate ids


# Texts near the API's spelling: one of its characters (digits included) made another, or
# a character added or taken away.
API_TEXT = "2024-01-15T10:00:00.000Z"
near_api_texts = st.builds(
    lambda at, char, cut, text: text[:at] + char + text[at + cut :],
    st.integers(0, len(API_TEXT) - 1),
    st.sampled_from(["", *"0123456789-:.TZ tz+/é", "\u0660"]),
    st.integers(0, 1),
    st.sampled_from(
        [
            API_TEXT,
            "2024-02-29T23:59:59.999Z",
            "2023-12-31T00:00:00.000Z",
            "0000-01-01T00:00:00.000Z",  # Arrow reads year 0, parse_iso_ms does not
            "9999-12-31T23:59:59.999Z",  # past the last day parse_iso_ms reads
        ]
    ),
)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.none() | st.just(API_TEXT) | near_api_texts, min_size=1, max_size=6))
def test_timestamps_converted_in_bulk_are_read_as_one_by_one(texts: list[str | None]) -> None:
    moments = _plain_timestamps(pa.array(texts, type=pa.string()))
    if moments is not None:
        expected = [None if text is None else parse_iso_ms(text) for text in texts]
        assert moments.cast(pa.int64()).to_pylist() == expected


def test_texts_in_the_api_spelling_need_no_regex() -> None:
    texts = pa.array(["x", API_TEXT, None, "2024-02-29T23:59:59.999Z", "2024-13-01T10:00:00.000Z"])
    assert _in_api_spelling(texts.slice(1, 3))  # nulls and an array that starts past 0
    assert not _in_api_spelling(texts)  # "x" is too short
    assert _in_api_spelling(texts.slice(4))  # spelled right: the cast refuses month 13
    assert _plain_timestamps(texts.slice(4)) is None
    assert not _in_api_spelling(pa.array(["2024-01-15 10:00:00.000Z"]))
    assert not _in_api_spelling(pa.array(["2024-01-15T10:00:00.00aZ"]))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.none()
            | st.sampled_from(
                [
                    "2024-01-15T10:00:00Z",
                    "2024-01-15T11:00:00+01:00",
                    "2024-01-15T10:00:01Z",
                    "2024-01-14T10:00:00Z",
                ]
            ),
        ),
        max_size=10,
    )
)
def test_duplicates_collapse_to_the_latest(draws: list[tuple[str, str | None]]) -> None:
    records = [
        job(_id=job_id, lastModified=modified, seq=index)
        for index, (job_id, modified) in enumerate(draws)
    ]
    page = normalise_page(records)
    check_conservation(records, page)
    winners: dict[str, tuple[int, int, int]] = {}
    for index, (job_id, modified) in enumerate(draws):
        rank = (modified is not None, parse_iso_ms(modified) if modified else 0, index)
        winners[job_id] = max(winners.get(job_id, rank), rank)
    expected = sorted(winners.values(), key=lambda rank: rank[2])
    assert [orjson.loads(raw)["seq"] for raw in page.rows.column("raw").to_pylist()] == [
        rank[2] for rank in expected
    ]
    assert page.duplicates == len(draws) - len(winners)


# --- job.schema.json -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(schema_text("job.schema.json"))
    jsonschema.Draft202012Validator.check_schema(schema)
    formats = jsonschema.FormatChecker()
    formats.checks("date-time", raises=ValueError)(lambda text: parse_iso_ms(text) is not None)
    return jsonschema.Draft202012Validator(schema, format_checker=formats)


REFERENCE_JOB = {
    "_id": "job123",
    "type": "flow",
    "status": "completed",
    "_integrationId": "int123",
    "_flowId": "flow123",
    "_exportId": "exp123",
    "numSuccess": 100,
    "numError": 2,
    "numIgnore": 5,
    "numExport": 107,
    "numPagesGenerated": 2,
    "numPagesProcessed": 2,
    "doneExporting": True,
    "flowExecutionGroupId": "group123",
    "createdAt": "2024-01-15T10:00:00.000Z",
    "startedAt": "2024-01-15T10:00:01.000Z",
    "endedAt": "2024-01-15T10:05:00.000Z",
    "lastModified": "2024-01-15T10:05:00.000Z",
    "purgeAt": "2024-02-14T10:05:00.000Z",
}


@pytest.mark.parametrize(
    "record",
    [
        REFERENCE_JOB,
        JOB,
        {"_id": "j", "type": "import", "status": "queued", "createdAt": "2024-01-15T10:00:00Z"},
        {**REFERENCE_JOB, "status": "canceled", "canceledBy": "user@example.com", "endedAt": None},
        {**REFERENCE_JOB, "somethingNew": {"a": [1]}, "createdAt": "2024-01-15T11:00:00+01:00"},
    ],
)
def test_valid_records_match_the_schema_and_normalise(
    validator: jsonschema.Draft202012Validator, record: dict[str, Any]
) -> None:
    validator.validate(record)
    assert row_of(record)["id"] == record["_id"]


@pytest.mark.parametrize(
    "changes",
    [
        {"_id": ...},
        {"type": ...},
        {"status": ...},
        {"createdAt": ...},
        {"_id": ""},
        {"_id": 5},
        {"type": "batch"},
        {"status": "paused"},
        {"numSuccess": "5"},
        {"numSuccess": -1},
        {"numSuccess": 5.5},
        {"doneExporting": "yes"},
        {"createdAt": "2024-01-15T10:00:00"},
        {"createdAt": 1705312800000},
        {"endedAt": "soon"},
    ],
)
def test_the_schema_refuses_what_the_reference_rules_out(
    validator: jsonschema.Draft202012Validator, changes: dict[str, Any]
) -> None:
    record = {key: value for key, value in {**REFERENCE_JOB, **changes}.items() if value is not ...}
    assert not validator.is_valid(record)


api_records = st.fixed_dictionaries(
    {
        "_id": st.text(min_size=1),
        "type": st.sampled_from(["flow", "export", "import"]),
        "status": st.sampled_from(["queued", "running", "completed", "failed", "canceled"]),
        "createdAt": timestamps().map(lambda pair: pair[0]),
    },
    optional={
        **{
            field: st.none() | st.text()
            for field in OPTIONAL_FIELDS
            if field in STRING_FIELDS and field not in ("type", "status")
        },
        **{field: st.none() | st.integers(0, INT64_MAX) for field in COUNT_FIELDS},
        **{field: st.none() | st.booleans() for field in BOOLEAN_FIELDS},
        **{
            field: st.none() | timestamps().map(lambda pair: pair[0])
            for field in OPTIONAL_FIELDS
            if field in TIME_FIELDS
        },
        "_parentJobId": st.none() | st.text(),
        "extra": json_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(api_records)
def test_records_shaped_as_the_reference_says_pass_the_schema_and_normalise(
    validator: jsonschema.Draft202012Validator, record: dict[str, Any]
) -> None:
    validator.validate(record)
    assert isinstance(normalise_job(record), dict)
