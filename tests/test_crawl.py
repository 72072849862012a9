"""The crawler against an in-memory listing with the API's rules (newest first, a page cap,
ties shuffled on every call): whatever the ties, every job is fetched exactly as listed."""

from __future__ import annotations

import asyncio
import logging
import random
import weakref
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobsync.api import ClientSettings, JobsClient
from jobsync.crawl import (
    Crawler,
    CrawlError,
    CrawlPage,
    flow_steps,
    job_keys,
    why_steps_miss_children,
)
from jobsync.cursor import CursorState
from jobsync.dialect import INTEGRATOR
from jobsync.errors import NotFound
from jobsync.job_record import as_dicts
from jobsync.partition import Partition
from jobsync.query import JobQuery
from jobsync.secret import ApiToken
from jobsync.simulator import SimulatorServer
from jobsync.simulator.history import DAY_MS
from jobsync.timestamps import format_iso_ms


class FakeListing:
    """The listing rules of the Jobs API over a list of jobs, with ties in random order."""

    def __init__(self, jobs: list[dict[str, Any]], page_size: int, seed: int = 0) -> None:
        self.jobs = jobs
        self.page_size = page_size
        self.rng = random.Random(seed)
        self.requests: list[JobQuery] = []

    async def list_jobs(self, query: JobQuery) -> list[Any]:
        self.requests.append(query)
        flows = set(query.flow_ids) | ({query.flow_id} if query.flow_id else set())
        hits = [j for j in self.jobs if self._matches(j, query, flows)]
        self.rng.shuffle(hits)
        hits.sort(key=lambda j: j["_ms"], reverse=True)
        return [{k: v for k, v in j.items() if k != "_ms"} for j in hits[: self.page_size]]

    async def get_job(self, job_id: str) -> dict[str, Any]:
        for job in self.jobs:
            if job["_id"] == job_id:
                return {k: v for k, v in job.items() if k != "_ms"}
        raise NotFound(404, "not_found", "Job not found")

    @staticmethod
    def _matches(job: dict[str, Any], q: JobQuery, flows: set[str]) -> bool:
        checks = [
            not flows or job["_flowId"] in flows,
            q.created_at_gte is None or job["_ms"] >= q.created_at_gte,
            q.created_at_lte is None or job["_ms"] <= q.created_at_lte,
            q.type is None or job["type"] == q.type,
            q.status is None or job["status"] == q.status,
            q.num_success_gte is None or job["numSuccess"] >= q.num_success_gte,
            q.num_success_lte is None or job["numSuccess"] <= q.num_success_lte,
        ]
        return all(checks)


def make_job(
    index: int, ms: int, flow: str, type_: str = "flow", status: str = "completed", success: int = 0
) -> dict[str, Any]:
    return {
        "_id": f"j{index:06d}",
        "_ms": ms,
        "createdAt": format_iso_ms(ms),
        "_flowId": flow,
        "type": type_,
        "status": status,
        "numSuccess": success,
    }


def crawl_all(source: FakeListing, partition: Partition, page_size: int) -> list[CrawlPage]:
    pages: list[CrawlPage] = []

    async def emit(page: CrawlPage) -> None:
        pages.append(page)

    asyncio.run(Crawler(source, page_size).crawl_partition(partition, emit))
    return pages


def fetched_ids(pages: list[CrawlPage]) -> list[str]:
    return [r["_id"] for page in pages for r in page.records]


BASE = 1_700_000_000_000


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 6),  # millisecond offset: few values, so ties are the rule
            st.sampled_from(["f1", "f2", "f3"]),
            st.sampled_from(["flow", "export", "import"]),
            st.sampled_from(["completed", "failed", "running"]),
            st.integers(0, 3),
        ),
        max_size=80,
    ),
    st.integers(2, 7),
    st.integers(0, 1000),
)
def test_every_job_is_fetched_whatever_the_ties(
    spec: list[tuple[int, str, str, str, int]], page_size: int, seed: int
) -> None:
    jobs = [make_job(i, BASE + ms, *rest) for i, (ms, *rest) in enumerate(spec)]
    source = FakeListing(jobs, page_size, seed)
    partition = Partition.fresh("p", ("f1", "f2", "f3"), BASE, BASE + 10)
    try:
        pages = crawl_all(source, partition, page_size)
    except CrawlError:
        # Only when more than a page of jobs agree on every filter the API offers.
        groups: dict[tuple[Any, ...], int] = {}
        for j in jobs:
            key = (j["_ms"], j["_flowId"], j["type"], j["status"], j["numSuccess"])
            groups[key] = groups.get(key, 0) + 1
        assert max(groups.values()) >= page_size
        return
    assert set(fetched_ids(pages)) == {j["_id"] for j in jobs}
    assert pages[-1].finished and all(not p.finished for p in pages[:-1])


def test_a_tie_group_across_a_page_boundary_is_not_skipped() -> None:
    # 3 newer jobs, then 4 sharing one millisecond; pages of 5 end inside the group.
    jobs = [make_job(i, BASE + 10 - i, "f") for i in range(3)]
    jobs += [make_job(10 + i, BASE + 5, "f") for i in range(4)]
    source = FakeListing(jobs, page_size=5, seed=3)
    pages = crawl_all(source, Partition.fresh("p", ("f",), None, BASE + 10), 5)
    assert sorted(fetched_ids(pages)) == sorted(j["_id"] for j in jobs)
    assert len(fetched_ids(pages)) == len(jobs), "ids already taken are not emitted twice"
    assert source.requests[1].created_at_lte == BASE + 5


def test_the_reference_minus_one_ms_cursor_would_have_lost_jobs() -> None:
    jobs = [make_job(i, BASE + 10 - i, "f") for i in range(3)]
    jobs += [make_job(10 + i, BASE + 5, "f") for i in range(4)]
    first_page = asyncio.run(FakeListing(jobs, 5).list_jobs(JobQuery(flow_id="f")))
    last = min(job_keys(first_page)[0])[0]
    rest = asyncio.run(
        FakeListing(jobs, 5).list_jobs(JobQuery(flow_id="f", created_at_lte=last - 1))
    )
    assert len({j["_id"] for j in first_page + rest}) < len(jobs)


def test_a_crowded_millisecond_is_split_by_type_status_and_flow() -> None:
    jobs = [
        make_job(
            i, BASE, f"f{i % 3}", ["flow", "export"][i % 2], ["completed", "failed"][i % 5 == 0]
        )
        for i in range(40)
    ]
    source = FakeListing(jobs, page_size=8)
    pages = crawl_all(source, Partition.fresh("p", ("f0", "f1", "f2"), None, BASE), 8)
    assert set(fetched_ids(pages)) == {j["_id"] for j in jobs}
    assert any(q.type and q.status and q.flow_id for q in source.requests)
    assert pages[-1].finished


def test_cursor_states_are_emitted_after_the_pages_they_cover() -> None:
    jobs = [make_job(i, BASE - i * 10, "f") for i in range(12)]
    pages = crawl_all(FakeListing(jobs, 5), Partition.fresh("p", ("f",), None, BASE), 5)
    states = [p.cursor for p in pages if p.cursor is not None]
    assert states == [
        CursorState(BASE - 40, frozenset({"j000004"})),
        CursorState(BASE - 80, frozenset({"j000008"})),
    ]


class WatchedJob(dict):
    """A listed job a weak reference can watch, to see when nothing holds it any more."""


class WatchedListing(FakeListing):
    async def list_jobs(self, query: JobQuery) -> list[Any]:
        return [WatchedJob(job) for job in await super().list_jobs(query)]


def test_an_emitted_page_is_the_emits_to_let_go_of() -> None:
    """Once emit has the records, the crawler holds none: the sync keeps only their compact
    rows while it waits for the writer's queue."""
    jobs = [make_job(i, BASE - i * 10, "f") for i in range(12)]
    still_held: list[int] = []

    async def emit(page: CrawlPage) -> None:
        watched = [weakref.ref(job) for job in page.records]
        del page
        await asyncio.sleep(0)
        still_held.append(sum(ref() is not None for ref in watched))

    crawler = Crawler(WatchedListing(jobs, 5), 5)
    asyncio.run(crawler.crawl_partition(Partition.fresh("p", ("f",), None, BASE), emit))
    assert still_held == [0, 0, 0]


def test_a_resumed_partition_starts_at_its_cursor() -> None:
    jobs = [make_job(i, BASE - i * 10, "f") for i in range(12)]
    source = FakeListing(jobs, 5)
    resumed = Partition("p", ("f",), None, BASE, CursorState(BASE - 40, frozenset({"j000004"})))
    pages = crawl_all(source, resumed, 5)
    assert sorted(fetched_ids(pages)) == [f"j{i:06d}" for i in range(5, 12)]
    assert source.requests[0].created_at_lte == BASE - 40


def test_refresh_reports_a_job_the_api_no_longer_has() -> None:
    source = FakeListing([make_job(1, BASE, "f")], 5)
    pages: list[CrawlPage] = []

    async def emit(page: CrawlPage) -> None:
        pages.append(page)

    crawler = Crawler(source, 5)
    assert asyncio.run(crawler.refresh("j000001", emit)) is True
    assert asyncio.run(crawler.refresh("gone", emit)) is False
    assert fetched_ids(pages) == ["j000001"]


@pytest.mark.parametrize("record", [None, "x", {"_id": 5}, {"_id": "a", "createdAt": "bad"}])
def test_job_keys_skip_records_without_a_position(record: Any) -> None:
    keys, ids = job_keys([record, {"_id": "b", "createdAt": format_iso_ms(BASE)}])
    assert keys == [(BASE, "b")]
    assert ids[1] == "b"


def test_negative_counts_are_found_and_unsplittable_jobs_fail_loudly() -> None:
    jobs = [make_job(i, BASE, "f", success=i % 4 - 1) for i in range(30)]  # counts -1..2
    source = FakeListing(jobs, page_size=10)
    pages = crawl_all(source, Partition.fresh("p", ("f",), None, BASE), 10)
    assert set(fetched_ids(pages)) == {j["_id"] for j in jobs}
    assert any(q.num_success_lte is not None and q.num_success_lte < 0 for q in source.requests)
    jobs.append({**make_job(99, BASE, "f"), "status": None})
    with pytest.raises(CrawlError, match="match none of the filters"):
        crawl_all(FakeListing(jobs, page_size=10), Partition.fresh("p", ("f",), None, BASE), 10)


# --- child jobs where the flow listing leaves them out (integrator.io) ------------------


class RecordingSource:
    """The API client, noting every listing the crawler asks it for."""

    def __init__(self, client: JobsClient) -> None:
        self.client = client
        self.dialect = client.dialect
        self.queries: list[JobQuery] = []

    async def list_jobs(self, query: JobQuery) -> list[Any]:
        self.queries.append(query)
        return await self.client.list_jobs(query)

    async def get_job(self, job_id: str) -> dict[str, Any]:
        return await self.client.get_job(job_id)


def crawl_integrator(
    sim: SimulatorServer, know_steps: bool
) -> tuple[list[CrawlPage], list[JobQuery]]:
    """Crawl one partition (every flow, the whole history) of an integrator simulator with
    small pages; (emitted pages, listings sent)."""
    settings = ClientSettings(
        base_url=sim.url, token=ApiToken(sim.options.token), dialect="integrator"
    )
    config = sim.account.config
    begin = config.start_ms - config.days * DAY_MS
    pages: list[CrawlPage] = []

    async def emit(page: CrawlPage) -> None:
        pages.append(page)

    async def main() -> list[JobQuery]:
        async with JobsClient(settings) as client:
            source = RecordingSource(client)
            crawler = Crawler(source, sim.options.page_cap, INTEGRATOR)
            flows = await client.list_flows()
            if know_steps:
                crawler.learn_flows(flows)
            ids = tuple(sorted(f["_id"] for f in flows))
            partition = Partition.fresh("p", ids, begin, sim.clock.now_ms())
            await crawler.crawl_partition(partition, emit)
            return source.queries

    queries = asyncio.run(main())
    return pages, queries


@pytest.mark.parametrize("dialect", ["integrator"])
@pytest.mark.parametrize("know_steps", [True, False], ids=["by-step", "by-flow-job"])
def test_children_come_complete_and_before_the_cursor_passes_their_flow_job(
    make_simulator: Callable[..., SimulatorServer], know_steps: bool
) -> None:
    sim = make_simulator(flows=3, days=3, page_size=40, long_running_share=0.2)
    pages, queries = crawl_integrator(sim, know_steps)
    truth = sim.account.listed_jobs(sim.clock.now_ms(), "integrator")
    got = {r["_id"]: r for page in pages for r in as_dicts(page.records)}
    assert got == truth, "children carry their flow's ids, filled in from the flow job"
    emitted: set[str] = set()
    for page in pages:
        emitted |= {r["_id"] for r in page.records}
        if page.cursor is None and not page.finished:
            continue
        for job in page.records:  # the cursor passes these flow jobs: their children are in
            kids = {
                i
                for i, j in truth.items()
                if job["_id"] in (j.get("_flowJobId"), j.get("_parentJobId"))
            }
            assert kids <= emitted, job["_id"]
    top_level = sum(1 for j in truth.values() if j["type"] in INTEGRATOR.top_level_types)
    if know_steps:  # a request per step, not per flow job
        assert len(queries) < top_level / 4
    else:
        assert len(queries) > top_level


@pytest.mark.parametrize("dialect", ["integrator"])
def test_children_go_by_flow_job_through_a_window_in_which_a_flow_lost_a_step(
    make_simulator: Callable[..., SimulatorServer], caplog: pytest.LogCaptureFixture
) -> None:
    sim = make_simulator(flows=3, days=3, future_days=0, page_size=40, edited_share=1.0)
    removed = {flow.import_ids[-1] for flow in sim.account.history.flows}
    truth = sim.account.listed_jobs(sim.clock.now_ms(), "integrator")
    assert any(job.get("_importId") in removed for job in truth.values())
    with caplog.at_level(logging.DEBUG, logger="jobsync.crawl"):
        pages, queries = crawl_integrator(sim, know_steps=True)
    assert {r["_id"]: r for page in pages for r in as_dicts(page.records)} == truth
    assert not any(q.export_id or q.import_id for q in queries), "no listing by step"
    assert "children by flow job: flow" in caplog.text and "after the window began" in caplog.text


def step_flow(flow_id: str, last_modified: Any = None) -> dict[str, Any]:
    """A `GET /flows` record with one export and one import, and `lastModified` if given."""
    flow = {
        "_id": flow_id,
        "pageGenerators": [{"_exportId": f"{flow_id}-e"}],
        "pageProcessors": [{"type": "import", "_importId": f"{flow_id}-i"}],
    }
    return flow if last_modified is None else {**flow, "lastModified": last_modified}


@pytest.mark.parametrize(
    ("last_modified", "by_step"),
    [
        (format_iso_ms(BASE - DAY_MS), True),  # its steps were the same all through the window
        (format_iso_ms(BASE), True),  # changed at the window's first millisecond
        ("2023-11-15T00:13:19.999+02:00", True),  # any offset: BASE - 1 ms
        (format_iso_ms(BASE + 1), False),  # inside the window
        (format_iso_ms(BASE + 5 * DAY_MS), False),  # after it: its jobs had steps now gone
        (None, False),  # missing
        ("yesterday", False),
        ("2023-11-14T22:13:19.000", False),  # no timezone: unknown
        (BASE - DAY_MS, False),  # a number, not the API's timestamp
    ],
)
def test_children_go_by_step_only_when_every_flows_steps_predate_the_window(
    last_modified: Any, by_step: bool
) -> None:
    steps = flow_steps(
        [step_flow("f1", format_iso_ms(BASE - DAY_MS)), step_flow("f2", last_modified)]
    )
    partition = Partition.fresh("p", ("f1", "f2"), BASE, BASE + DAY_MS - 1)
    reason = why_steps_miss_children(partition, steps)
    assert (reason is None) == by_step, reason
    if not by_step:
        assert "f2" in reason


def test_children_go_by_flow_job_when_steps_or_the_window_start_are_unknown() -> None:
    old = format_iso_ms(BASE - DAY_MS)
    steps = flow_steps([step_flow("f1", old), {"_id": "f2", "lastModified": old}])
    assert set(steps) == {"f1"}, "a flow listing no steps has unknown steps"
    assert why_steps_miss_children(Partition.fresh("p", ("f1",), BASE, BASE + 9), steps) is None
    reason = why_steps_miss_children(Partition.fresh("p", ("f1", "f2"), BASE, BASE + 9), steps)
    assert reason == "the steps of flow f2 are unknown"
    reason = why_steps_miss_children(Partition.fresh("p", ("f1",), None, BASE + 9), steps)
    assert reason == "the window has no start"


def test_a_listing_that_ignores_the_flow_filter_fails_loudly() -> None:
    class IgnoresFlows(FakeListing):
        dialect = INTEGRATOR

        async def list_jobs(self, query: JobQuery) -> list[Any]:
            return await super().list_jobs(replace(query, flow_id=None, flow_ids=()))

    jobs = [make_job(i, BASE + i, f"f{i % 2}") for i in range(6)]
    source = IgnoresFlows(jobs, page_size=10)
    with pytest.raises(CrawlError, match="ignored the filter `_flowId`"):
        asyncio.run(
            Crawler(source, 10, INTEGRATOR).crawl_partition(
                Partition.fresh("p", ("f0",), None, BASE + 10), lambda page: asyncio.sleep(0)
            )
        )
