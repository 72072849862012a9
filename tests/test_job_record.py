"""JobRecord: listing pages decoded straight into typed fields, and read like the dicts they
stand for; anything not plainly typed leaves the page to the dict path."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from jobsync.crawl import fill_flow_ids
from jobsync.job_record import (
    RECORDS_PER_CALL,
    JobRecord,
    as_dicts,
    decode_job_page,
    is_record,
)
from jobsync.records import normalise_page

JOB = {
    "_id": "job1",
    "type": "export",
    "status": "completed",
    "_flowJobId": "flow1",
    "numSuccess": 12,
    "retriable": False,
    "createdAt": "2024-01-15T10:00:00.000Z",
    "endedAt": None,
    "x-unknown": {"nested": [1, 2.5, "three"]},
}


def page(*records: Any) -> bytes:
    return orjson.dumps(list(records))


def test_a_plain_page_becomes_job_records_with_their_text_as_sent() -> None:
    body = (
        b'[ {"_id": "a",  "createdAt": "2024-01-15T10:00:00Z", "n": 1.50} ,'
        b'{"_id":"b","createdAt":"2024-01-15T10:00:00Z"}]'
    )
    records = decode_job_page(body)
    assert records is not None and all(type(r) is JobRecord for r in records)
    assert [r.raw for r in records] == [
        b'{"_id": "a",  "createdAt": "2024-01-15T10:00:00Z", "n": 1.50}',
        b'{"_id":"b","createdAt":"2024-01-15T10:00:00Z"}',
    ]
    assert as_dicts(records) == orjson.loads(body)


def test_an_empty_page_is_an_empty_list() -> None:
    assert decode_job_page(b"[]") == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"_id": "a"}',  # not a list
        b"[1]",
        b'[{"_id": "a", "createdAt": "2024-01-15T10:00:00Z"}, "odd"]',
        b'[{"createdAt": "2024-01-15T10:00:00Z"}]',  # no _id
        b'[{"_id": "", "createdAt": "2024-01-15T10:00:00Z"}]',
        b'[{"_id": 5, "createdAt": "2024-01-15T10:00:00Z"}]',
        b'[{"_id": "a"}]',  # no createdAt
        b'[{"_id": "a", "createdAt": null}]',
        b'[{"_id": "a", "createdAt": 1705312800000}]',
        b'[{"_id": "a", "createdAt": "x", "numSuccess": 5.0}]',
        b'[{"_id": "a", "createdAt": "x", "numSuccess": true}]',
        b'[{"_id": "a", "createdAt": "x", "numSuccess": "12"}]',
        b'[{"_id": "a", "createdAt": "x", "numSuccess": 9223372036854775808}]',
        b'[{"_id": "a", "createdAt": "x", "retriable": 1}]',
        b'[{"_id": "a", "createdAt": "x", "status": 3}]',
        b'[{"_id": "a", "createdAt": "x", "x": "\xff"}]',  # not UTF-8, in a skipped field
        b'[{"_id": "a", "createdAt": "x", "x": "\\ud800"}]',  # a lone surrogate
        b'[{"_id": "a", "createdAt": "x"}',  # cut short
        b'[{"_id": "a", "createdAt": "x", "x": ' + b"[" * 1010 + b"]" * 1010 + b"}]",
    ],
)
def test_anything_not_plainly_typed_is_left_to_the_dict_path(body: bytes) -> None:
    assert decode_job_page(body) is None


def test_a_record_reads_like_its_dict() -> None:
    (record,) = decode_job_page(page(JOB)) or []
    assert is_record(record) and is_record({}) and not is_record([])
    for key in ("_id", "type", "_flowJobId", "numSuccess", "retriable", "x-unknown"):
        assert record.get(key) == JOB[key] and record[key] == JOB[key]
    assert record.get("endedAt", "default") is None  # null: as the dict says
    assert record.get("_flowId", "default") == "default"  # missing
    with pytest.raises(KeyError):
        record["_flowId"]
    assert record.as_dict() == JOB


def test_filling_flow_ids_turns_a_record_that_lacks_them_into_a_dict() -> None:
    (child,) = decode_job_page(page(JOB)) or []
    filled = fill_flow_ids(child, "f1", "i1")
    assert filled == {**JOB, "_integrationId": "i1", "_flowId": "f1"}
    assert list(filled)[:5] == ["_id", "type", "status", "_integrationId", "_flowId"]
    (complete,) = decode_job_page(page({**JOB, "_flowId": "f1", "_integrationId": "i1"})) or []
    assert fill_flow_ids(complete, "f1", "i1") is complete
    (no_integration,) = decode_job_page(page({**JOB, "_flowId": "f1"})) or []
    assert fill_flow_ids(no_integration, "f1", None) is no_integration


def test_a_typed_page_normalises_as_its_dicts_do() -> None:
    records = [
        {**JOB, "_id": "a", "endedAt": "2024-01-15T11:00:00.5+01:00"},
        {"_id": "b", "createdAt": JOB["createdAt"], "_parentJobId": "a"},
    ]
    typed = normalise_page(decode_job_page(page(*records)) or [])
    assert typed.rows.equals(normalise_page(records).rows)
    assert typed.rows.column("flow_job_id").to_pylist() == ["flow1", "a"]


def test_a_page_longer_than_one_call_decodes_and_normalises_whole() -> None:
    count = 2 * RECORDS_PER_CALL + 3  # the last call holds 3 records
    records = [
        {
            **JOB,
            "_id": f"job{n}",
            "numSuccess": n,
            "retriable": n % 2 == 0,
            "endedAt": None if n % 3 else f"2024-01-15T10:{n % 60:02d}:00.{n % 1000:03d}Z",
            "x-unknown": "é" * (n % 4),
        }
        for n in range(count)
    ]
    body = b"[" + b" , ".join(orjson.dumps(record) for record in records) + b"]"
    typed = decode_job_page(body) or []
    assert [record.raw for record in typed] == [orjson.dumps(record) for record in records]
    assert [record.as_dict() for record in typed] == records
    page_rows = normalise_page(typed)
    assert page_rows.ids == [f"job{n}" for n in range(count)]
    assert page_rows.rows.equals(normalise_page(records).rows)
    assert decode_job_page(body.replace(b'"job400"', b"400")) is None  # in the second call


@pytest.mark.parametrize(
    "changes",
    [
        {"createdAt": "2024-01-15 10:00:00Z"},  # not the API's spelling
        {"endedAt": "2024-02-30T10:00:00Z"},  # no such day
        {"endedAt": "9999-12-31T00:00:01Z"},  # beyond what parse_iso_ms reads
    ],
)
def test_a_typed_page_with_an_odd_timestamp_is_checked_as_dicts(changes: dict[str, Any]) -> None:
    records = [JOB, {**JOB, "_id": "job2", **changes}]
    typed = normalise_page(decode_job_page(page(*records)) or [])
    checked = normalise_page(records)
    assert typed.rows.equals(checked.rows) and typed.rejects == checked.rejects


def test_a_typed_page_that_repeats_an_id_keeps_the_latest() -> None:
    older = {**JOB, "lastModified": "2024-01-15T10:00:00Z", "numSuccess": 1}
    newer = {**JOB, "lastModified": "2024-01-15T10:05:00Z", "numSuccess": 2}
    typed = normalise_page(decode_job_page(page(newer, older)) or [])
    assert typed.rows.column("num_success").to_pylist() == [2]
    assert typed.duplicates == 1


def test_a_page_mixing_records_and_dicts_normalises_them_all() -> None:
    (record,) = decode_job_page(page(JOB)) or []
    other = {**JOB, "_id": "job2", "numSuccess": "7"}
    mixed = normalise_page([record, other])
    assert mixed.ids == ["job1", "job2"]
    assert mixed.rows.column("num_success").to_pylist() == [12, 7]
