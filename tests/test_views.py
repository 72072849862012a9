"""The analyst views of schemas/views.sql, checked against the reference's own metric functions
on a real synced warehouse; the README's example questions, run exactly as written; and the
schemas shipped inside the wheel."""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from conftest import sync_into

from jobsync.archive import archive_warehouse
from jobsync.dialect import DIALECT_NAMES
from jobsync.records import normalise_page
from jobsync.schema_files import schema_path, schema_text
from jobsync.simulator import Account, AccountConfig, ServerOptions, SimulatorServer
from jobsync.store import Warehouse
from jobsync.timestamps import now_ms

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-token"
VIEWS = ("job_metrics", "flow_daily", "flow_job_trees")

# The README's "Asking questions" section, verbatim: each runs as written in `jobsync query`
# (and the last in DuckDB from the folder that holds the archive).
FAILED_MOST_THIS_WEEK = """\
SELECT flow_id,
       sum(runs) AS runs,
       sum(failed) AS failed,
       round(100.0 * sum(failed) / sum(runs), 1) AS failed_pct
FROM flow_daily
WHERE day >= current_date - 7
GROUP BY flow_id
ORDER BY failed DESC, flow_id
LIMIT 10;"""

RELIABILITY_AND_SPEED = """\
SELECT flow_id,
       count(*) AS runs,
       round(avg(success_rate), 2) AS avg_success_rate,
       round(median(duration_seconds), 1) AS median_seconds,
       round(quantile_cont(duration_seconds, 0.95), 1) AS p95_seconds
FROM job_metrics
WHERE type = 'flow' AND created_at >= now() - INTERVAL 30 DAY
GROUP BY flow_id
ORDER BY p95_seconds DESC;"""

RUNS_THAT_LOST_RECORDS = """\
SELECT flow_job_id, flow_id, status, created_at,
       export_jobs, import_jobs, failed_child_jobs, child_error
FROM flow_job_trees
WHERE child_error > 0 AND created_at >= current_date - 7
ORDER BY child_error DESC, flow_job_id
LIMIT 20;"""

ERROR_RATE_TREND = """\
SELECT day,
       sum(runs) AS runs,
       sum(records_errored) AS errored,
       round(100.0 * sum(records_errored)
             / nullif(sum(records_succeeded + records_errored + records_ignored), 0), 3)
           AS error_rate
FROM flow_daily
GROUP BY day
ORDER BY day;"""

FAILED_PER_MONTH_FROM_PARQUET = """\
SELECT created_month, count(*) AS failed_flow_runs
FROM read_parquet('archive/jobs/*/*.parquet', hive_partitioning = true)
WHERE type = 'flow' AND status = 'failed'
GROUP BY created_month
ORDER BY created_month;"""

QUESTIONS = (
    FAILED_MOST_THIS_WEEK,
    RELIABILITY_AND_SPEED,
    RUNS_THAT_LOST_RECORDS,
    ERROR_RATE_TREND,
    FAILED_PER_MONTH_FROM_PARQUET,
)


def create_views(warehouse: Warehouse) -> None:
    """What Warehouse.open does on a read-write open: every statement of views.sql."""
    for statement in view_statements():
        warehouse.connection.execute(statement)


def view_statements() -> list[str]:
    text = re.sub(r"--[^\n]*", "", schema_text("views.sql"))
    return [part.strip() for part in text.split(";") if part.strip()]


@pytest.fixture(scope="module", params=DIALECT_NAMES)
def db(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A warehouse synced from an account whose history ends now, so that questions about
    "the last 7 days" have answers, with the views created; once per dialect."""
    db = tmp_path_factory.mktemp("views") / "jobs.duckdb"
    account = Account(AccountConfig(flows=6, days=35, start_ms=now_ms() // 60_000 * 60_000))
    with SimulatorServer(account, ServerOptions(TOKEN, dialect=request.param)) as sim:
        summary = sync_into(sim, db)
    assert summary.outcome == "succeeded", summary.errors
    return db


@pytest.fixture
def con(db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection, as analysts and `jobsync query` open the file."""
    with Warehouse.open(db, read_only=True) as warehouse:
        yield warehouse.connection


def records(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every stored job as the API sent it."""
    return [orjson.loads(raw) for (raw,) in con.execute("SELECT raw FROM jobs").fetchall()]


def fetch(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    result = con.execute(sql)
    columns = [c[0] for c in result.description]
    return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]


# The reference's metric functions, with a missing or null count read as 0.
def calculate_success_rate(job: dict[str, Any]) -> float:
    total = count(job, "numSuccess") + count(job, "numError") + count(job, "numIgnore")
    if total == 0:
        return 100.0
    return (count(job, "numSuccess") / total) * 100


def calculate_duration_seconds(job: dict[str, Any]) -> float | None:
    if not job.get("startedAt") or not job.get("endedAt"):
        return None
    start = datetime.fromisoformat(job["startedAt"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(job["endedAt"].replace("Z", "+00:00"))
    return (end - start).total_seconds()


def count(job: dict[str, Any], field: str) -> int:
    return job.get(field) or 0


def utc_day(job: dict[str, Any]) -> date:
    return datetime.fromisoformat(job["createdAt"].replace("Z", "+00:00")).astimezone(UTC).date()


def quantile_cont(values: list[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks, as DuckDB's quantile_cont."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def test_views_sql_is_plain_idempotent_view_statements(db: Path) -> None:
    comments = re.findall(r"--[^\n]*", schema_text("views.sql"))
    assert not [c for c in comments if ";" in c or "'" in c], "the loader splits on ;"
    statements = view_statements()
    assert [s.split("(")[0].split()[4] for s in statements if "VIEW" in s] == list(VIEWS)
    assert all(s.startswith("CREATE OR REPLACE VIEW") for s in statements)
    with Warehouse.open(db) as warehouse:
        create_views(warehouse)  # a second time: nothing changes, nothing fails
        names = warehouse.connection.execute(
            "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name"
        ).fetchall()
    assert [n for (n,) in names] == sorted(VIEWS)


def test_job_metrics_follows_the_reference(con: duckdb.DuckDBPyConnection) -> None:
    expected = {job["_id"]: job for job in records(con)}
    rows = fetch(con, "SELECT id, success_rate, duration_seconds FROM job_metrics")
    assert len(rows) == len(expected)
    for row in rows:
        job = expected[row["id"]]
        assert row["success_rate"] == pytest.approx(calculate_success_rate(job))
        assert row["duration_seconds"] == pytest.approx(calculate_duration_seconds(job))
    no_records = [r for r in rows if calculate_success_rate(expected[r["id"]]) == 100.0]
    assert no_records and all(r["success_rate"] == 100.0 for r in no_records)
    types = dict(
        con.execute("SELECT column_name, column_type FROM (DESCRIBE job_metrics)").fetchall()
    )
    assert (types["success_rate"], types["duration_seconds"]) == ("DOUBLE", "DOUBLE")


def test_jobs_without_records_or_an_end_get_the_reference_answers(tmp_path: Path) -> None:
    base = {"type": "flow", "_flowId": "f1", "createdAt": "2026-11-02T23:30:00.000Z"}
    page = normalise_page(
        [
            {**base, "_id": "empty", "status": "completed", "numSuccess": 0, "numError": 0},
            {**base, "_id": "running", "status": "running", "numSuccess": 3,
             "startedAt": "2026-11-02T23:30:01.000Z", "endedAt": None},
            {**base, "_id": "done", "status": "failed", "numSuccess": 1, "numError": 3,
             "startedAt": "2026-11-02T23:30:01.000Z", "endedAt": "2026-11-02T23:31:01.500Z"},
        ]
    )  # fmt: skip
    with Warehouse.open(tmp_path / "jobs.duckdb") as warehouse:
        warehouse.commit_batch(page.rows, [], {}, "run-1", now_ms())
        create_views(warehouse)
        con = warehouse.connection
        metrics = con.execute(
            "SELECT id, success_rate, duration_seconds FROM job_metrics ORDER BY id"
        ).fetchall()
        daily = fetch(con, "SELECT * FROM flow_daily")
    assert metrics == [("done", 25.0, 60.5), ("empty", 100.0, None), ("running", 100.0, None)]
    assert len(daily) == 1
    assert daily[0]["day"] == date(2026, 11, 2)
    assert (daily[0]["runs"], daily[0]["failed"], daily[0]["records_errored"]) == (3, 1, 3)
    assert daily[0]["error_rate"] == pytest.approx(100 * 3 / 7)
    assert daily[0]["median_duration_seconds"] == daily[0]["p95_duration_seconds"] == 60.5


def test_flow_daily_counts_each_flows_runs_per_utc_day(con: duckdb.DuckDBPyConnection) -> None:
    groups: dict[tuple[str, date], list[dict[str, Any]]] = defaultdict(list)
    for job in records(con):
        if job["type"] == "flow":
            groups[(job["_flowId"], utc_day(job))].append(job)
    con.execute("SET TimeZone = 'Pacific/Auckland'")  # the day stays a UTC day
    rows = {(r["flow_id"], r["day"]): r for r in fetch(con, "SELECT * FROM flow_daily")}
    assert set(rows) == set(groups)
    for key, runs in groups.items():
        row = rows[key]
        errored = sum(count(j, "numError") for j in runs)
        total = sum(count(j, f) for j in runs for f in ("numSuccess", "numError", "numIgnore"))
        durations = [d for j in runs if (d := calculate_duration_seconds(j)) is not None]
        assert row["runs"] == len(runs)
        assert row["failed"] == sum(j["status"] == "failed" for j in runs)
        assert row["canceled"] == sum(j["status"] == "canceled" for j in runs)
        assert row["records_succeeded"] == sum(count(j, "numSuccess") for j in runs)
        assert row["records_errored"] == errored
        assert row["records_ignored"] == sum(count(j, "numIgnore") for j in runs)
        assert row["error_rate"] == pytest.approx(100 * errored / total if total else 0.0)
        median = statistics.median(durations) if durations else None
        assert row["median_duration_seconds"] == pytest.approx(median)
        assert row["p95_duration_seconds"] == pytest.approx(quantile_cont(durations, 0.95))
    assert sum(r["failed"] for r in rows.values()) > 0


def test_flow_job_trees_sum_up_each_runs_children(con: duckdb.DuckDBPyConnection) -> None:
    jobs = records(con)
    children: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for job in jobs:  # integrator.io links some children by `_parentJobId`
        if parent := job.get("_flowJobId", job.get("_parentJobId")):
            children[parent].append(job)
    flows = {job["_id"]: job for job in jobs if job["type"] == "flow"}
    rows = {r["flow_job_id"]: r for r in fetch(con, "SELECT * FROM flow_job_trees")}
    assert set(rows) == set(flows)
    for flow_job_id, row in rows.items():
        kids = children[flow_job_id]
        assert row["flow_id"] == flows[flow_job_id]["_flowId"]
        assert row["child_jobs"] == len(kids)
        assert row["export_jobs"] == sum(k["type"] == "export" for k in kids)
        assert row["import_jobs"] == sum(k["type"] == "import" for k in kids)
        assert row["failed_child_jobs"] == sum(k["status"] == "failed" for k in kids)
        assert row["child_success"] == sum(count(k, "numSuccess") for k in kids)
        assert row["child_error"] == sum(count(k, "numError") for k in kids)
        assert row["child_ignore"] == sum(count(k, "numIgnore") for k in kids)
    # (integrator.io's retry jobs have children too, but are no flow runs)
    assert sum(row["child_jobs"] for row in rows.values()) == sum(len(children[f]) for f in flows)


# -- the README's questions -------------------------------------------------------------------


def test_which_flows_failed_most_this_week(con: duckdb.DuckDBPyConnection) -> None:
    since = datetime.now(tz=UTC).date() - timedelta(days=7)
    runs: dict[str, int] = defaultdict(int)
    failed: dict[str, int] = defaultdict(int)
    for job in records(con):
        if job["type"] == "flow" and utc_day(job) >= since:
            runs[job["_flowId"]] += 1
            failed[job["_flowId"]] += job["status"] == "failed"
    rows = fetch(con, FAILED_MOST_THIS_WEEK)
    assert rows
    expected = sorted(runs, key=lambda flow: (-failed[flow], flow))[:10]
    assert [r["flow_id"] for r in rows] == expected
    assert all((r["runs"], r["failed"]) == (runs[r["flow_id"]], failed[r["flow_id"]]) for r in rows)


def test_how_reliable_and_fast_each_flow_is(con: duckdb.DuckDBPyConnection) -> None:
    rows = fetch(con, RELIABILITY_AND_SPEED)
    flows = {job["_flowId"] for job in records(con) if job["type"] == "flow"}
    assert {r["flow_id"] for r in rows} == flows
    for row in rows:
        assert 0 <= row["avg_success_rate"] <= 100
        assert 0 < row["median_seconds"] <= row["p95_seconds"]
    p95 = [r["p95_seconds"] for r in rows]
    assert p95 == sorted(p95, reverse=True)


def test_which_runs_lost_records_this_week(con: duckdb.DuckDBPyConnection) -> None:
    rows = fetch(con, RUNS_THAT_LOST_RECORDS)
    assert rows and len(rows) <= 20
    since = datetime.combine(datetime.now(tz=UTC).date() - timedelta(days=7), datetime.min.time())
    for row in rows:
        assert row["child_error"] > 0
        assert row["created_at"] >= since.replace(tzinfo=UTC)
    errors = [r["child_error"] for r in rows]
    assert errors == sorted(errors, reverse=True)


def test_the_daily_error_rate_trend(con: duckdb.DuckDBPyConnection) -> None:
    flow_runs = [job for job in records(con) if job["type"] == "flow"]
    rows = fetch(con, ERROR_RATE_TREND)
    assert sum(r["runs"] for r in rows) == len(flow_runs)
    assert sum(r["errored"] for r in rows) == sum(count(j, "numError") for j in flow_runs)
    assert [r["day"] for r in rows] == sorted({utc_day(j) for j in flow_runs})
    assert all(0 <= r["error_rate"] <= 100 for r in rows)


def test_failed_runs_per_month_from_the_parquet_archive(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Warehouse.open(db, read_only=True) as warehouse:
        archive_warehouse(warehouse, str(tmp_path / "archive"))
        expected = warehouse.connection.execute(
            "SELECT strftime(created_at, '%Y-%m'), count(*) FROM jobs "
            "WHERE type = 'flow' AND status = 'failed' GROUP BY 1 ORDER BY 1"
        ).fetchall()
    monkeypatch.chdir(tmp_path)
    with duckdb.connect() as analyst:
        assert analyst.execute(FAILED_PER_MONTH_FROM_PARQUET).fetchall() == expected
    assert len(expected) >= 2


def test_the_readme_shows_each_question_verbatim() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [sql.splitlines()[0] for sql in QUESTIONS if sql not in readme]
    assert not missing, f"README.md lacks these queries as written: {missing}"


# -- schemas as the contract --------------------------------------------------------------------


def test_the_wheel_carries_the_schemas_and_the_package_finds_them(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    build = subprocess.run(
        [*pip, "--quiet", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("jobsync-*.whl")
    names = ("warehouse.sql", "views.sql", "job.schema.json")
    with zipfile.ZipFile(wheel) as archive:
        for name in names:
            assert archive.read(f"jobsync/schemas/{name}") == schema_path(name).read_bytes()
        archive.extractall(tmp_path / "site")
    code = "from jobsync.schema_files import schema_path; print(schema_path('views.sql'))"
    found = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        timeout=60,
    )
    assert found.returncode == 0, found.stderr
    assert Path(found.stdout.strip()) == tmp_path / "site" / "jobsync" / "schemas" / "views.sql"
