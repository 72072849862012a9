"""`jobsync archive`, `query` and `status` as users and monitors run them, on a real synced
warehouse; and the operations examples in scripts/, parsed by the real commands."""

from __future__ import annotations

import ast
import csv
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import duckdb
import pytest
from click.testing import CliRunner, Result
from conftest import sync_into

from jobsync.cli_archive import archive, query, status
from jobsync.cli_sync import sync as sync_command
from jobsync.dialect import DIALECT_NAMES
from jobsync.render import result_table
from jobsync.simulator import Account, AccountConfig, ServerOptions, SimulatorServer
from jobsync.store import Warehouse
from jobsync.timestamps import parse_iso_ms

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"
TOKEN = "test-token"
ACCOUNT = {"flows": 3, "days": 35, "start_ms": parse_iso_ms("2026-11-10T00:00:00.000Z")}
FLOW_RUNS = "SELECT id, status, num_success, created_at FROM jobs WHERE type = 'flow' ORDER BY id"


@pytest.fixture(scope="module", params=DIALECT_NAMES)
def synced(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """A warehouse synced from the simulator, once per dialect."""
    db = tmp_path_factory.mktemp("cli") / "jobs.duckdb"
    options = ServerOptions(TOKEN, dialect=request.param)
    with SimulatorServer(Account(AccountConfig(**ACCOUNT)), options) as sim:
        summary = sync_into(sim, db)
    assert summary.outcome == "succeeded", summary.errors
    return db


@pytest.fixture
def db(synced: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "jobs.duckdb"
    shutil.copy(synced, copy)
    return copy


def invoke(command: click.Command, *args: str, stdin: str | None = None) -> Result:
    env = {"JOBSYNC_DB": None, "JOBSYNC_RETENTION_DAYS": None, "JOBSYNC_CONFIG": None}
    return CliRunner().invoke(command, list(args), input=stdin, env=env, catch_exceptions=False)


def expected(db: Path, sql: str) -> tuple[list[str], list[tuple]]:
    with Warehouse.open(db, read_only=True) as warehouse:
        result = warehouse.connection.execute(sql)
        return [c[0] for c in result.description], result.fetchall()


def last_success(db: Path) -> datetime:
    with duckdb.connect(str(db), read_only=True) as con:
        (started,) = con.execute(
            "SELECT max(started_at) FROM sync_runs WHERE outcome = 'succeeded'"
        ).fetchone()
    return started.astimezone(UTC)


@pytest.fixture
def writer(db: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the warehouse open for writing, as `jobsync sync` does."""
    code = (
        "import sys\nfrom pathlib import Path\nfrom jobsync.store import Warehouse\n"
        f"w = Warehouse.open(Path({str(db)!r}))\nprint('ready', flush=True)\nsys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    yield process
    process.communicate(timeout=30)


# -- query --------------------------------------------------------------------------------------


def test_query_prints_a_table(db: Path) -> None:
    result = invoke(query, "--db", str(db), FLOW_RUNS)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == result_table(*expected(db, FLOW_RUNS)) + "\n"
    assert result.stdout.count("\n") > 100


def test_query_csv_and_json_carry_every_row(db: Path) -> None:
    columns, rows = expected(db, FLOW_RUNS)
    as_csv = invoke(query, "--db", str(db), "--format", "csv", FLOW_RUNS)
    assert as_csv.exit_code == 0, as_csv.stderr
    got = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert got[0] == columns
    assert got[1:] == [[i, s, str(n), c.isoformat()] for i, s, n, c in rows]
    as_json = invoke(query, "--db", str(db), "--format", "json", FLOW_RUNS)
    assert as_json.exit_code == 0, as_json.stderr
    documents = json.loads(as_json.stdout)
    assert len(documents) == len(rows)
    first = documents[0]
    assert first["id"] == rows[0][0] and first["num_success"] == rows[0][2]
    assert datetime.fromisoformat(first["created_at"]) == rows[0][3]


def test_query_reads_the_views_and_standard_input(db: Path) -> None:
    sql = "SELECT sum(runs) AS runs FROM flow_daily"
    result = invoke(query, "--db", str(db), "--format", "json", "-", stdin=sql)
    assert result.exit_code == 0, result.stderr
    (flow_jobs,) = expected(db, "SELECT count(*) FROM jobs WHERE type = 'flow'")[1][0]
    assert json.loads(result.stdout) == [{"runs": flow_jobs}]


def test_json_keeps_numbers_numbers_and_writes_the_rest_as_text(db: Path) -> None:
    sql = "SELECT 1.5 AS decimal, 2::HUGEINT AS huge, INTERVAL 3 DAY AS span, [1, 2] AS list"
    result = invoke(query, "--db", str(db), "--format", "json", sql)
    assert json.loads(result.stdout) == [
        {"decimal": 1.5, "huge": 2, "span": "3 days, 0:00:00", "list": [1, 2]}
    ]


def test_an_empty_result_prints_its_header(db: Path) -> None:
    result = invoke(query, "--db", str(db), "--format", "csv", "SELECT id FROM jobs WHERE false")
    assert (result.exit_code, result.stdout) == (0, "id\n")
    result = invoke(query, "--db", str(db), "--format", "json", "SELECT id FROM jobs WHERE false")
    assert json.loads(result.stdout) == []


def test_a_bad_query_prints_duckdbs_message_without_a_traceback(db: Path) -> None:
    result = invoke(query, "--db", str(db), "SELECT nope FROM jobs")
    assert result.exit_code == 1
    assert result.stderr.startswith("jobsync: error: Binder Error")
    assert '"nope" not found' in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_query_cannot_write(db: Path) -> None:
    result = invoke(query, "--db", str(db), "DELETE FROM jobs")
    assert result.exit_code == 1
    assert "read-only" in result.stderr
    assert expected(db, "SELECT count(*) FROM jobs")[1][0][0] > 0


def test_a_missing_warehouse_is_one_clear_line(tmp_path: Path) -> None:
    result = invoke(query, "--db", str(tmp_path / "none.duckdb"), "SELECT 1")
    assert result.exit_code == 1
    missing = tmp_path / "none.duckdb"
    assert result.stderr == f"jobsync: error: no warehouse at {missing}: run `jobsync sync` first\n"
    assert not missing.exists()


def test_reading_while_a_sync_writes_says_why_it_cannot(
    db: Path, writer: subprocess.Popen[str]
) -> None:
    for command, args in ((query, ["SELECT 1"]), (status, []), (archive, ["--out", "x"])):
        result = invoke(command, "--db", str(db), *args)
        assert result.exit_code == 4, result.stderr
        assert f"PID {writer.pid}" in result.stderr
        assert "not even to read" in result.stderr


# -- status -------------------------------------------------------------------------------------


def test_status_shows_the_last_run_and_every_flow(db: Path) -> None:
    result = invoke(status, "--db", str(db))
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    flows = expected(db, "SELECT flow_id, count(*) FROM jobs GROUP BY flow_id")[1]
    for flow_id, jobs in flows:
        assert re.search(rf"^{flow_id}\s+{jobs}\s", result.stdout, re.MULTILINE)
    assert "last successful run" in result.stdout and "purge risk           none" in result.stdout


def test_status_check_flips_when_the_clock_passes_the_risk_threshold(db: Path) -> None:
    threshold = last_success(db) + timedelta(days=30 - 7)
    before = (threshold - timedelta(minutes=1)).isoformat()
    after = (threshold + timedelta(minutes=1)).isoformat()
    healthy = invoke(status, "--db", str(db), "--check", "-q", "--as-of", before)
    assert (healthy.exit_code, healthy.stdout, healthy.stderr) == (0, "", "")
    at_risk = invoke(status, "--db", str(db), "--check", "-q", "--as-of", after)
    assert at_risk.exit_code == 1
    assert at_risk.stderr.startswith("jobsync: warning: purge risk:")
    assert "in 7.0 days" in at_risk.stderr
    without_check = invoke(status, "--db", str(db), "-q", "--as-of", after)
    assert without_check.exit_code == 0 and "purge risk" in without_check.stderr


def test_status_retention_and_margin_are_settings(db: Path) -> None:
    as_of = (last_success(db) + timedelta(days=5)).isoformat()
    args = ["--db", str(db), "--check", "-q", "--as-of", as_of]
    assert invoke(status, *args).exit_code == 0
    assert invoke(status, *args, "--margin-days", "26").exit_code == 1
    shorter = {"JOBSYNC_RETENTION_DAYS": "10"}
    result = CliRunner().invoke(status, args, env=shorter)
    assert result.exit_code == 0, "the jobs' purgeAt says 30 days, over the setting"
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE jobs SET purge_at = NULL")
    result = CliRunner().invoke(status, args, env=shorter)
    assert result.exit_code == 1, "without purgeAt the setting applies"
    bad = invoke(status, *args, "--margin-days", "30")
    assert bad.exit_code == 2 and "below the retention" in bad.stderr


def test_status_takes_a_longer_plan_retention_from_purge_at(tmp_path: Path) -> None:
    db = tmp_path / "jobs.duckdb"
    account = Account(AccountConfig(**{**ACCOUNT, "days": 5, "retention_days": 90}))
    with SimulatorServer(account, ServerOptions(TOKEN)) as sim:
        assert sync_into(sim, db).outcome == "succeeded"
    as_of = (last_success(db) + timedelta(days=60)).isoformat()
    healthy = invoke(status, "--db", str(db), "--check", "--as-of", as_of)
    assert healthy.exit_code == 0, healthy.stderr
    assert re.search(r"^retention\s+90 days \(purgeAt of flow \S+\)$", healthy.stdout, re.M)
    assert "30.0 more days" in healthy.stdout
    late = (last_success(db) + timedelta(days=84)).isoformat()
    assert invoke(status, "--db", str(db), "--check", "-q", "--as-of", late).exit_code == 1


def test_a_flow_that_keeps_nothing_is_reported_but_does_not_make_status_red(db: Path) -> None:
    with duckdb.connect(str(db)) as con:
        (flow,) = con.execute("SELECT min(flow_id) FROM jobs").fetchone()
        con.execute("UPDATE jobs SET purge_at = ended_at WHERE flow_id = ?", [flow])
        con.execute(
            "UPDATE jobs SET purge_at = ended_at + INTERVAL 60 DAY WHERE flow_id <> ?", [flow]
        )
    as_of = (last_success(db) + timedelta(days=40)).isoformat()
    result = invoke(status, "--db", str(db), "--check", "--json", "--as-of", as_of)
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["flows_keeping_nothing"] == [flow]
    assert report["retention"]["days"] == pytest.approx(60)
    assert report["warnings"] == []
    text = invoke(status, "--db", str(db), "--as-of", as_of).stdout
    assert re.search(rf"^keeping nothing\s+1 flow\(s\) .*: {flow}$", text, re.M)


def test_status_json_for_monitoring(db: Path) -> None:
    as_of = (last_success(db) + timedelta(days=40)).isoformat()
    result = invoke(status, "--db", str(db), "--json", "--check", "--as-of", as_of)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["at_risk"] is True
    assert report["purge_risk"]["days_left"] == pytest.approx(-10.0)
    assert report["last_success"]["outcome"] == "succeeded"
    assert report["last_success"]["age_seconds"] == pytest.approx(40 * 86400)
    (total,) = expected(db, "SELECT count(*) FROM jobs")[1][0]
    assert sum(flow["jobs"] for flow in report["flows"]) == total
    assert report["warnings"] == [f"purge risk: {report['purge_risk']['message']}"]


# -- archive ------------------------------------------------------------------------------------


def test_archive_writes_then_skips_unchanged_months(db: Path, tmp_path: Path) -> None:
    dest = tmp_path / "archive"
    first = invoke(archive, "--db", str(db), "--out", str(dest))
    assert first.exit_code == 0, first.stderr
    assert first.stdout.startswith(f"archive {dest}: months written 2 (")
    again = invoke(archive, "--db", str(db), "--out", str(dest), "--json")
    summary = json.loads(again.stdout)
    assert (summary["months_written"], summary["months_unchanged"]) == ([], 2)
    with duckdb.connect() as con:
        (rows,) = con.execute(f"SELECT count(*) FROM '{dest}/jobs/*/*.parquet'").fetchone()
    assert rows == expected(db, "SELECT count(*) FROM jobs")[1][0][0]
    assert invoke(archive, "--db", str(db), "--out", str(dest), "-q").stdout == ""


# -- operations examples ------------------------------------------------------------------------

COMMANDS = {"sync": sync_command, "archive": archive, "query": query, "status": status}


def script_commands() -> list[tuple[str, list[str]]]:
    """Every jobsync command line in the cron and systemd examples: (file, argv)."""
    found = []
    for name in ("jobsync.cron", "jobsync.service"):
        for line in (SCRIPTS / name).read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith("#"):
                continue
            for match in re.finditer(r"/jobsync ([^;&|\n]+)", line):
                found.append((name, shlex.split(match.group(1))))
    return found


def test_the_examples_run_sync_then_status_check() -> None:
    lines = script_commands()
    for name in ("jobsync.cron", "jobsync.service"):
        argvs = [argv for script, argv in lines if script == name]
        assert [argv[0] for argv in argvs] == ["sync", "status"], name
        assert "--parquet" in argvs[0] and "--check" in argvs[1]


@pytest.mark.parametrize(("script", "argv"), script_commands())
def test_each_example_command_line_parses(script: str, argv: list[str]) -> None:
    command = COMMANDS[argv[0]]
    with command.make_context(f"jobsync {argv[0]}", argv[1:]) as context:
        assert context.params


def test_the_timer_starts_the_service_nightly() -> None:
    timer = (SCRIPTS / "jobsync.timer").read_text(encoding="utf-8")
    assert re.search(r"^OnCalendar=\*-\*-\* \d\d:\d\d:00 UTC$", timer, re.MULTILINE)
    assert "Persistent=true" in timer
    service = (SCRIPTS / "jobsync.service").read_text(encoding="utf-8")
    assert "Type=oneshot" in service and "SuccessExitStatus=75" in service


def test_the_airflow_dag_is_valid_python() -> None:
    source = (SCRIPTS / "airflow_jobsync_dag.py").read_text(encoding="utf-8")
    compile(ast.parse(source), "airflow_jobsync_dag.py", "exec")
    assert "jobsync sync" in source and "jobsync status" in source and "--check" in source
