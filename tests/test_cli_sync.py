"""`jobsync sync` as users and schedulers run it: a real process, exit codes, stderr, and a
SIGKILL in the middle of a backfill."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import orjson
import pytest
from conftest import listed_jobs

from jobsync.simulator import Account, AccountConfig, ServerOptions, SimulatorServer

TOKEN = "cli-test-token"


@pytest.fixture
def slow_sim(dialect: str) -> Iterator[SimulatorServer]:
    """An account whose backfill takes a few seconds: 40 ms a request, in each dialect."""
    account = Account(AccountConfig(flows=8, days=35))
    options = ServerOptions(TOKEN, page_size=200, latency_ms=40, dialect=dialect)
    with SimulatorServer(account, options) as sim:
        yield sim


def jobsync(*args: str, token: str | None = TOKEN, **popen: object) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYNC_")}
    if token is not None:
        env["JOBSYNC_API_TOKEN"] = token
    return subprocess.Popen(
        [sys.executable, "-m", "jobsync", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,  # type: ignore[arg-type]
    )


def run(*args: str, token: str | None = TOKEN) -> subprocess.CompletedProcess[str]:
    process = jobsync(*args, token=token)
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def sync_args(sim: SimulatorServer, db: Path, *extra: str) -> list[str]:
    where = ["--api-url", sim.url, "--dialect", sim.options.dialect]
    return ["sync", *where, "--db", str(db), "--page-size", "200", *extra]


def stored_ids(db: Path) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return [row[0] for row in con.execute("SELECT id FROM jobs").fetchall()]


def wait_for_requests(sim: SimulatorServer, count: int, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while sim.stats.requests < count:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the sync made no progress"
        time.sleep(0.01)


def test_sync_prints_a_summary_and_exits_zero(slow_sim: SimulatorServer, tmp_path: Path) -> None:
    result = run(*sync_args(slow_sim, tmp_path / "j.duckdb", "--json"))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["outcome"] == "succeeded"
    listed = listed_jobs(slow_sim)
    assert summary["jobs_inserted"] == len(listed)
    assert sorted(stored_ids(tmp_path / "j.duckdb")) == sorted(listed)
    assert TOKEN not in result.stdout + result.stderr


def test_quiet_prints_nothing_on_success(slow_sim: SimulatorServer, tmp_path: Path) -> None:
    result = run(*sync_args(slow_sim, tmp_path / "j.duckdb", "-q", "--flow", "x"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def kill_after_a_commit(
    sim: SimulatorServer, process: subprocess.Popen[str], requests: int
) -> None:
    """SIGKILL the sync at the first commit it logs (-v) once the simulator has served
    `requests` requests."""
    commits: queue.Queue[int] = queue.Queue()

    def read_log() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            if "DEBUG: stored " in line:
                commits.put(sim.stats.requests)

    threading.Thread(target=read_log, daemon=True).start()
    deadline = time.monotonic() + 60
    while commits.get(timeout=max(deadline - time.monotonic(), 0.01)) < requests:
        assert process.poll() is None, "the sync ended before it was killed"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def test_a_killed_backfill_resumes_without_starting_over(
    slow_sim: SimulatorServer, tmp_path: Path
) -> None:
    db = tmp_path / "j.duckdb"
    listed = listed_jobs(slow_sim)
    # requests before each kill: integrator.io's backfill spends most of its requests on
    # child jobs listed by step, a whole window at a time. The reference's 92 requests take
    # one a time, so that the sync's commits (once a second, below a row group) come between.
    reference = slow_sim.options.dialect == "reference"
    concurrency, kills = ("1", (8, 8)) if reference else ("4", (40, 300))
    for kill_after in kills:
        process = jobsync(*sync_args(slow_sim, db, "--concurrency", concurrency, "-v"))
        kill_after_a_commit(slow_sim, process, slow_sim.stats.requests + kill_after)
    kept = stored_ids(db)
    assert 0 < len(kept) < len(listed)
    before = slow_sim.stats.requests
    result = run(*sync_args(slow_sim, db, "--json"))
    assert result.returncode == 0, result.stderr
    resumed = json.loads(result.stdout)
    assert resumed["jobs_inserted"] == len(listed) - len(kept)
    ids = stored_ids(db)
    assert sorted(ids) == sorted(listed), "nothing lost, nothing duplicated"
    with duckdb.connect(str(db), read_only=True) as con:
        outcomes = [
            r[0]
            for r in con.execute("SELECT outcome FROM sync_runs ORDER BY started_at").fetchall()
        ]
        raws = dict(con.execute("SELECT id, raw FROM jobs").fetchall())
    assert outcomes == ["interrupted", "interrupted", "succeeded"]
    assert all(orjson.loads(raws[i]) == job for i, job in listed.items())
    full = run(*sync_args(slow_sim, tmp_path / "fresh.duckdb", "--json"))
    full_requests = json.loads(full.stdout)["requests"]
    assert slow_sim.stats.requests - before - full_requests < full_requests


def test_a_second_sync_on_the_same_warehouse_is_refused(
    slow_sim: SimulatorServer, tmp_path: Path
) -> None:
    db = tmp_path / "j.duckdb"
    first = jobsync(*sync_args(slow_sim, db))
    wait_for_requests(slow_sim, slow_sim.stats.requests + 3, first)
    second = run(*sync_args(slow_sim, db))
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)
    assert second.returncode == 4
    assert "in use by another process" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.returncode == 130, "SIGTERM stops the first run cleanly"
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT outcome FROM sync_runs").fetchall() == [("interrupted",)]


def test_a_bad_token_exits_3_without_showing_it(slow_sim: SimulatorServer, tmp_path: Path) -> None:
    result = run(*sync_args(slow_sim, tmp_path / "j.duckdb", "-v"), token="not-the-token")
    assert result.returncode == 3
    assert "token" in result.stderr.lower()
    assert "not-the-token" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since"),
        (["--overlap", "soon"], "overlap"),
        (["--concurrency", "0"], "concurrency"),
        (["--max-duration", "-5"], "duration"),
    ],
)
def test_usage_errors_exit_2(
    slow_sim: SimulatorServer, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run(*sync_args(slow_sim, tmp_path / "j.duckdb", *args))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_no_token_exits_2_and_says_where_to_put_one(tmp_path: Path) -> None:
    result = run(
        "sync", "--api-url", "http://127.0.0.1:9/v1", "--db", str(tmp_path / "j"), token=None
    )
    assert result.returncode == 2
    assert "JOBSYNC_API_TOKEN" in result.stderr


def test_plain_http_to_a_remote_host_is_refused(tmp_path: Path) -> None:
    result = run("sync", "--api-url", "http://example.com/v1", "--db", str(tmp_path / "j"))
    assert result.returncode == 2
    assert "--insecure" in result.stderr


def test_flows_file_with_comments(slow_sim: SimulatorServer, tmp_path: Path) -> None:
    flows = [f["_id"] for f in slow_sim.account.flows(slow_sim.clock.now_ms())][:2]
    path = tmp_path / "flows.txt"
    path.write_text(f"# nightly flows\n{flows[0]}  # orders\n\n{flows[1]}\n")
    db = tmp_path / "j.duckdb"
    result = run(*sync_args(slow_sim, db, "--flows-file", str(path), "-q"))
    assert result.returncode == 0, result.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        got = {r[0] for r in con.execute("SELECT DISTINCT flow_id FROM jobs").fetchall()}
    assert got == set(flows)


def test_sync_parquet_archives_what_it_committed(slow_sim: SimulatorServer, tmp_path: Path) -> None:
    db, dest = tmp_path / "j.duckdb", tmp_path / "archive"
    result = run(*sync_args(slow_sim, db, "--parquet", str(dest)))
    assert result.returncode == 0, result.stderr
    assert "archive" in result.stdout and "months written" in result.stdout
    with duckdb.connect(str(db), read_only=True) as con:
        warehouse = con.execute("SELECT id, raw::VARCHAR FROM jobs ORDER BY id").fetchall()
        parquet = con.execute(
            f"SELECT id, raw FROM read_parquet('{dest}/jobs/*/*.parquet', hive_partitioning=true) "
            "ORDER BY id"
        ).fetchall()
    assert parquet == warehouse and len(warehouse) > 0
