"""The DuckDB warehouse, on real files read back."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from jobsync import store
from jobsync.cursor import CursorState
from jobsync.errors import WarehouseError, WarehouseLocked
from jobsync.partition import Partition
from jobsync.records import JOB_ARROW_SCHEMA, JOB_COLUMNS, Reject, normalise_page
from jobsync.store import SCHEMA_VERSION, SYNC_THREADS, RunCounts, Unfinished, Warehouse
from jobsync.timestamps import format_iso_ms

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DAY = 86_400_000


def job(job_id: str, status: str = "completed", modified: int = T0, **extra: Any) -> dict:
    record = {
        "_id": job_id,
        "type": "flow",
        "status": status,
        "_flowId": "f1",
        "numSuccess": 3,
        "createdAt": format_iso_ms(T0 - 60_000),
        "lastModified": format_iso_ms(modified),
    }
    record.update(extra)
    return record


def commit(wh: Warehouse, records: list[Any], cursors: dict | None = None, now: int = T0):
    page = normalise_page(records)
    return wh.commit_batch(page.rows, page.rejects, cursors or {}, "run-1", now)


@pytest.fixture
def warehouse(tmp_path: Path):
    with Warehouse.open(tmp_path / "jobs.duckdb") as wh:
        yield wh


def rows(wh: Warehouse, sql: str) -> list[tuple]:
    return wh.connection.execute(sql).fetchall()


def test_a_new_file_gets_every_table_and_the_schema_version(warehouse: Warehouse) -> None:
    tables = {r[0] for r in rows(warehouse, "SELECT table_name FROM information_schema.tables")}
    assert {"jobs", "rejects", "sync_runs", "flow_state", "sync_partitions"} <= tables
    assert warehouse.schema_version() == SCHEMA_VERSION
    columns = [r[0] for r in rows(warehouse, "DESCRIBE jobs")]
    assert columns == [*JOB_COLUMNS, "first_seen_at", "last_synced_at"]
    types = dict(
        rows(
            warehouse,
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = 'jobs'",
        )
    )
    assert types["created_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["num_success"] == "BIGINT"
    assert types["raw"] == "VARCHAR"


def test_upsert_inserts_updates_and_leaves_the_unchanged_alone(warehouse: Warehouse) -> None:
    first = commit(warehouse, [job("a", "running"), job("b")], now=T0)
    assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)
    later = T0 + 3_600_000
    second = commit(warehouse, [job("a", "completed", T0 + 1000), job("b")], now=later)
    assert (second.inserted, second.updated, second.unchanged) == (0, 1, 1)
    got = dict(rows(warehouse, "SELECT id, status FROM jobs"))
    assert got == {"a": "completed", "b": "completed"}
    synced = dict(rows(warehouse, "SELECT id, epoch_ms(last_synced_at) FROM jobs"))
    assert synced == {"a": later, "b": T0}, "an unchanged row is not touched"
    seen = dict(rows(warehouse, "SELECT id, epoch_ms(first_seen_at) FROM jobs"))
    assert seen == {"a": T0, "b": T0}


def test_a_change_is_stored_even_where_duckdbs_hash_sees_the_same_text(
    warehouse: Warehouse,
) -> None:
    def counted(errors: int, successes: int) -> dict:
        return {
            "_id": "6b0d479f21eb54ab555116b8",
            "type": "flow",
            "_flowId": "6b0d479f21eb54ab55500001",
            "status": "completed",
            "numError": errors,
            "numSuccess": successes,
            "numIgnore": 0,
            "createdAt": "2026-11-01T10:00:00.000Z",
            "endedAt": "2026-11-01T10:05:00.000Z",
        }

    # DuckDB 2.0's hash() gives these two records' texts one value
    commit(warehouse, [counted(236, 583)])
    counts = commit(warehouse, [counted(238, 563)])
    assert (counts.updated, counts.unchanged) == (1, 0)
    assert rows(warehouse, "SELECT num_error, num_success FROM jobs") == [(238, 563)]


def test_a_first_sync_finds_every_id_it_stored_in_any_earlier_batch(tmp_path: Path) -> None:
    path = tmp_path / "jobs.duckdb"
    with Warehouse.open(path) as fresh:  # empty: the run tracks the ids it stores
        commit(fresh, [job("a"), job("b")])
        commit(fresh, [job("c")])
        again = commit(fresh, [job("d"), job("a", "completed", T0 + 1), job("c")])
        assert (again.inserted, again.updated, again.unchanged) == (1, 1, 1)
    with Warehouse.open(path) as reopened:  # not empty: scans what is stored
        later = commit(reopened, [job("b", "completed", T0 + 2), job("e")])
        assert (later.inserted, later.updated, later.unchanged) == (1, 1, 0)
        counted = rows(reopened, "SELECT count(*), count(DISTINCT id) FROM jobs")
    assert counted == [(5, 5)]


def test_an_older_record_never_replaces_a_newer_row(warehouse: Warehouse) -> None:
    commit(warehouse, [job("a", "completed", T0 + 5000)])
    counts = commit(warehouse, [job("a", "running", T0)])
    assert (counts.updated, counts.unchanged) == (0, 1)
    assert rows(warehouse, "SELECT status FROM jobs") == [("completed",)]


def test_raw_keeps_every_field_as_sent(warehouse: Warehouse) -> None:
    record = job("a", numResolved=4, files=[{"name": "x.csv", "size": 9}], oIndex=None)
    commit(warehouse, [record])
    raw = rows(warehouse, "SELECT raw->>'$.files[0].name', raw->>'$.numResolved' FROM jobs")
    assert raw == [("x.csv", "4")]


def test_rejects_are_logged_with_their_reason(warehouse: Warehouse) -> None:
    counts = commit(warehouse, [job("a"), {"type": "flow"}, job("c", numSuccess="many")])
    assert (counts.inserted, counts.rejects) == (1, 2)
    reasons = [r[0] for r in rows(warehouse, "SELECT reason FROM rejects ORDER BY reason")]
    assert any("_id" in r for r in reasons) and any("numSuccess" in r for r in reasons)
    assert rows(warehouse, "SELECT DISTINCT run_id FROM rejects") == [("run-1",)]


def test_plan_and_cursors_commit_with_the_rows(warehouse: Warehouse) -> None:
    plan = [Partition.fresh("p1", ("f1", "f2"), None, T0), Partition.fresh("p2", ("f1",), T0, T0)]
    warehouse.save_plan("run-1", plan, {"f1": T0, "f2": T0})
    assert warehouse.pending_partitions() == plan
    assert warehouse.planned_through() == {"f1": T0, "f2": T0}
    moved = CursorState(T0 - 10, frozenset({"x", "y"}))
    commit(warehouse, [job("a")], {"p1": moved, "p2": None})
    assert warehouse.pending_partitions() == [Partition("p1", ("f1", "f2"), None, T0, moved)]


def test_a_failed_batch_leaves_rows_and_cursors_as_they_were(warehouse: Warehouse) -> None:
    warehouse.save_plan("run-1", [Partition.fresh("p1", ("f1",), None, T0)], {"f1": T0})
    page = normalise_page([job("a")])
    with pytest.raises(duckdb.Error):
        warehouse.commit_batch(page.rows, [Reject("x", None)], {"p1": None}, "r", T0)  # type: ignore[arg-type]
    assert rows(warehouse, "SELECT count(*) FROM jobs") == [(0,)]
    assert len(warehouse.pending_partitions()) == 1


def test_unfinished_jobs_outside_pending_windows_need_a_refresh(warehouse: Warehouse) -> None:
    created = T0 - 60_000
    commit(warehouse, [job("run", "running"), job("queued", "queued"), job("done")])
    commit(warehouse, [job("other", "running", _flowId="f9")])
    commit(warehouse, [job("purged", "running", purgeAt=format_iso_ms(T0 - 1))])
    commit(warehouse, [job("old", "running", createdAt=format_iso_ms(T0 - 31 * DAY))])

    def to_refresh(flows: list[str]) -> list[Unfinished]:
        return warehouse.jobs_to_refresh(flows, T0, retention_days=30)

    assert {u.job_id for u in to_refresh(["f1", "f9"])} == {"run", "queued", "other"}
    assert to_refresh(["f9"]) == [Unfinished("other", "f9", created)], "only the selected flows"
    assert warehouse.jobs_to_refresh(["f1"], T0, retention_days=60)[0].job_id == "old"
    covering = Partition("p", ("f1",), created - 1, T0, CursorState(created))
    warehouse.save_plan("run-2", [covering], {})
    assert [u.job_id for u in to_refresh(["f1", "f9"])] == ["other"]
    assert warehouse.count_jobs(("f1",), created, created) == 4  # with "purged"
    assert warehouse.count_jobs(("f1", "f9"), created, T0) == 5
    assert warehouse.count_jobs(("f1",), created + 1, T0) == 0


def test_runs_are_logged_and_a_killed_run_is_marked_interrupted(warehouse: Warehouse) -> None:
    warehouse.begin_run("r1", T0)
    assert warehouse.begin_run("r2", T0 + 1) == 1
    warehouse.finish_run("r2", T0 + 2, "succeeded", None, RunCounts(requests=7, pages=3))
    got = rows(warehouse, "SELECT run_id, outcome, requests, pages FROM sync_runs ORDER BY run_id")
    assert got == [("r1", "interrupted", 0, 0), ("r2", "succeeded", 7, 3)]


def test_a_second_process_is_refused_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "jobs.duckdb"
    code = (
        "import sys\nfrom pathlib import Path\nfrom jobsync.store import Warehouse\n"
        "from jobsync.errors import WarehouseLocked\n"
        f"try:\n    Warehouse.open(Path({str(path)!r}))\n"
        "except WarehouseLocked as e:\n    print(e); sys.exit(4)\n"
    )
    with Warehouse.open(path):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 4, result.stderr
    assert "in use by another process" in result.stdout


def test_a_corrupt_file_is_an_error_and_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "jobs.duckdb"
    path.write_bytes(b"this is not a database" * 500)
    before = path.read_bytes()
    with pytest.raises(WarehouseError, match="cannot open"):
        Warehouse.open(path)
    assert path.read_bytes() == before


def test_a_foreign_duckdb_file_is_not_written_into(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    duckdb.connect(str(path)).execute("CREATE TABLE sales (x INT)").close()
    with pytest.raises(WarehouseError, match="did not create"):
        Warehouse.open(path)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.duckdb"
    Warehouse.open(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE jobsync_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(WarehouseError, match="newer"):
        Warehouse.open(path)


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WarehouseError, match="does not exist"):
        Warehouse.open(tmp_path / "nope" / "jobs.duckdb")


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "jobs.duckdb"
    with Warehouse.open(path) as wh:
        commit(wh, [job("a")])
    with Warehouse.open(path, read_only=True) as wh:
        assert rows(wh, "SELECT id FROM jobs") == [("a",)]


def test_locked_is_a_warehouse_error() -> None:
    assert issubclass(WarehouseLocked, WarehouseError)


def test_a_record_rejected_again_is_logged_once(warehouse: Warehouse) -> None:
    bad = job("c", numSuccess="many")
    commit(warehouse, [bad])
    commit(warehouse, [bad])
    assert rows(warehouse, "SELECT count(*) FROM rejects") == [(1,)]
    twice = [Reject('{"_id":7}', "_id: expected a string, got 7")] * 2
    warehouse.commit_batch(JOB_ARROW_SCHEMA.empty_table(), twice, {}, "run-2", T0)
    assert rows(warehouse, "SELECT count(*) FROM rejects") == [(2,)]


def test_a_batch_repeating_an_id_keeps_the_latest_once(warehouse: Warehouse) -> None:
    newer = job("a", "completed", modified=T0 + 1000)
    older = job("a", "running", modified=T0)
    pages = [normalise_page([record]).rows for record in (newer, older, job("b"))]
    counts = warehouse.commit_batch(pa.concat_tables(pages), [], {}, "run-1", T0)
    assert (counts.inserted, counts.updated, counts.unchanged) == (2, 0, 0)
    assert rows(warehouse, "SELECT id, status FROM jobs ORDER BY id") == [
        ("a", "completed"),
        ("b", "completed"),
    ]


@pytest.mark.parametrize(
    ("version", "jobs_ddl"),
    [
        (1, {"id": "VARCHAR PRIMARY KEY", "raw": "JSON NOT NULL"}),
        (2, {"raw": "JSON NOT NULL"}),
    ],
)
def test_an_older_file_is_migrated_keeping_its_rows(
    version: int, jobs_ddl: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "jobs.duckdb"
    with Warehouse.open(path) as wh:
        commit(wh, [job("a"), job("b", files=[{"name": "x.csv"}])])
    con = duckdb.connect(str(path))
    before = con.execute("SELECT * FROM jobs ORDER BY id").fetchall()
    con.execute("DROP VIEW job_metrics; DROP VIEW flow_daily; DROP VIEW flow_job_trees")
    columns = con.execute(
        "SELECT column_name, data_type, is_nullable FROM duckdb_columns() "
        "WHERE table_name = 'jobs' ORDER BY column_index"
    ).fetchall()
    old = ", ".join(
        f"{name} {jobs_ddl.get(name, kind + ('' if nullable else ' NOT NULL'))}"
        for name, kind, nullable in columns
    )
    con.execute("ALTER TABLE jobs RENAME TO jobs_now")
    con.execute(f"CREATE TABLE jobs ({old})")
    con.execute("INSERT INTO jobs SELECT * FROM jobs_now; DROP TABLE jobs_now")
    con.execute("UPDATE jobsync_meta SET value = ? WHERE key = 'schema_version'", [str(version)])
    con.close()
    with Warehouse.open(path) as wh:
        assert wh.schema_version() == SCHEMA_VERSION == 3
        assert rows(wh, "SELECT * FROM jobs ORDER BY id") == before
        assert rows(wh, "SELECT raw->>'$.files[0].name' FROM jobs WHERE id = 'b'") == [("x.csv",)]
        assert rows(wh, "SELECT count(*) FROM job_metrics") == [(2,)]
        constraints = rows(
            wh,
            "SELECT count(*) FROM duckdb_constraints() "
            "WHERE table_name = 'jobs' AND constraint_type = 'PRIMARY KEY'",
        )
        assert constraints == [(0,)]
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute(
            "SELECT DISTINCT compression FROM pragma_storage_info('jobs') "
            "WHERE column_name = 'raw' AND segment_type = 'VARCHAR'"
        ).fetchall() == [("ZSTD",)]


def test_long_strings_lift_the_memory_cap_and_are_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """DuckDB needs a row group's long strings in memory whole to commit it: 160 MB of them
    under a 32 MB cap once failed the commit, then invalidated the database."""
    path = tmp_path / "jobs.duckdb"
    limit = "SELECT current_setting('memory_limit')"
    with Warehouse.open(path, memory_mb=32) as wh:
        commit(wh, [job(f"short{n}", blob="x" * 3000) for n in range(1000)])
        assert rows(wh, limit) == [("30.5 MiB",)]
        with caplog.at_level(logging.INFO, logger="jobsync.store"):
            for batch in range(8):
                commit(wh, [job(f"huge{batch}-{n}", blob="x" * 2_000_000) for n in range(10)])
        assert rows(wh, limit) == [("3.8 GiB",)]
        assert "a batch holds values over 4096 bytes: DuckDB's memory limit lifted" in caplog.text
    with Warehouse.open(path, read_only=True) as wh:
        assert rows(wh, "SELECT count(*), max(length(raw::VARCHAR)) > 2e6 FROM jobs") == [
            (1080, True)
        ]


def test_a_sync_runs_duckdb_on_its_threads_and_other_opens_on_the_default(
    tmp_path: Path,
) -> None:
    """The sync's threads are set once the file is checked (its full read keeps every core)."""
    path = tmp_path / "jobs.duckdb"
    threads = "SELECT current_setting('threads')"
    with duckdb.connect() as fresh:
        default = fresh.execute(threads).fetchall()
    with Warehouse.open_for_sync(path) as wh:
        assert rows(wh, threads) == [(SYNC_THREADS,)]
        assert rows(wh, "SELECT current_setting('memory_limit')") == [("30.5 MiB",)]
        commit(wh, [job(f"j{n}") for n in range(3000)])
    with Warehouse.open(path, read_only=True) as wh:
        assert rows(wh, threads) == default
        assert rows(wh, "SELECT count(*) FROM jobs") == [(3000,)]


def test_a_sync_checkpoints_itself_when_the_log_is_due_and_keeps_its_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a commit brings the log to CHECKPOINT_LOG_MB, the sync checkpoints at once (DuckDB
    would at the next commit, on the sync's one thread); the commits after it run on the
    sync's threads again."""
    monkeypatch.setattr(store, "CHECKPOINT_LOG_MB", 1)
    path = tmp_path / "jobs.duckdb"
    log = path.with_name("jobs.duckdb.wal")
    logged = []
    with Warehouse.open_for_sync(path) as wh:
        for batch in range(8):
            commit(wh, [job(f"b{batch}-{n}", note="x" * 300) for n in range(1000)])
            logged.append(log.stat().st_size if log.exists() else 0)
            assert rows(wh, "SELECT current_setting('threads')") == [(SYNC_THREADS,)]
        assert rows(wh, "SELECT count(*) FROM jobs") == [(8000,)]
    assert max(logged) < 1_000_000  # never left at or past the threshold
    assert logged.count(0) >= 2  # a batch is about 0.5 MB of log: every second one checkpoints
    with Warehouse.open(path, read_only=True) as wh:
        assert rows(wh, "SELECT count(DISTINCT id) FROM jobs") == [(8000,)]


def test_whole_row_groups_are_written_into_the_file_not_into_the_log(tmp_path: Path) -> None:
    """A commit of whole row groups (ROW_GROUP_ROWS rows each): DuckDB writes them into the
    file during the commit, and its log holds only where they are; the rest of a commit goes
    through the log, into a row group of its own size."""
    path = tmp_path / "jobs.duckdb"
    log = path.with_name("jobs.duckdb.wal")
    size = store.ROW_GROUP_ROWS
    records = [job(f"j{n:06d}", note="x" * 300) for n in range(2 * size + 100)]
    with Warehouse.open_for_sync(path) as wh:
        commit(wh, records[: 2 * size])
        whole = log.stat().st_size
        commit(wh, records[2 * size :])
        rest = log.stat().st_size - whole
        groups = rows(
            wh,
            """SELECT row_group_id, max(count) FROM pragma_storage_info('jobs')
               WHERE column_name = 'id' GROUP BY ALL ORDER BY 1""",
        )
    assert whole < 100_000 < 2 * size * 300  # not the rows' 10 MB
    assert rest > 100 * 300  # the last 100 rows themselves
    assert groups == [(0, size), (1, size), (2, 100)]
    with duckdb.connect(str(path), read_only=True) as con:  # as an analyst opens it
        assert con.execute("SELECT count(DISTINCT id) FROM jobs").fetchall() == [(2 * size + 100,)]


def test_a_checkpoint_that_fails_says_so_and_the_next_open_replays_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint that runs out of memory invalidates DuckDB's database: the sync stops with
    a clear error, the close does not raise on top of it, and what was committed is in the
    log, which the next open replays."""
    path = tmp_path / "jobs.duckdb"
    wh = Warehouse.open_for_sync(path)
    commit(wh, [job(f"j{n}", note="x" * 300) for n in range(3000)])
    wh.connection.execute("SET memory_limit = '1MB'")  # too little for any checkpoint
    monkeypatch.setattr(store, "CHECKPOINT_LOG_MB", 0)  # due at once
    with pytest.raises(WarehouseError, match=r"could not checkpoint .*replays"):
        wh._checkpoint_when_due()
    wh.close()
    with Warehouse.open(path, read_only=True) as wh:
        assert rows(wh, "SELECT count(*) FROM jobs") == [(3000,)]


def test_a_later_sync_writes_beside_long_strings_already_stored(tmp_path: Path) -> None:
    """Appending to, or checkpointing, a row group of long strings needs them in memory even
    when the batch itself is small: the next sync must know the file holds them."""
    path = tmp_path / "jobs.duckdb"
    with Warehouse.open(path, memory_mb=32) as wh:
        for batch in range(7):
            commit(wh, [job(f"huge{batch}-{n}", blob=f"{n}" * 2_000_000) for n in range(10)])
    with Warehouse.open(path, memory_mb=32) as wh:
        for batch in range(4):
            commit(wh, [job(f"small{batch}-{n}", blob="y" * 1000) for n in range(5000)])
    assert not path.with_name("jobs.duckdb.wal").exists()  # the close's checkpoint went through
    with Warehouse.open(path, read_only=True) as wh:
        assert rows(wh, "SELECT count(*) FROM jobs") == [(20_070,)]


def test_reopening_an_unchanged_warehouse_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "jobs.duckdb"
    with Warehouse.open(path) as wh:
        commit(wh, [job("a")])
    before = path.read_bytes()
    Warehouse.open(path).close()
    assert path.read_bytes() == before


def test_a_damaged_file_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "jobs.duckdb"
    with Warehouse.open(path) as wh:
        commit(wh, [job(f"j{n}", blob="y" * 2000) for n in range(2000)])
    damaged = bytearray(path.read_bytes())
    for offset in range(len(damaged) // 3, len(damaged), len(damaged) // 3):
        damaged[offset : offset + 4096] = b"\xde\xad\xbe\xef" * 1024
    path.write_bytes(bytes(damaged))
    with pytest.raises(WarehouseError, match="is damaged"):
        Warehouse.open(path)
    assert path.read_bytes() == bytes(damaged)
    assert not Path(f"{path}.wal").exists()


def test_a_flows_retention_is_what_the_purge_at_of_its_newest_ended_job_says(
    warehouse: Warehouse,
) -> None:
    ended = format_iso_ms(T0)
    commit(
        warehouse,
        [
            job("old", endedAt=ended, purgeAt=format_iso_ms(T0 + 30 * DAY), _flowId="f1"),
            job(
                "new",
                endedAt=ended,
                purgeAt=format_iso_ms(T0 + 60 * DAY),
                _flowId="f1",
                createdAt=format_iso_ms(T0),
            ),
            job("none", endedAt=ended, _flowId="f2"),
        ],
    )
    assert warehouse.flow_retention_ms() == {"f1": 60 * DAY}
