"""The simulated Jobs API over real sockets, checked against the account's ground truth.

Most tests here pin down the reference dialect's listing rules (the `dialect` fixture is
fixed to it in this module); the integrator dialect's own rules have their own tests at the
end. Every other test file runs against both dialects."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from email.message import Message
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
import pytest

from jobsync.simulator import Account, AccountConfig, ManualClock, SimulatorServer
from jobsync.simulator.history import DAY_MS
from jobsync.timestamps import format_iso_ms, parse_iso_ms

Params = list[tuple[str, str]]
Make = Callable[..., SimulatorServer]


@pytest.fixture
def dialect() -> str:
    """The dialect of `simulator` and `make_simulator` here, unless a test asks otherwise."""
    return "reference"


REFERENCE_FIELDS = {
    "_id",
    "type",
    "status",
    "_integrationId",
    "_flowId",
    "_exportId",
    "numSuccess",
    "numError",
    "numIgnore",
    "numExport",
    "numPagesGenerated",
    "numPagesProcessed",
    "doneExporting",
    "flowExecutionGroupId",
    "createdAt",
    "startedAt",
    "endedAt",
    "lastModified",
    "purgeAt",
}
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@dataclass
class Reply:
    status: int
    headers: Message
    body: Any


def call(
    server: SimulatorServer,
    target: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request on a fresh connection; `target` is relative to the /v1 prefix."""
    request = urllib.request.Request(
        server.url + target, method=method, headers=server.headers | (headers or {})
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            return Reply(response.status, response.headers, orjson.loads(body) if body else None)
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, error.headers, orjson.loads(error.read()))


def list_jobs(server: SimulatorServer, params: Params | None = None) -> list[dict[str, Any]]:
    reply = call(server, "/jobs?" + urlencode(params or []))
    assert reply.status in (200, 204), reply.body
    return reply.body if reply.status == 200 else []


def crawl(server: SimulatorServer, params: Params | None = None) -> dict[str, dict[str, Any]]:
    """Every job matching `params`, paged with an inclusive createdAt_lte cursor."""
    found: dict[str, dict[str, Any]] = {}
    lte: str | None = None
    for _ in range(1000):
        page = list_jobs(server, (params or []) + ([("createdAt_lte", lte)] if lte else []))
        found.update((job["_id"], job) for job in page)
        if len(page) < server.options.page_cap:
            return found
        assert page[0]["createdAt"] != page[-1]["createdAt"], "a full page in one millisecond"
        lte = page[-1]["createdAt"]
    raise AssertionError("crawl did not end")


def truth(server: SimulatorServer) -> dict[str, dict[str, Any]]:
    return server.account.listed_jobs(server.clock.now_ms())


def subset(jobs: dict[str, dict[str, Any]], keep: Callable[[dict[str, Any]], bool]) -> dict:
    return {job_id: job for job_id, job in jobs.items() if keep(job)}


def ms(job: dict[str, Any], field: str = "createdAt") -> int:
    return parse_iso_ms(job[field])


def manual(server: SimulatorServer) -> ManualClock:
    assert isinstance(server.clock, ManualClock)
    return server.clock


def run_with_children(server: SimulatorServer) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A finished flow job with two or more children, and the children (from ground truth)."""
    jobs = truth(server)
    children: dict[str, list[dict[str, Any]]] = {}
    for job in jobs.values():
        if "_flowJobId" in job:
            children.setdefault(job["_flowJobId"], []).append(job)
    for parent_id, kids in children.items():
        parent = jobs.get(parent_id)
        if parent and parent["status"] == "completed" and len(kids) >= 2 and "startedAt" in parent:
            return parent, kids
    raise AssertionError("no finished run with children")


# --- listing ---------------------------------------------------------------------------


def test_a_listing_is_newest_first_and_capped_at_1001(simulator: SimulatorServer) -> None:
    page = list_jobs(simulator)
    times = [ms(job) for job in page]
    assert len(page) == 1001
    assert times == sorted(times, reverse=True)
    newer = subset(truth(simulator), lambda job: ms(job) > times[-1])
    assert newer.keys() <= {job["_id"] for job in page}
    assert {job["type"] for job in page} == {"flow", "export", "import"}


def test_paging_the_api_finds_exactly_the_ground_truth(simulator: SimulatorServer) -> None:
    expected = truth(simulator)
    assert len(expected) > 5000
    assert crawl(simulator) == expected


def test_listed_jobs_match_get_by_id(simulator: SimulatorServer) -> None:
    now = simulator.clock.now_ms()
    for job in list(truth(simulator).values())[::500]:
        assert simulator.account.job(job["_id"], now) == job
        assert call(simulator, f"/jobs/{job['_id']}").body == job


@pytest.mark.parametrize(
    ("query", "keep"),
    [
        (lambda now: [("status", "running")], lambda job, now: job["status"] == "running"),
        (
            lambda now: [("status", "failed"), ("createdAt_gte", format_iso_ms(now - 5 * DAY_MS))],
            lambda job, now: job["status"] == "failed" and ms(job) >= now - 5 * DAY_MS,
        ),
        (
            lambda now: [("type", "flow"), ("numError_gte", "1")],
            lambda job, now: job["type"] == "flow" and job["numError"] >= 1,
        ),
        (
            lambda now: [
                ("createdAt_gte", format_iso_ms(now - 9 * DAY_MS)),
                ("createdAt_lte", format_iso_ms(now - 2 * DAY_MS - 1)),
            ],
            lambda job, now: now - 9 * DAY_MS <= ms(job) <= now - 2 * DAY_MS - 1,
        ),
    ],
)
def test_the_reference_example_queries(
    make_simulator: Make,
    query: Callable[[int], Params],
    keep: Callable[[dict[str, Any], int], bool],
) -> None:
    server = make_simulator(long_running_share=0.05)
    now = server.clock.now_ms()
    expected = subset(truth(server), lambda job: keep(job, now))
    assert expected
    assert crawl(server, query(now)) == expected


def test_child_jobs_of_a_flow_job(simulator: SimulatorServer) -> None:
    parent, children = run_with_children(simulator)
    listed = list_jobs(simulator, [("flow_job_id", parent["_id"])])
    assert sorted(job["_id"] for job in listed) == sorted(job["_id"] for job in children)
    assert list_jobs(simulator, [("_flowJobId", parent["_id"])]) != []
    for child in children:
        assert child["_flowJobId"] == parent["_id"]
        assert child["_flowId"] == parent["_flowId"]
        assert child["flowExecutionGroupId"] == parent["flowExecutionGroupId"]
        assert 0 <= ms(child) - ms(parent) <= 4
        assert ("_exportId" in child) == (child["type"] == "export")
        assert ("_importId" in child) == (child["type"] == "import")


def _resource_cases(account: Account) -> list[tuple[str, str, str, str]]:
    """(reference name, integrator name, value, field the value must match)."""
    flows = account.history.flows
    return [
        ("integration_id", "_integrationId", flows[1].integration_id, "_integrationId"),
        ("flow_id", "_flowId", flows[2].id, "_flowId"),
        ("export_id", "_exportId", flows[3].export_ids[0], "_exportId"),
        ("import_id", "_importId", flows[4].import_ids[0], "_importId"),
    ]


def test_every_resource_filter_and_the_other_dialects_spelling_ignored(
    simulator: SimulatorServer,
) -> None:
    jobs = truth(simulator)
    for reference, integrator, value, field in _resource_cases(simulator.account):
        expected = subset(jobs, lambda job, f=field, v=value: job.get(f) == v)
        assert expected, reference
        assert crawl(simulator, [(reference, value)]) == expected, reference
        assert crawl(simulator, [(integrator, value)]) == jobs, integrator


def test_flow_and_type_lists_in_every_spelling(simulator: SimulatorServer) -> None:
    flows = [flow["_id"] for flow in simulator.account.flows(simulator.clock.now_ms())[:3]]
    jobs = truth(simulator)
    expected = subset(jobs, lambda job: job["_flowId"] in flows and job["type"] != "export")
    spellings: list[Params] = [
        [("flow_id_in", ",".join(flows)), ("type_in", "flow,import")],
        [
            *((f"flow_id_in[{i}]", flow) for i, flow in enumerate(flows)),
            ("type_in[0]", "flow"),
            ("type_in[1]", "import"),
        ],
        [*(("flow_id_in[]", flow) for flow in flows), ("type_in", "flow"), ("type_in", "import")],
    ]
    for params in spellings:
        assert crawl(simulator, params) == expected, params


@pytest.mark.parametrize(
    ("param", "value", "keep"),
    [
        ("status", "queued", lambda job: job["status"] == "queued"),
        ("status", "canceled", lambda job: job["status"] == "canceled"),
        ("type", "export", lambda job: job["type"] == "export"),
        ("numSuccess_gte", "100", lambda job: job["numSuccess"] >= 100),
        ("numSuccess_lte", "10", lambda job: job["numSuccess"] <= 10),
        ("numError_lte", "0", lambda job: job["numError"] <= 0),
        ("numExport_gte", "100", lambda job: job["numExport"] >= 100),
        ("numExport_lte", "10", lambda job: job["numExport"] <= 10),
        (
            "numIgnore_gte",
            "1",
            lambda job: job.get("numIgnore") is not None and job["numIgnore"] >= 1,
        ),
        (
            "numIgnore_lte",
            "3",
            lambda job: job.get("numIgnore") is not None and job["numIgnore"] <= 3,
        ),
    ],
)
def test_status_type_and_count_filters(
    make_simulator: Make, param: str, value: str, keep: Callable[[dict[str, Any]], bool]
) -> None:
    server = make_simulator(odd_share=0.2, long_running_share=0.2)
    expected = subset(truth(server), keep)
    assert expected
    assert crawl(server, [(param, value)]) == expected


def test_filters_combine_and_unknown_parameters_are_ignored(simulator: SimulatorServer) -> None:
    flow = simulator.account.flows(simulator.clock.now_ms())[0]["_id"]
    expected = subset(
        truth(simulator), lambda job: job["_flowId"] == flow and job["type"] == "flow"
    )
    params = [("flow_id", flow), ("type", "flow"), ("sort", "whatever"), ("page", "7")]
    assert crawl(simulator, params) == expected
    assert list_jobs(simulator, [("flow_id", "0" * 24)]) == []
    assert list_jobs(simulator, [("flow_id", flow), ("flow_id_in", "0" * 24)]) == []


@pytest.mark.parametrize(
    "query",
    [
        "createdAt_gte=yesterday",
        "createdAt_lte=2026-10-01T00:00:00",  # no timezone
        "numError_gte=abc",
        "numSuccess_lte=1e3",
    ],
)
def test_an_unreadable_filter_value_is_400(simulator: SimulatorServer, query: str) -> None:
    reply = call(simulator, f"/jobs?{query}")
    assert reply.status == 400
    assert reply.body["errors"][0]["code"] == "invalid_query"


# --- ties ------------------------------------------------------------------------------


def _crowded_instant(server: SimulatorServer, least: int) -> str:
    counts = Counter(job["createdAt"] for job in truth(server).values())
    instant, size = counts.most_common(1)[0]
    assert size >= least
    return instant


def test_ties_come_in_a_different_order_on_each_call(make_simulator: Make) -> None:
    server = make_simulator(flows=20, burst_share=1.0, days=2, future_days=0)
    instant = _crowded_instant(server, 15)
    params = [("createdAt_gte", instant), ("createdAt_lte", instant)]
    orders = [tuple(job["_id"] for job in list_jobs(server, params)) for _ in range(5)]
    assert len({frozenset(order) for order in orders}) == 1
    assert len(set(orders)) > 1


def test_a_page_ending_inside_a_tie_takes_a_random_part_of_it(make_simulator: Make) -> None:
    server = make_simulator(flows=20, burst_share=1.0, days=2, future_days=0, page_size=5)
    instant = _crowded_instant(server, 15)
    params = [("createdAt_gte", instant), ("createdAt_lte", instant)]
    pages = [frozenset(job["_id"] for job in list_jobs(server, params)) for _ in range(5)]
    assert all(len(page) == 5 for page in pages)
    assert len(set(pages)) > 1


def test_ties_keep_their_order_when_shuffling_is_off(make_simulator: Make) -> None:
    server = make_simulator(flows=20, burst_share=1.0, days=2, future_days=0, shuffle_ties=False)
    instant = _crowded_instant(server, 15)
    params = [("createdAt_gte", instant), ("createdAt_lte", instant)]
    assert len({tuple(job["_id"] for job in list_jobs(server, params)) for _ in range(3)}) == 1


def test_a_crowded_millisecond_holds_more_than_a_page(make_simulator: Make) -> None:
    server = make_simulator(crowded_ms_jobs=1500, days=4, future_days=0)
    instant = format_iso_ms(server.account.config.crowded_ms)
    params = [("createdAt_gte", instant), ("createdAt_lte", instant)]
    in_that_ms = subset(truth(server), lambda job: job["createdAt"] == instant)
    flow_jobs = [job for job in in_that_ms.values() if job["type"] == "flow"]
    assert len(flow_jobs) == 1500
    assert {"completed", "failed", "canceled"} <= {job["status"] for job in flow_jobs}
    assert len(list_jobs(server, params)) == 1001
    # split by flow, type and status, every part fits a page and together they are all
    found: dict[str, dict[str, Any]] = {}
    for flow in server.account.flows(server.clock.now_ms()):
        for kind in ("flow", "export", "import"):
            for status in ("completed", "failed", "canceled", "running", "queued"):
                split = [("_flowId", flow["_id"]), ("type", kind), ("status", status)]
                page = list_jobs(server, params + split)
                assert len(page) < 1001
                found.update((job["_id"], job) for job in page)
    assert found == in_that_ms


# --- jobs in time ----------------------------------------------------------------------


def test_a_job_moves_through_its_states_as_the_clock_moves(simulator: SimulatorServer) -> None:
    parent, _ = run_with_children(simulator)
    clock = manual(simulator)
    created, started, ended = ms(parent), ms(parent, "startedAt"), ms(parent, "endedAt")

    def seen_at(moment: int) -> dict[str, Any]:
        clock.set(moment)
        return call(simulator, f"/jobs/{parent['_id']}").body

    assert seen_at(created - 1)["errors"][0]["code"] == "not_found"
    job = seen_at(created)
    if started > created:
        assert job["status"] == "queued"
        assert job["lastModified"] == job["createdAt"]
        assert "startedAt" not in job and "endedAt" not in job and "purgeAt" not in job
    successes = []
    for moment in range(started, ended, max(1, (ended - started) // 7)):
        job = seen_at(moment)
        assert job["status"] == "running"
        assert job["startedAt"] == parent["startedAt"] and "endedAt" not in job
        assert started <= ms(job, "lastModified") <= moment
        successes.append(job["numSuccess"])
    assert successes == sorted(successes)
    assert successes[0] == 0
    assert seen_at(ended) == parent
    assert parent["purgeAt"] == format_iso_ms(ended + 30 * DAY_MS)
    assert seen_at(ended + 30 * DAY_MS - 1) == parent
    assert seen_at(ended + 30 * DAY_MS)["errors"][0]["code"] == "not_found"
    assert parent["_id"] not in truth(simulator)


def test_moving_the_clock_brings_new_jobs_and_purges_old_ones(make_simulator: Make) -> None:
    simulator = make_simulator(long_running_share=0.1)
    before = truth(simulator)
    start = simulator.clock.now_ms()
    manual(simulator).advance(timedelta(days=1))
    after = crawl(simulator)
    assert after == truth(simulator)
    new = after.keys() - before.keys()
    gone = before.keys() - after.keys()
    assert new and all(ms(after[job_id]) > start - 600_000 for job_id in new)
    assert gone and all(ms(before[job_id], "purgeAt") <= start + DAY_MS for job_id in gone)
    still = [job_id for job_id in before.keys() & after.keys() if before[job_id] != after[job_id]]
    assert still and all(before[job_id]["status"] in ("queued", "running") for job_id in still)


def test_a_late_job_is_listed_only_after_its_delay(make_simulator: Make) -> None:
    server = make_simulator(late_share=0.5, days=3, future_days=1)
    history = server.account.history
    row = next(
        row
        for row in range(len(history))
        if history.listed_from[row] > history.created[row] >= server.clock.now_ms()
    )
    job_id, created = history.job_id(row), history.created[row]
    around = [("createdAt_gte", format_iso_ms(created)), ("createdAt_lte", format_iso_ms(created))]
    manual(server).set(history.listed_from[row] - 1)
    assert call(server, f"/jobs/{job_id}").status == 200
    assert job_id not in {job["_id"] for job in list_jobs(server, around)}
    assert history.listed_from[row] - created >= 60_000
    manual(server).set(history.listed_from[row])
    assert job_id in {job["_id"] for job in list_jobs(server, around)}


# --- single jobs and cancellation ------------------------------------------------------


def test_the_date_header_tells_the_simulated_time(simulator: SimulatorServer) -> None:
    manual(simulator).set(parse_iso_ms("2026-06-15T10:20:30.999Z"))
    for target, headers in (("/flows", {}), ("/jobs/nope", {}), ("/jobs", {"Authorization": ""})):
        date = call(simulator, target, headers=headers).headers["Date"]
        assert date == "Mon, 15 Jun 2026 10:20:30 GMT"


def test_an_unknown_job_is_404(simulator: SimulatorServer) -> None:
    for job_id in ("0" * 24, "nope", "f" * 24):
        for method, target in (("GET", f"/jobs/{job_id}"), ("DELETE", f"/jobs/{job_id}")):
            reply = call(simulator, target, method)
            assert reply.status == 404
            assert reply.body == {"errors": [{"code": "not_found", "message": "Job not found"}]}


def test_only_unfinished_flow_jobs_can_be_canceled(simulator: SimulatorServer) -> None:
    parent, children = run_with_children(simulator)
    reply = call(simulator, f"/jobs/{children[0]['_id']}", "DELETE")
    assert reply.status == 400
    assert reply.body["errors"] == [
        {"code": "invalid_operation", "message": "Only flow jobs can be canceled"}
    ]
    reply = call(simulator, f"/jobs/{parent['_id']}", "DELETE")
    assert reply.status == 409
    assert reply.body["errors"] == [{"code": "conflict", "message": "Cannot cancel completed job"}]


@pytest.mark.parametrize(("method", "suffix"), [("DELETE", ""), ("PUT", "/cancel")])
def test_canceling_a_running_flow_job_cancels_its_unfinished_children(
    simulator: SimulatorServer, method: str, suffix: str
) -> None:
    parent, children = run_with_children(simulator)
    moment = ms(parent, "startedAt") + 1
    manual(simulator).set(moment)
    reply = call(simulator, f"/jobs/{parent['_id']}{suffix}", method)
    assert reply.status == 200
    job = reply.body
    assert job["status"] == "canceled"
    assert job["canceledBy"] == simulator.options.canceled_by
    assert job["endedAt"] == job["lastModified"] == format_iso_ms(moment)
    assert job["purgeAt"] == format_iso_ms(moment + 30 * DAY_MS)
    manual(simulator).advance(timedelta(days=2))
    for child in children:
        later = call(simulator, f"/jobs/{child['_id']}").body
        assert later["status"] == "canceled"
        assert later["endedAt"] == format_iso_ms(moment)
    again = call(simulator, f"/jobs/{parent['_id']}", "DELETE")
    assert again.status == 409
    assert again.body["errors"][0]["message"] == "Cannot cancel canceled job"
    assert truth(simulator)[parent["_id"]] == call(simulator, f"/jobs/{parent['_id']}").body


# --- the shape of records ----------------------------------------------------------------


def test_records_have_the_reference_shape(simulator: SimulatorServer) -> None:
    history, now = simulator.account.history, simulator.clock.now_ms()
    rows = [row for row in range(0, len(history), 7) if not history.odd[row]]
    jobs = [simulator.account.job(history.job_id(row), now) for row in rows]
    finished = [job for job in jobs if job and job["status"] == "completed"]
    assert {job["type"] for job in finished} == {"flow", "export", "import"}
    for job in finished:
        expected = set(REFERENCE_FIELDS)
        if job["type"] != "flow":
            expected.add("_flowJobId")
        if job["type"] == "import":
            expected = expected - {"_exportId", "doneExporting"} | {"_importId"}
        assert set(job) == expected
        assert all(ISO_MS.match(job[f]) for f in ("createdAt", "startedAt", "endedAt", "purgeAt"))
        assert re.fullmatch(r"[0-9a-f]{24}", job["_id"])
        assert ms(job) <= ms(job, "startedAt") < ms(job, "endedAt") == ms(job, "lastModified")


def test_odd_records_carry_extra_missing_and_null_fields(make_simulator: Make) -> None:
    server = make_simulator(odd_share=1.0, long_running_share=0.5, days=3)
    jobs = truth(server).values()
    assert any("numResolved" in job for job in jobs)
    assert any(isinstance(job.get("triggeredBy"), str) for job in jobs)
    assert any(isinstance(job.get("files"), list) and job["files"][0]["meta"] for job in jobs)
    assert any("numIgnore" not in job for job in jobs)
    assert any(job.get("numPagesProcessed", 0) is None for job in jobs)
    assert any("endedAt" in job and job["endedAt"] is None for job in jobs)


def test_flows_are_listed(simulator: SimulatorServer) -> None:
    reply = call(simulator, "/flows")
    assert reply.status == 200
    assert reply.body == simulator.account.flows(simulator.clock.now_ms())
    assert all(
        set(flow) == {"_id", "name", "_integrationId", "disabled", "lastModified"}
        for flow in reply.body
    )
    assert any(flow["disabled"] for flow in reply.body)
    assert len({flow["_integrationId"] for flow in reply.body}) > 1


def test_the_same_seed_gives_the_same_account() -> None:
    config = AccountConfig(flows=3, days=5, future_days=0)
    one, two = Account(config), Account(config)
    other = Account(AccountConfig(flows=3, days=5, future_days=0, seed=2))
    now = config.start_ms
    assert one.flows(now) == two.flows(now) and one.listed_jobs(now) == two.listed_jobs(now)
    assert one.flows(now) != other.flows(now)


def test_unedited_flows_keep_the_history_they_had_and_were_last_modified_when_created() -> None:
    # edited_share=0 draws nothing: the digest was taken before flows had a lastModified
    account = Account(AccountConfig(flows=4, days=5, future_days=2, crowded_ms_jobs=5))
    end = account.config.start_ms + 2 * DAY_MS
    flows = account.flows(end, "integrator")
    jobs = account.listed_jobs(end, "integrator")
    assert len(jobs) == len(account)
    unchanged = [{k: v for k, v in flow.items() if k != "lastModified"} for flow in flows]
    digest = hashlib.sha256(orjson.dumps([unchanged, jobs])).hexdigest()
    assert digest == "21e943a6483333ee3efa958b2ede299fa711f2c0732045d661754e29845c8cd8"
    for flow in flows:
        created = int(flow["_id"][:8], 16) * 1000  # the flow's ObjectId tells its creation
        first = min(ms(job) for job in jobs.values() if job["_flowId"] == flow["_id"])
        assert ms(flow, "lastModified") == created < first


def test_an_edited_flow_stops_listing_its_removed_import_whose_earlier_jobs_stay(
    make_simulator: Make,
) -> None:
    server = make_simulator(dialect="integrator", flows=8, days=10, edited_share=0.75)
    history = server.account.history
    edited = [flow for flow in history.flows if flow.import_removed_ms is not None]
    start = server.clock.now_ms()
    assert len(edited) == 6
    later = min((f for f in edited if f.import_removed_ms > start), key=lambda f: f.id)
    kept = 0
    for moment in (start, later.import_removed_ms):
        manual(server).set(moment)
        jobs = server.account.listed_jobs(moment, "integrator")
        listed = {flow["_id"]: flow for flow in call(server, "/flows").body}
        for flow in history.flows:
            removed = flow.import_removed_ms is not None and flow.import_removed_ms <= moment
            shown = listed[flow.id]
            imports = flow.import_ids[:-1] if removed else flow.import_ids
            assert [p["_importId"] for p in shown["pageProcessors"]] == list(imports)
            changed = flow.import_removed_ms if removed else int(flow.id[:8], 16) * 1000
            assert ms(shown, "lastModified") == changed
            if flow.import_removed_ms is None:
                continue
            gone = flow.import_ids[-1]
            runs = subset(jobs, lambda j, f=flow.id: j["_flowId"] == f and j["type"] in TOP_LEVEL)
            before = {i for i, run in runs.items() if ms(run) < flow.import_removed_ms}
            theirs = subset(jobs, lambda j, g=gone: j.get("_importId") == g)
            assert {j.get("_flowJobId", j.get("_parentJobId")) for j in theirs.values()} == before
            assert crawl(server, [("_importId", gone)]) == theirs
            kept += len(theirs)
    assert kept, "the removed imports' earlier jobs are listed"
    assert any(f.import_removed_ms < start for f in edited), "some edits precede the start"


def test_shares_outside_zero_to_one_are_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        AccountConfig(edited_share=1.5)


# --- what the API refuses --------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": ""},
        {"Authorization": "Bearer wrong-token-value"},
        {"Authorization": "Basic dGVzdC10b2tlbg=="},
        {"Authorization": "bearer test-token"},
    ],
)
def test_a_bad_token_is_401_without_echoing_it(
    simulator: SimulatorServer, headers: dict[str, str]
) -> None:
    reply = call(simulator, "/jobs", headers=headers)
    assert reply.status == 401
    assert reply.body["errors"][0]["code"] == "unauthorized"
    assert "wrong-token-value" not in orjson.dumps(reply.body).decode()


def test_a_request_line_over_8192_bytes_is_414(simulator: SimulatorServer) -> None:
    prefix = urlsplit(simulator.url).path + "/jobs?pad="
    overhead = len(f"GET {prefix} HTTP/1.1")
    assert call(simulator, "/jobs?pad=" + "a" * (8192 - overhead)).status == 200
    reply = call(simulator, "/jobs?pad=" + "a" * (8193 - overhead))
    assert reply.status == 414
    assert reply.body["errors"][0]["code"] == "uri_too_long"
    assert call(simulator, "/jobs?pad=" + "a" * 70_000).status == 414


def test_requests_over_the_rate_limit_are_429_with_retry_after(make_simulator: Make) -> None:
    server = make_simulator(rate_limit=0.4, burst=2, days=1)
    replies = [call(server, "/flows") for _ in range(3)]
    assert [reply.status for reply in replies] == [200, 200, 429]
    assert replies[2].headers["Retry-After"] == "3"  # 1 unit at 0.4/s: 2.5 s, rounded up
    assert replies[2].body["errors"][0]["code"] == "rate_limited"
    assert server.stats.rate_limited == 1
    assert server.stats.by_status == Counter({200: 2, 429: 1})


def test_faults_are_5xx_errors_and_connections_dropped_mid_body(make_simulator: Make) -> None:
    server = make_simulator(fault_rate=0.5, days=2)
    outcomes: Counter[str] = Counter()
    for _ in range(60):
        try:
            reply = call(server, "/jobs")
        except (http.client.IncompleteRead, ConnectionError):
            outcomes["dropped"] += 1
            continue
        if reply.status >= 500:
            assert reply.status in (500, 502, 503)
            assert reply.body["errors"][0]["code"] == "server_error"
        outcomes[str(reply.status)] += 1
    assert outcomes["200"] and outcomes["dropped"]
    assert {"500", "502", "503"} & outcomes.keys()
    assert server.stats.faults == 60 - outcomes["200"]
    assert server.stats.dropped == outcomes["dropped"]


def test_latency_is_added_to_every_response(make_simulator: Make) -> None:
    server = make_simulator(latency_ms=150, days=1)
    began = time.perf_counter()
    assert call(server, "/flows").status == 200
    assert call(server, "/flows", headers={"Authorization": ""}).status == 401
    assert time.perf_counter() - began >= 0.3


# --- the command -----------------------------------------------------------------------


def test_simulate_prints_the_url_and_stops_cleanly_on_ctrl_c() -> None:
    # Ctrl-C as a command run in a terminal takes it: a shell that runs the tests in the
    # background (`pytest &` in a script) has them ignore SIGINT, and a child keeps that.
    command = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from jobsync.cli_simulate import simulate; simulate()"
    )
    env = dict(os.environ, JOBSYNC_SIM_TOKEN="s3cret-token")
    process = subprocess.Popen(
        [sys.executable, "-c", command, "--port", "0", "--flows", "2", "--days", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = process.stdout.readline().strip() if process.stdout else ""
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", url)
    assert process.returncode == 0
    assert "Traceback" not in err
    assert "s3cret-token" not in out + err


# --- scale -----------------------------------------------------------------------------

_SCALE_SCRIPT = textwrap.dedent(
    """
    import resource, time, urllib.request
    from jobsync.simulator import Account, AccountConfig, ServerOptions, SimulatorServer
    began = time.perf_counter()
    account = Account(AccountConfig(flows=200, days=35))
    built = time.perf_counter() - began
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    listed = account.count_listed(account.config.start_ms)
    flows = ",".join(flow["_id"] for flow in account.flows(account.config.start_ms)[:100])
    with SimulatorServer(account, ServerOptions(token="t")) as server:
        request = urllib.request.Request(
            server.url + "/jobs?flow_id_in=" + flows, headers=server.headers
        )
        times = []
        for _ in range(10):
            began = time.perf_counter()
            body = urllib.request.urlopen(request).read()
            times.append(time.perf_counter() - began)
    print(built, len(account), listed, rss, min(times) * 1000, len(body))
    """
)


def test_a_200_flow_account_builds_and_serves_in_reasonable_time() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SCALE_SCRIPT], capture_output=True, text=True, check=True
    )
    built, total, listed, rss, page_ms, page_bytes = result.stdout.split()
    print(
        f"\n200 flows x 35 days: built in {float(built):.1f} s, {total} jobs generated, "
        f"{listed} listed at start, peak RSS {float(rss):.0f} MB; "
        f"one 1001-job flow_id_in page: {float(page_ms):.1f} ms, {int(page_bytes) // 1024} KiB"
    )
    assert 250_000 <= int(listed) <= 350_000


# --- the integrator dialect ------------------------------------------------------------

TOP_LEVEL = ("flow", "retry", "bulk_retry")


def integrator(make_simulator: Make, **knobs: Any) -> SimulatorServer:
    return make_simulator(dialect="integrator", **knobs)


def integrator_truth(server: SimulatorServer) -> dict[str, dict[str, Any]]:
    return server.account.listed_jobs(server.clock.now_ms(), "integrator")


def test_integrator_lists_flow_jobs_by_flow_and_children_by_flow_job_or_step(
    make_simulator: Make,
) -> None:
    server = integrator(make_simulator)
    jobs = integrator_truth(server)
    flows = call(server, "/flows").body
    flow = flows[2]
    assert server.options.page_cap == 1000
    top = subset(jobs, lambda j: j["_flowId"] == flow["_id"] and j["type"] in TOP_LEVEL)
    assert top and crawl(server, [("_flowId", flow["_id"])]) == top
    export_id = flow["pageGenerators"][0]["_exportId"]
    exports = subset(jobs, lambda j: j["type"] == "export" and j.get("_exportId") == export_id)
    assert exports and crawl(server, [("_exportId", export_id)]) == exports
    import_id = flow["pageProcessors"][0]["_importId"]
    imports = subset(jobs, lambda j: j["type"] == "import" and j.get("_importId") == import_id)
    assert imports and crawl(server, [("_importId", import_id)]) == imports
    parent = next(iter(top.values()))
    kids = subset(jobs, lambda j: parent["_id"] in (j.get("_flowJobId"), j.get("_parentJobId")))
    listed = list_jobs(server, [("_flowJobId", parent["_id"])])
    assert kids and {j["_id"] for j in listed} == set(kids)
    for job in listed:  # listed by flow job: without the flow's ids
        assert {
            **job,
            "_flowId": parent["_flowId"],
            "_integrationId": parent["_integrationId"],
        } == kids[job["_id"]]
        assert "_flowId" not in job and "_integrationId" not in job
    assert list_jobs(
        server, [("_flowId_in[0]", flow["_id"]), ("_flowId_in[1]", "0" * 24)]
    ) == list_jobs(server, [("_flowId", flow["_id"])])


def test_integrator_refuses_listings_without_a_filter_and_children_without_a_parent(
    make_simulator: Make,
) -> None:
    server = integrator(make_simulator)
    flow = server.account.history.flows[0].id
    for params in (
        [],
        [("flow_id", flow)],  # the reference's spelling is ignored: no filter is left
        [("status", "failed")],
        [("_flowId", flow), ("type", "export")],
        [("createdAt_gte", "2026-10-01T00:00:00.000Z"), ("type_in[0]", "import")],
    ):
        reply = call(server, "/jobs?" + urlencode(params))
        assert reply.status == 400, params
        assert reply.body["errors"][0]["code"] == "invalid_query"


def test_integrator_filters_by_resolved_errors_retriable_and_exported_records(
    make_simulator: Make,
) -> None:
    server = integrator(make_simulator, odd_share=0.5)
    top = subset(integrator_truth(server), lambda j: j["type"] in TOP_LEVEL)
    every = [("createdAt_gte", "1970-01-01T00:00:00.000Z")]
    for params, keep in [
        ([("numResolved_gte", "1")], lambda j: j.get("numResolved", -1) >= 1),
        ([("numResolved_lte", "0")], lambda j: j.get("numResolved", 1) <= 0),
        ([("retriable", "true")], lambda j: j.get("retriable") is True),
        ([("retriable", "false")], lambda j: j.get("retriable") is False),
        (
            [("numExport_gte", "50"), ("numExport_lte", "200")],
            lambda j: 50 <= j["numExport"] <= 200,
        ),
    ]:
        expected = subset(top, keep)
        assert expected, params
        assert crawl(server, every + params) == expected, params
    reply = call(server, "/jobs?" + urlencode([*every, ("retriable", "yes")]))
    assert (reply.status, reply.body["errors"][0]["code"]) == (400, "invalid_query")


def test_the_reference_ignores_integrators_own_filters(make_simulator: Make) -> None:
    server = make_simulator(odd_share=0.5, days=3)
    everything = truth(server)
    assert any("retriable" in job for job in everything.values())
    assert crawl(server, [("retriable", "true"), ("numResolved_gte", "5")]) == everything


def test_integrator_answers_an_empty_listing_with_204_and_no_body(make_simulator: Make) -> None:
    server = integrator(make_simulator)
    reply = call(server, "/jobs?" + urlencode([("_flowId", "0" * 24)]))
    assert (reply.status, reply.body) == (204, None)


def test_integrator_jobs_have_retry_types_retrying_parent_links_and_missing_purge_at(
    make_simulator: Make,
) -> None:
    server = integrator(make_simulator, long_running_share=0.3)
    jobs = integrator_truth(server).values()
    assert {j["type"] for j in jobs} == {"flow", "retry", "bulk_retry", "export", "import"}
    assert {"queued", "running", "retrying", "completed", "failed", "canceled"} <= {
        j["status"] for j in jobs
    }
    children = [j for j in jobs if j["type"] in ("export", "import")]
    assert any("_parentJobId" in j and "_flowJobId" not in j for j in children)
    assert any("_flowJobId" in j for j in children)
    assert any("endedAt" in j and "purgeAt" not in j for j in jobs)
    retrying = next(j for j in jobs if j["status"] == "retrying")
    assert list_jobs(server, [("_flowId", retrying["_flowId"]), ("status", "retrying")])
    assert crawl(server, [("_flowId", retrying["_flowId"]), ("status", "running")]) == {
        i: j
        for i, j in integrator_truth(server).items()
        if j["_flowId"] == retrying["_flowId"]
        and j["status"] == "running"
        and j["type"] in TOP_LEVEL
    }


def test_integrator_token_info_flows_with_steps_and_cancel_by_put(make_simulator: Make) -> None:
    server = integrator(make_simulator, long_running_share=0.3)
    info = call(server, "/tokenInfo")
    assert info.status == 200 and info.body["_userId"]
    assert server.options.token not in orjson.dumps(info.body).decode()
    flows = call(server, "/flows").body
    assert all(f["pageGenerators"] and f["pageProcessors"] for f in flows)
    running = next(
        j
        for j in integrator_truth(server).values()
        if j["type"] == "flow" and j["status"] in ("running", "retrying", "queued")
    )
    assert call(server, f"/jobs/{running['_id']}", "DELETE").status == 405
    canceled = call(server, f"/jobs/{running['_id']}/cancel", "PUT")
    assert (canceled.status, canceled.body["status"]) == (200, "canceled")
