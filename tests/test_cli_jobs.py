"""`jobsync jobs ...` end to end against the simulator over a real socket, checked against
the simulated account's own ground truth; and the pager on a listing full of ties."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from jobsync.cli_jobs import collect_jobs, jobs
from jobsync.crawl import CrawlError
from jobsync.query import JobQuery
from jobsync.render import format_duration, job_table, result_table
from jobsync.timestamps import format_iso_ms, parse_iso_ms

TOKEN = "test-token"
CHILD_TYPES = ("export", "import")


@pytest.fixture(autouse=True)
def _no_stray_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no jobsync.toml can change the settings."""
    monkeypatch.chdir(tmp_path)
    for name in ("JOBSYNC_CONFIG", "JOBSYNC_API_URL", "JOBSYNC_REGION", "JOBSYNC_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


def invoke(simulator: Any, *args: str, token: str | None = TOKEN) -> Result:
    env = {"JOBSYNC_API_TOKEN": token} if token else {"JOBSYNC_API_TOKEN": ""}
    where = ["--api-url", simulator.url, "--dialect", simulator.options.dialect]
    return CliRunner().invoke(jobs, [*args, *where], env=env)


def every_job(simulator: Any) -> list[dict[str, Any]]:
    """Ground truth: every job the simulated API has right now, as its dialect shows it."""
    now, dialect = simulator.clock.now_ms(), simulator.options.dialect
    return list(simulator.account.listed_jobs(now, dialect).values())


def listed(simulator: Any) -> list[dict[str, Any]]:
    """Ground truth: the jobs a listing by flow, integration or date returns (integrator.io
    leaves the child jobs out of those)."""
    children = CHILD_TYPES if simulator.options.dialect == "integrator" else ()
    return [job for job in every_job(simulator) if job["type"] not in children]


def busiest_flow(simulator: Any) -> tuple[str, list[dict[str, Any]]]:
    jobs_of: dict[str, list[dict[str, Any]]] = {}
    for job in listed(simulator):
        jobs_of.setdefault(job.get("_flowId"), []).append(job)
    flow_id = max((f for f in jobs_of if f), key=lambda f: len(jobs_of[f]))
    return flow_id, jobs_of[flow_id]


def by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["_id"]: r for r in records}


def created(job: dict[str, Any]) -> int:
    return parse_iso_ms(job["createdAt"])


# --- jobs list ---------------------------------------------------------------------------


def test_list_all_of_a_flow_is_exactly_its_listed_jobs(simulator: Any) -> None:
    flow_id, expected = busiest_flow(simulator)
    result = invoke(simulator, "list", "--all", "--flow", flow_id, "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert len(got) == len({j["_id"] for j in got}), "no job twice"
    assert by_id(got) == by_id(expected)
    times = [created(j) for j in got]
    assert times == sorted(times, reverse=True), "newest first"


def test_list_all_pages_through_more_than_one_page(simulator: Any) -> None:
    everything = listed(simulator)
    page = simulator.options.page_cap
    assert len(everything) > page, "the simulated account should need several pages"
    flows = sorted({j["_flowId"] for j in everything if j.get("_flowId")})[:3]
    expected = [j for j in everything if j.get("_flowId") in flows]
    result = invoke(
        simulator, "list", "--all", *[a for f in flows for a in ("--flow", f)], "--json"
    )
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert len(got) == len(expected) > page
    assert by_id(got) == by_id(expected)


def test_list_without_all_shows_the_first_page_and_says_so(simulator: Any) -> None:
    result = invoke(simulator, "list", "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    page = simulator.options.page_cap
    assert len(got) == page
    newest = sorted((created(j) for j in listed(simulator)), reverse=True)[:page]
    assert sorted((created(j) for j in got), reverse=True) == newest
    assert "--all" in result.stderr


def test_list_limit_follows_pages_to_n_jobs(simulator: Any) -> None:
    limit = simulator.options.page_cap + 20
    result = invoke(simulator, "list", "--limit", str(limit), "--json")
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert len(got) == limit == len({j["_id"] for j in got})
    everything = by_id(listed(simulator))
    assert all(everything[j["_id"]] == j for j in got)
    newest = sorted((created(j) for j in everything.values()), reverse=True)[:limit]
    assert [created(j) for j in got] == newest


def test_list_filters_reach_the_api(simulator: Any) -> None:
    everything = listed(simulator)
    failed_flow_jobs = [j for j in everything if j["type"] == "flow" and j["status"] == "failed"]
    assert failed_flow_jobs
    times = sorted(created(j) for j in failed_flow_jobs)
    after, before = times[len(times) // 4], times[3 * len(times) // 4]
    expected = [j for j in failed_flow_jobs if after <= created(j) <= before]
    result = invoke(
        simulator,
        "list",
        "--all",
        "--type",
        "flow",
        "--status",
        "failed",
        "--created-after",
        format_iso_ms(after),
        "--created-before",
        format_iso_ms(before),
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert by_id(json.loads(result.stdout)) == by_id(expected)


def test_list_min_errors(simulator: Any) -> None:
    flow_id, flow_jobs = busiest_flow(simulator)
    expected = [j for j in flow_jobs if (j.get("numError") or 0) >= 1]
    result = invoke(simulator, "list", "--all", "--flow", flow_id, "--min-errors", "1", "--json")
    assert result.exit_code == 0, result.output
    assert by_id(json.loads(result.stdout)) == by_id(expected)


def test_list_by_exported_resolved_and_retriable(make_simulator: Any) -> None:
    simulator = make_simulator(odd_share=0.5, days=10)
    flow_id, flow_jobs = busiest_flow(simulator)
    filters = ["--min-exported", "1", "--max-exported", "400", "--min-resolved", "1", "--retriable"]
    result = invoke(simulator, "list", "--all", "--flow", flow_id, *filters, "--json")
    if simulator.options.dialect == "reference":
        assert result.exit_code == 2
        assert "no numResolved_gte filter; is --dialect right?" in result.stderr
        return
    assert result.exit_code == 0, result.output
    expected = [
        j
        for j in flow_jobs
        if 1 <= j["numExport"] <= 400 and j.get("numResolved", 0) >= 1 and j.get("retriable")
    ]
    assert expected and by_id(json.loads(result.stdout)) == by_id(expected)


def test_list_by_integration(simulator: Any) -> None:
    everything = listed(simulator)
    integration = Counter(j["_integrationId"] for j in everything).most_common()[-1][0]
    expected = [j for j in everything if j["_integrationId"] == integration]
    result = invoke(simulator, "list", "--all", "--integration", integration, "--json")
    assert result.exit_code == 0, result.output
    assert by_id(json.loads(result.stdout)) == by_id(expected)


@pytest.mark.parametrize(
    "knobs",
    [
        {"page_size": 30, "fault_rate": 0.3, "seed": 7},
        {"page_size": 40, "rate_limit": 5, "burst": 2},
    ],
    ids=["faults", "throttled"],
)
def test_list_all_survives_faults_and_throttling(
    make_simulator: Callable[..., Any], knobs: dict[str, Any]
) -> None:
    server = make_simulator(flows=2, days=3, runs_per_flow_per_day=20, **knobs)
    expected = listed(server)
    result = CliRunner().invoke(
        jobs,
        ["list", "--all", "--json", "--api-url", server.url, "--dialect", server.options.dialect],
        env={"JOBSYNC_API_TOKEN": TOKEN, "JOBSYNC_PAGE_SIZE": str(knobs["page_size"])},
    )
    assert result.exit_code == 0, result.output
    got = json.loads(result.stdout)
    assert len(got) == len(expected) > knobs["page_size"]
    assert by_id(got) == by_id(expected)
    assert server.stats.faults + server.stats.rate_limited > 0, "the server did misbehave"


def test_list_table_is_aligned_and_shows_the_jobs(simulator: Any) -> None:
    flow_id, flow_jobs = busiest_flow(simulator)
    result = invoke(simulator, "list", "--flow", flow_id, "--limit", "5")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "ID",
        "TYPE",
        "STATUS",
        "FLOW",
        "CREATED",
        "DURATION",
        "SUCCESS",
        "ERRORS",
        "IGNORED",
    ]
    assert len(lines) == 6
    ids = {j["_id"] for j in flow_jobs}
    status_at = lines[0].index("STATUS")
    for line in lines[1:]:
        assert line.split()[0] in ids
        assert flow_id in line
        assert line[status_at - 2 : status_at] == "  "  # columns line up under the header


def test_bad_dates_are_usage_errors(simulator: Any) -> None:
    result = invoke(simulator, "list", "--created-after", "last tuesday")
    assert result.exit_code == 2
    assert "--created-after" in result.output


def test_no_token_is_a_usage_error(simulator: Any) -> None:
    result = invoke(simulator, "list", token=None)
    assert result.exit_code == 2
    assert "no API token" in result.stderr


def test_a_wrong_token_exits_3(simulator: Any) -> None:
    result = invoke(simulator, "list", token="not-the-token")
    assert result.exit_code == 3
    assert "not-the-token" not in result.output


# --- jobs get / tree / cancel -------------------------------------------------------------


def test_get_shows_the_job(simulator: Any) -> None:
    job = listed(simulator)[0]
    result = invoke(simulator, "get", job["_id"], "--json")
    assert result.exit_code == 0, result.output
    now = simulator.clock.now_ms()
    assert json.loads(result.stdout) == simulator.account.job(
        job["_id"], now, simulator.options.dialect
    )
    table = invoke(simulator, "get", job["_id"])
    assert table.exit_code == 0
    assert job["_id"] in table.stdout and job["type"] in table.stdout


def test_get_of_an_unknown_job_prints_the_apis_message(simulator: Any) -> None:
    result = invoke(simulator, "get", "0123456789abcdef01234567")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Job not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def flow_job_with_children(simulator: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    everything = every_job(simulator)
    children_of: dict[str, list[dict[str, Any]]] = {}
    for job in everything:
        parent = job.get("_flowJobId", job.get("_parentJobId"))
        if parent:
            children_of.setdefault(parent, []).append(job)
    for job in everything:
        children = children_of.get(job["_id"], [])
        kinds = Counter(c["type"] for c in children)
        if job["type"] == "flow" and kinds["export"] and kinds["import"]:
            return job, children
    raise AssertionError("no flow job with export and import children")


def test_tree_shows_the_flow_job_and_its_children(simulator: Any) -> None:
    flow_job, children = flow_job_with_children(simulator)
    result = invoke(simulator, "tree", flow_job["_id"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].startswith(flow_job["_id"])
    child_lines = lines[2:]
    assert len(child_lines) == len(children)
    assert child_lines[-1].startswith("└─ ")
    assert all(line.startswith(("├─ ", "└─ ")) for line in child_lines)
    assert {line.split()[1] for line in child_lines} == {c["_id"] for c in children}
    types = [line.split()[2] for line in child_lines]
    assert types == sorted(types, key=lambda t: t != "export"), "exports before imports"


def test_tree_json_groups_children_by_type(simulator: Any) -> None:
    flow_job, children = flow_job_with_children(simulator)
    result = invoke(simulator, "tree", flow_job["_id"], "--json")
    assert result.exit_code == 0, result.output
    tree = json.loads(result.stdout)
    assert tree["flow"] == flow_job
    assert by_id(tree["exports"]) == by_id([c for c in children if c["type"] == "export"])
    assert by_id(tree["imports"]) == by_id([c for c in children if c["type"] == "import"])
    assert tree["others"] == []


def test_cancel_of_an_export_job_prints_the_apis_message(simulator: Any) -> None:
    export = next(j for j in every_job(simulator) if j["type"] == "export")
    result = invoke(simulator, "cancel", export["_id"])
    assert result.exit_code != 0
    assert "Only flow jobs can be canceled" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cancel_of_a_completed_job_is_a_conflict(simulator: Any) -> None:
    done = next(j for j in listed(simulator) if j["type"] == "flow" and j["status"] == "completed")
    result = invoke(simulator, "cancel", done["_id"])
    assert result.exit_code != 0
    assert "Cannot cancel completed job" in result.stderr


def test_cancel_of_a_running_flow_job(simulator: Any) -> None:
    account, clock = simulator.account, simulator.clock
    flow_jobs = sorted(
        (j for j in listed(simulator) if j["type"] == "flow"), key=created, reverse=True
    )
    for job in flow_jobs:  # move the clock to just after a run started
        clock.set(created(job) + 1)
        now = account.job(job["_id"], clock.now_ms(), simulator.options.dialect)
        if now is not None and now["status"] in ("queued", "running", "retrying"):
            break
    else:
        raise AssertionError("no moment with an unfinished flow job")
    result = invoke(simulator, "cancel", job["_id"], "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "canceled"
    assert (
        account.job(job["_id"], clock.now_ms(), simulator.options.dialect)["status"] == "canceled"
    )
    again = invoke(simulator, "cancel", job["_id"])
    assert again.exit_code == 1
    assert "Cannot cancel canceled job" in again.stderr


@pytest.mark.parametrize("command", [[], ["list"], ["get"], ["tree"], ["cancel"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = CliRunner().invoke(jobs, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output
    assert "--api-url" in result.output or not command


# --- the pager on ties --------------------------------------------------------------------


class TiedListing:
    """Newest-first pages of `size`, ties in a new random order on every call."""

    def __init__(self, jobs: list[dict[str, Any]], size: int, seed: int) -> None:
        self.jobs = jobs
        self.size = size
        self.rng = random.Random(seed)
        self.calls = 0

    async def list_jobs(self, query: JobQuery) -> list[Any]:
        self.calls += 1
        lte = query.created_at_lte
        hits = [j for j in self.jobs if lte is None or created(j) <= lte]
        self.rng.shuffle(hits)
        hits.sort(key=created, reverse=True)
        return hits[: self.size]


def tied_jobs(groups: list[int]) -> list[dict[str, Any]]:
    """Jobs in millisecond groups of the given sizes, one ms apart."""
    out = []
    for ms, count in enumerate(groups):
        for n in range(count):
            out.append({"_id": f"{ms}-{n}", "createdAt": format_iso_ms(1_700_000_000_000 + ms)})
    return out


@pytest.mark.parametrize("seed", range(5))
def test_pager_gets_every_tied_job_exactly_once(seed: int) -> None:
    jobs_ = tied_jobs([3, 4, 1, 4, 4, 2, 4, 1, 3])  # each group fits in a page
    source = TiedListing(jobs_, size=5, seed=seed)
    found, more = asyncio.run(collect_jobs(source, JobQuery(), 5, None, follow=True))
    assert sorted(j["_id"] for j in found) == sorted(j["_id"] for j in jobs_)
    assert more is False


def test_pager_stops_at_the_limit() -> None:
    source = TiedListing(tied_jobs([3, 3, 3, 3]), size=5, seed=0)
    found, more = asyncio.run(collect_jobs(source, JobQuery(), 5, 7, follow=True))
    assert len(found) == 7 == len({j["_id"] for j in found})
    assert more is True


def test_pager_refuses_a_millisecond_fuller_than_a_page() -> None:
    source = TiedListing(tied_jobs([2, 9]), size=5, seed=0)
    with pytest.raises(CrawlError, match="share createdAt"):
        asyncio.run(collect_jobs(source, JobQuery(), 5, None, follow=True))


# --- rendering ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (-1, "-"),
        (0.42, "0.4s"),
        (59.94, "59.9s"),
        (299, "4m59s"),
        (7380, "2h03m"),
        (3 * 86400 + 4 * 3600, "3d04h"),
    ],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_job_table_survives_odd_records_and_control_characters() -> None:
    table = job_table(
        [
            {"_id": "j\x1b[2J1", "type": "flow", "numSuccess": True, "createdAt": "yesterday"},
            ["not", "a", "job"],
        ]
    )
    assert "\x1b" not in table
    _, first, second = table.splitlines()
    assert first.split()[:2] == ["j?[2J1", "flow"]
    assert first.split()[-3:] == ["-", "-", "-"]
    assert second.startswith("<not a job: ")


def test_result_table_aligns_numbers_right_and_spells_null() -> None:
    table = result_table(["flow", "jobs", "rate"], [("f1", 12, 97.5), ("f22", 1200, None)])
    assert table.splitlines() == [
        "flow  jobs   rate",
        "f1      12  97.50",
        "f22   1200   NULL",
    ]
