"""The simulator's injected faults (jobsync/simulator/faults.py) over real sockets: outages,
429 storms, stalls, bodies that are not a JSON list, and bad records planted beside real
jobs that stay exactly what the account's ground truth says."""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from conftest import listed_jobs

from jobsync.simulator import SimulatorServer
from jobsync.simulator.faults import BAD_BODIES, BAD_RECORDS, FaultPlan

Make = Callable[..., SimulatorServer]
# A listing both dialects serve (integrator.io wants a resource or a date filter).
LISTING = "/jobs?createdAt_gte=2000-01-01T00:00:00.000Z"


def get(server: SimulatorServer, target: str, timeout: float = 10) -> tuple[int, dict, bytes]:
    """(status, headers, body) of one GET on a fresh connection; `target` is under /v1."""
    request = urllib.request.Request(server.url + target, headers=server.headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read()


def marker_of(record: Any) -> str | None:
    if isinstance(record, dict):
        return record.get("chaosMarker")
    if isinstance(record, str):
        return record.split(":", 1)[0]
    return record[0] if isinstance(record, list) else None


def test_bad_records_are_planted_beside_real_jobs_that_stay_intact(make_simulator: Make) -> None:
    server = make_simulator(page_size=50, shuffle_ties=False, faults=FaultPlan(bad_records=1.0))
    truth = listed_jobs(server)
    planted: list[Any] = []
    for _ in range(40):
        status, _, body = get(server, LISTING)
        assert status == 200
        page = orjson.loads(body)
        real = [r for r in page if marker_of(r) is None]
        assert len(real) == 50 and all(truth[job["_id"]] == job for job in real)
        planted += [r for r in page if marker_of(r) is not None]
    log = {entry.marker: entry for entry in server.stats.chaos.planted}
    assert sorted(marker_of(record) for record in planted) == sorted(log)
    assert {entry.kind for entry in log.values()} == set(BAD_RECORDS)
    for record in planted:
        entry = log[marker_of(record)]
        if entry.kind == "stale_duplicate":
            real = truth[record["_id"]]
            assert entry.job_id == real["_id"] and record["lastModified"] < real["lastModified"]
        elif entry.kind in ("not_object", "no_id"):
            assert entry.job_id is None and not (isinstance(record, dict) and "_id" in record)
        else:
            assert record["_id"] == entry.job_id == entry.marker and entry.job_id not in truth


def test_every_kind_of_bad_record_is_broken_as_named(make_simulator: Make) -> None:
    server = make_simulator(page_size=20, faults=FaultPlan(bad_records=1.0, huge_bytes=4096))
    seen: dict[str, Any] = {}
    for _ in range(60):
        page = orjson.loads(get(server, LISTING)[2])
        by_marker = {marker_of(r): r for r in page}
        for entry in server.stats.chaos.planted:
            if entry.marker in by_marker:
                seen.setdefault(entry.kind, by_marker[entry.marker])
    assert not isinstance(seen["not_object"], dict)
    assert "_id" not in seen["no_id"]
    assert seen["text_count"]["numSuccess"] == "a dozen"
    assert seen["digit_count"]["numSuccess"] == "12"
    assert isinstance(seen["number_timestamp"]["endedAt"], int)
    assert seen["bad_timestamp"]["startedAt"] == "yesterday at noon"
    assert not seen["naive_timestamp"]["createdAt"].endswith("Z")
    assert len(seen["huge_strings"]["chaosNotes"]) == 2048
    assert "chaosNested" in seen["unknown_nested"]


def test_bad_records_stay_out_of_lookups_and_flows(make_simulator: Make) -> None:
    server = make_simulator(faults=FaultPlan(bad_records=1.0))
    job_id = next(iter(listed_jobs(server)))
    assert orjson.loads(get(server, f"/jobs/{job_id}")[2])["_id"] == job_id
    assert all("chaosMarker" not in flow for flow in orjson.loads(get(server, "/flows")[2]))
    assert server.stats.chaos.planted == []


def test_bad_bodies_are_never_what_the_client_expects(make_simulator: Make) -> None:
    server = make_simulator(faults=FaultPlan(bad_body=1.0))
    job_id = next(iter(listed_jobs(server)))
    for target, expected in [(LISTING, list)] * 30 + [(f"/jobs/{job_id}", dict)] * 10:
        status, _, body = get(server, target)
        assert status == 200
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError:
            continue
        assert not isinstance(value, expected) or not value or value[0]["_id"] == "nan-job"
    kinds = {kind.removeprefix("body_") for kind in server.stats.chaos.by_kind}
    assert kinds == set(BAD_BODIES)


def test_a_storm_answers_429_with_retry_after(make_simulator: Make) -> None:
    server = make_simulator(faults=FaultPlan(storm=1.0, storm_seconds=30))
    for _ in range(3):
        status, headers, body = get(server, "/flows")
        assert status == 429 and 1 <= int(headers["Retry-After"]) <= 30
        assert orjson.loads(body)["errors"][0]["code"] == "rate_limited"
    assert server.stats.chaos.by_kind["storm"] == 3


def test_an_outage_answers_503_for_good(make_simulator: Make) -> None:
    server = make_simulator(faults=FaultPlan(outage_after=2))
    assert [get(server, "/flows")[0] for _ in range(5)] == [200, 200, 503, 503, 503]


@pytest.mark.parametrize("kind", ["stall_before_headers", "stall_mid_body"])
def test_a_stall_outlasts_a_client_timeout(make_simulator: Make, kind: str) -> None:
    server = make_simulator(faults=FaultPlan(stall=1.0, stall_seconds=30))
    stalls = server.stats.chaos.by_kind
    for _ in range(20):
        before = stalls[kind]
        with pytest.raises((TimeoutError, socket.timeout, urllib.error.URLError)):
            get(server, LISTING, timeout=0.3)
        if stalls[kind] > before:
            return
    raise AssertionError(f"no {kind} in 20 requests: {stalls}")


def test_a_short_stall_delays_the_answer_or_cuts_it_mid_body(make_simulator: Make) -> None:
    server = make_simulator(faults=FaultPlan(stall=1.0, stall_seconds=0.05))
    for _ in range(10):
        try:
            status, _, body = get(server, "/flows")
        except (http.client.IncompleteRead, ConnectionError):
            continue
        assert status == 200 and isinstance(orjson.loads(body), list)  # stalled, then whole
    assert server.stats.chaos.by_kind["stall_mid_body"] >= 1


@pytest.mark.parametrize(
    "plan",
    [
        {"stall": -0.1},
        {"bad_body": 1.5},
        {"storm": 0.6, "bad_records": 0.6},
        {"stall_seconds": 0},
        {"outage_after": -1},
    ],
)
def test_a_plan_out_of_range_is_refused(plan: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        FaultPlan(**plan)
