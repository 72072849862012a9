"""`jobsync sync` end to end: the simulator over real sockets, a real DuckDB file read back,
several simulated nights, and the warehouse compared with the simulator's ground truth."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from conftest import listed_jobs, sync_into

from jobsync.api import JobsClient
from jobsync.errors import Unauthorized
from jobsync.simulator import Account, AccountConfig, ServerOptions, SimulatorServer
from jobsync.store import Warehouse
from jobsync.sync import SyncSummary

TOKEN = "test-token"
DAY = timedelta(days=1)


@contextmanager
def simulator(
    dialect: str, page_size: int | None = None, **knobs: Any
) -> Iterator[SimulatorServer]:
    server_knobs = {
        k: knobs.pop(k) for k in ("latency_ms", "rate_limit", "fault_rate") if k in knobs
    }
    account = Account(AccountConfig(**{"flows": 6, "days": 35, **knobs}))
    options = ServerOptions(TOKEN, page_size=page_size, dialect=dialect, **server_knobs)
    with SimulatorServer(account, options) as sim:
        yield sim


def sync(sim: SimulatorServer, db: Path, token: str = TOKEN, **options: Any) -> SyncSummary:
    return sync_into(sim, db, token, **options)


def stored(db: Path) -> dict[str, dict[str, Any]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {
            i: orjson.loads(raw) for i, raw in con.execute("SELECT id, raw FROM jobs").fetchall()
        }


def truth(sim: SimulatorServer) -> dict[str, dict[str, Any]]:
    return listed_jobs(sim)


def assert_warehouse_matches(db: Path, sim: SimulatorServer, ever_listed: set[str]) -> None:
    have = stored(db)
    now = truth(sim)
    missing = ever_listed - set(have)
    assert not missing, f"{len(missing)} jobs the API listed are not in the warehouse"
    stale = [i for i, job in now.items() if have.get(i) != job]
    assert not stale, f"{len(stale)} jobs differ from the API, e.g. {stale[:3]}"


def test_a_backfill_stores_exactly_what_the_api_lists(dialect: str, tmp_path: Path) -> None:
    db = tmp_path / "jobs.duckdb"
    with simulator(dialect, burst_share=0.6, odd_share=0.05) as sim:
        summary = sync(sim, db)
        listed = truth(sim)
        assert summary.outcome == "succeeded", summary.errors
        assert stored(db) == listed
        assert summary.counts.jobs_inserted == len(listed)
        assert summary.counts.rejects == 0
        assert summary.counts.partitions == 32  # one flow batch x (31 days + everything older)


def test_a_millisecond_with_more_than_a_page_of_jobs_is_fetched_whole(
    dialect: str, tmp_path: Path
) -> None:
    db = tmp_path / "jobs.duckdb"
    with simulator(dialect, crowded_ms_jobs=1200) as sim:
        crowded = {i for i, job in truth(sim).items() if job["createdAt"].endswith("11:17:42.123Z")}
        assert len(crowded) > 1001
        summary = sync(sim, db)
        assert summary.outcome == "succeeded", summary.errors
        assert stored(db) == truth(sim)


def test_small_pages_with_ties_across_page_boundaries(dialect: str, tmp_path: Path) -> None:
    db = tmp_path / "jobs.duckdb"
    with simulator(dialect, page_size=7, flows=4, days=3, burst_share=1.0) as sim:
        summary = sync(sim, db)
        assert summary.outcome == "succeeded", summary.errors
        listed = truth(sim)
        assert stored(db) == listed
        # listings of 7 jobs at most; integrator.io's flow listings leave the children out
        children = ("export", "import") if dialect == "integrator" else ()
        top_level = [j for j in listed.values() if j["type"] not in children]
        assert summary.counts.pages >= len(top_level) / 7 > 25


def test_nights_of_incremental_runs_keep_the_archive_complete(dialect: str, tmp_path: Path) -> None:
    db = tmp_path / "jobs.duckdb"
    with simulator(dialect, late_share=0.1, long_running_share=0.05, burst_share=0.5) as sim:
        ever: set[str] = set()
        requests = []
        for night in range(5):
            if night:
                sim.clock.advance(DAY + timedelta(minutes=7 * night))
            ever |= set(truth(sim))
            summary = sync(sim, db)
            assert summary.outcome == "succeeded", summary.errors
            assert_warehouse_matches(db, sim, ever)
            requests.append(summary.counts.requests)
        assert summary.counts.jobs_refreshed > 0, "jobs running across nights were refreshed"
        assert max(requests[1:]) < requests[0], "incremental runs read less than a backfill"
        purged = ever - set(truth(sim))
        assert purged, "jobs purged by the API stay in the archive"


def test_jobs_of_a_step_removed_from_its_flow_are_stored(dialect: str, tmp_path: Path) -> None:
    # every flow loses its last import at some moment of the history (35 days past, 10 to come)
    db = tmp_path / "jobs.duckdb"
    with simulator(dialect, edited_share=1.0) as sim:
        removed = {flow.import_ids[-1] for flow in sim.account.history.flows}
        ever: set[str] = set()
        for night in range(3):
            if night:
                sim.clock.advance(3 * DAY)
            listed = truth(sim)
            ever |= set(listed)
            orphans = {i for i, job in listed.items() if job.get("_importId") in removed}
            assert orphans, "jobs of removed imports are listed"
            summary = sync(sim, db)
            assert summary.outcome == "succeeded", summary.errors
            assert_warehouse_matches(db, sim, ever)


def test_a_rerun_with_nothing_new_changes_nothing(dialect: str, tmp_path: Path) -> None:
    db = tmp_path / "jobs.duckdb"
    with simulator(dialect) as sim:
        sync(sim, db)
        with duckdb.connect(str(db), read_only=True) as con:
            before = con.execute("SELECT * FROM jobs ORDER BY id").fetchall()
        again = sync(sim, db)
        assert (again.counts.jobs_inserted, again.counts.jobs_updated) == (0, 0)
        with duckdb.connect(str(db), read_only=True) as con:
            assert con.execute("SELECT * FROM jobs ORDER BY id").fetchall() == before
            runs = con.execute("SELECT outcome FROM sync_runs ORDER BY started_at").fetchall()
        assert runs == [("succeeded",), ("succeeded",)]


def test_throttling_and_faults_are_survived(dialect: str, tmp_path: Path) -> None:
    db = tmp_path / "jobs.duckdb"
    with simulator(dialect, flows=4, days=10, fault_rate=0.25, rate_limit=40) as sim:
        summary = sync(sim, db, concurrency=8)
        assert summary.outcome == "succeeded", summary.errors
        assert stored(db) == truth(sim)
        assert summary.counts.retries > 0


def test_max_duration_stops_cleanly_and_oldest_windows_come_first(
    dialect: str, tmp_path: Path
) -> None:
    db = tmp_path / "jobs.duckdb"
    with simulator(dialect, latency_ms=30) as sim:
        # a reference window takes a request, an integrator.io one dozens (children by step):
        # in flight at once, as many as let a few windows finish within the time
        in_flight = 1 if dialect == "reference" else 8
        partial = sync(sim, db, max_duration_s=0.6, concurrency=1, max_concurrency=in_flight)
        assert partial.outcome == "partial"
        have, listed = stored(db), truth(sim)
        assert 0 < len(have) < len(listed)
        oldest_missing = min(listed[i]["createdAt"] for i in set(listed) - set(have))
        newest_missing = max(listed[i]["createdAt"] for i in set(listed) - set(have))
        oldest_stored = min(job["createdAt"] for job in have.values())
        assert oldest_stored < oldest_missing, "the oldest jobs are secured first"
        assert newest_missing == max(job["createdAt"] for job in listed.values())
        finished = sync(sim, db)
        assert finished.outcome == "succeeded"
        assert stored(db) == listed
        assert finished.counts.jobs_inserted == len(listed) - len(have)


def test_a_rejected_token_ends_the_run_and_is_logged(dialect: str, tmp_path: Path) -> None:
    db = tmp_path / "jobs.duckdb"
    with simulator(dialect, days=2) as sim, pytest.raises(Unauthorized):
        sync(sim, db, token="wrong-token")
    with duckdb.connect(str(db), read_only=True) as con:
        outcome, error = con.execute("SELECT outcome, error FROM sync_runs").fetchone()
    assert outcome == "failed" and "wrong-token" not in error


def test_selected_flows_only(dialect: str, tmp_path: Path) -> None:
    db = tmp_path / "jobs.duckdb"
    with simulator(dialect, days=5) as sim:
        flows = [f["_id"] for f in sim.account.flows(sim.clock.now_ms(), dialect)][:2]
        summary = sync(sim, db, flow_ids=tuple(flows))
        assert summary.outcome == "succeeded"
        expected = {i: j for i, j in truth(sim).items() if j.get("_flowId") in flows}
        assert stored(db) == expected


def test_a_failing_writer_ends_the_run_with_its_error_instead_of_hanging(
    dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "jobs.duckdb"
    real_commit = Warehouse.commit_batch
    calls = []

    def failing_commit(self: Warehouse, *args: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real_commit(self, *args)

    monkeypatch.setattr(Warehouse, "commit_batch", failing_commit)
    with simulator(dialect, page_size=50, days=10) as sim, pytest.raises(OSError, match="No space"):
        sync(sim, db, concurrency=4, queue_pages=2, commit_rows=50)
    with duckdb.connect(str(db), read_only=True) as con:
        outcome, error = con.execute("SELECT outcome, error FROM sync_runs").fetchone()
    assert outcome == "failed" and "No space left" in error


def test_a_writer_held_up_stops_the_crawl_fetching_once_its_queue_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As one of DuckDB's checkpoints does: the crawl must wait before fetching, not go on
    fetching and hold each page in hand until the writer is back."""
    db = tmp_path / "jobs.duckdb"
    real_commit = Warehouse.commit_batch
    served_while_held: list[int] = []

    def held_up_commit(self: Warehouse, *args: Any) -> Any:
        if not served_while_held:
            before = sim.stats.requests
            time.sleep(1.0)
            served_while_held.append(sim.stats.requests - before)
        return real_commit(self, *args)

    monkeypatch.setattr(Warehouse, "commit_batch", held_up_commit)
    # children come with their flow jobs in this dialect: one request, one page
    with simulator("reference", page_size=50, days=10) as sim:
        summary = sync(sim, db, concurrency=8, max_concurrency=8, queue_pages=3, commit_rows=50)
        assert summary.outcome == "succeeded"
        assert_warehouse_matches(db, sim, set(truth(sim)))
    # at most the queue's pages and the client's window (max_concurrency: 8) more
    assert len(served_while_held) == 1 and served_while_held[0] <= 3 + 8


def test_a_flow_deleted_since_the_last_run_is_still_read_until_its_jobs_purge(
    dialect: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "jobs.duckdb"
    with simulator(dialect, days=3) as sim:
        assert sync(sim, db).outcome == "succeeded"
        gone = sim.account.flows(sim.clock.now_ms(), dialect)[0]["_id"]
        real_list_flows = JobsClient.list_flows

        async def without_gone(self: JobsClient) -> list[Any]:
            return [f for f in await real_list_flows(self) if f["_id"] != gone]

        monkeypatch.setattr(JobsClient, "list_flows", without_gone)
        sim.clock.advance(DAY)
        assert sync(sim, db).outcome == "succeeded"
        assert_warehouse_matches(db, sim, set(truth(sim)))
        assert any(job.get("_flowId") == gone for job in truth(sim).values())
