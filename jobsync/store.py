"""The DuckDB warehouse: schema and migrations, batched upserts, crawl state, run log, rejects.

It knows nothing of HTTP. Every write that matters goes through `commit_batch`, which stores
rows and the partition cursors that cover them in one transaction, so a killed run resumes
exactly where its last commit left it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from jobsync.cursor import CursorState
from jobsync.errors import WarehouseError, WarehouseLocked
from jobsync.partition import Partition
from jobsync.records import JOB_COLUMNS, Reject
from jobsync.schema_files import schema_text
from jobsync.timestamps import ms_to_datetime

SCHEMA_VERSION = 1
UNFINISHED_STATUSES = ("queued", "running")

_DATA_COLUMNS = ", ".join(JOB_COLUMNS)
_UPDATE_SET = ", ".join(f"{c} = b.{c}" for c in JOB_COLUMNS if c != "id")

# One batch, de-duplicated by id (latest lastModified wins), classified against `jobs`.
# A stored row is replaced only when the record differs and is not older.
_CLASSIFY = f"""
CREATE OR REPLACE TEMP TABLE batch AS
SELECT b.*,
       CASE WHEN j.id IS NULL THEN 'insert'
            WHEN j.raw::VARCHAR <> b.raw
                 AND coalesce(b.last_modified >= j.last_modified, TRUE) THEN 'update'
            ELSE 'same' END AS action
FROM (
    SELECT {_DATA_COLUMNS} FROM incoming
    QUALIFY row_number() OVER (PARTITION BY id ORDER BY last_modified DESC NULLS LAST) = 1
) AS b
LEFT JOIN jobs AS j ON j.id = b.id
"""
_INSERT = f"""
INSERT INTO jobs ({_DATA_COLUMNS}, first_seen_at, last_synced_at)
SELECT {_DATA_COLUMNS}, $now, $now FROM batch WHERE action = 'insert'
"""
_UPDATE = f"""
UPDATE jobs SET {_UPDATE_SET}, last_synced_at = $now
FROM batch AS b WHERE jobs.id = b.id AND b.action = 'update'
"""


@dataclass
class UpsertCounts:
    """What one or more batches did to `jobs` and `rejects`."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejects: int = 0


@dataclass
class RunCounts:
    """The counters of one sync run, as `sync_runs` records them."""

    flows: int = 0
    partitions: int = 0
    requests: int = 0
    retries: int = 0
    throttled: int = 0
    pages: int = 0
    jobs_inserted: int = 0
    jobs_updated: int = 0
    jobs_unchanged: int = 0
    jobs_refreshed: int = 0
    rejects: int = 0


class Warehouse:
    """One open DuckDB warehouse file. Not thread-safe: one writer thread at a time."""

    def __init__(self, connection: duckdb.DuckDBPyConnection, path: Path) -> None:
        self.connection = connection
        self.path = path

    @classmethod
    def open(cls, path: Path, *, read_only: bool = False) -> Warehouse:
        """Open (or create) the warehouse and bring its schema to the current version."""
        path = Path(path)
        if read_only and not path.exists():
            raise WarehouseError(f"no warehouse at {path}: run `jobsync sync` first")
        if not read_only and not path.parent.exists():
            raise WarehouseError(f"cannot create {path}: folder {path.parent} does not exist")
        try:
            connection = duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            raise _open_error(path, exc) from None
        except duckdb.Error as exc:
            raise WarehouseError(f"cannot open {path}: {_first_line(exc)}") from None
        warehouse = cls(connection, path)
        try:
            connection.execute("SET TimeZone = 'UTC'")
            # Checkpoints rewrite and recompress `raw`; the default (16 MB of log) made them
            # the bulk of a backfill's commit time (scripts/bench.py, ingest figure).
            connection.execute("SET checkpoint_threshold = '256MB'")
            if not read_only:
                warehouse._migrate()
                warehouse._create_views()
            else:
                warehouse._check_version()
        except BaseException:
            connection.close()
            raise
        return warehouse

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------

    def schema_version(self) -> int | None:
        """The version recorded in the file, or None for a file jobsync never wrote."""
        exists = self.connection.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'jobsync_meta'"
        ).fetchone()
        if not exists or not exists[0]:
            return None
        row = self.connection.execute(
            "SELECT value FROM jobsync_meta WHERE key = 'schema_version'"
        ).fetchone()
        return int(row[0]) if row else None

    def _check_version(self) -> int | None:
        version = self.schema_version()
        if version is not None and version > SCHEMA_VERSION:
            raise WarehouseError(
                f"{self.path} has schema version {version}, newer than this jobsync "
                f"understands ({SCHEMA_VERSION}); upgrade jobsync"
            )
        return version

    def _migrate(self) -> None:
        version = self._check_version()
        if version == SCHEMA_VERSION:
            return
        if version is None:
            user_tables = self.connection.execute(
                "SELECT count(*) FROM information_schema.tables"
            ).fetchone()
            if user_tables and user_tables[0]:
                raise WarehouseError(
                    f"{self.path} is a DuckDB database that jobsync did not create; "
                    "refusing to write into it"
                )
        with self._transaction():
            for statement in _statements(schema_text("warehouse.sql")):
                self.connection.execute(statement)
            self.connection.execute(
                "INSERT OR REPLACE INTO jobsync_meta VALUES ('schema_version', ?)",
                [str(SCHEMA_VERSION)],
            )

    def _create_views(self) -> None:
        """(Re)create the analyst views, so a newer jobsync's views replace an older one's."""
        with self._transaction():
            for statement in _statements(schema_text("views.sql")):
                self.connection.execute(statement)

    # -- runs -----------------------------------------------------------------------------

    def begin_run(self, run_id: str, started_at_ms: int) -> int:
        """Log a new run; runs left 'running' by a killed process become 'interrupted'.
        Returns how many such runs there were."""
        with self._transaction():
            stale = self.connection.execute(
                "UPDATE sync_runs SET outcome = 'interrupted' WHERE outcome = 'running'"
            ).fetchone()
            self.connection.execute(
                "INSERT INTO sync_runs (run_id, started_at, outcome) VALUES (?, ?, 'running')",
                [run_id, ms_to_datetime(started_at_ms)],
            )
        return int(stale[0]) if stale else 0

    def finish_run(
        self, run_id: str, ended_at_ms: int, outcome: str, error: str | None, counts: RunCounts
    ) -> None:
        names = [item.name for item in fields(counts)]
        assignments = ", ".join(f"{name} = ?" for name in names)
        values = [getattr(counts, name) for name in names]
        self.connection.execute(
            f"UPDATE sync_runs SET ended_at = ?, outcome = ?, error = ?, {assignments} "
            "WHERE run_id = ?",
            [ms_to_datetime(ended_at_ms), outcome, error, *values, run_id],
        )

    # -- crawl state ----------------------------------------------------------------------

    def planned_through(self) -> dict[str, int]:
        """flow id -> the createdAt (ms) through which partitions have been planned."""
        rows = self.connection.execute(
            "SELECT flow_id, epoch_ms(planned_through) FROM flow_state"
        ).fetchall()
        return {flow_id: int(ms) for flow_id, ms in rows}

    def pending_partitions(self) -> list[Partition]:
        """Partitions planned by earlier runs and not yet finished, oldest window first."""
        rows = self.connection.execute(
            """SELECT key, flow_ids, epoch_ms(window_gte), epoch_ms(window_lte),
                      epoch_ms(cursor_lte), cursor_seen
               FROM sync_partitions ORDER BY window_lte, key"""
        ).fetchall()
        return [
            Partition(key, tuple(flows), gte, lte, CursorState(cursor, frozenset(seen)))
            for key, flows, gte, lte, cursor, seen in rows
        ]

    def save_plan(
        self, run_id: str, partitions: list[Partition], planned_through: dict[str, int]
    ) -> None:
        """Store new partitions and advance the flows' planned_through, together."""
        with self._transaction():
            if partitions:
                self.connection.executemany(
                    "INSERT INTO sync_partitions VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        [
                            p.key,
                            run_id,
                            list(p.flow_ids),
                            None if p.window_gte is None else ms_to_datetime(p.window_gte),
                            ms_to_datetime(p.window_lte),
                            ms_to_datetime(p.cursor.lte),
                            sorted(p.cursor.seen),
                        ]
                        for p in partitions
                    ],
                )
            if planned_through:
                self.connection.executemany(
                    "INSERT OR REPLACE INTO flow_state VALUES (?, ?)",
                    [[flow, ms_to_datetime(ms)] for flow, ms in planned_through.items()],
                )

    def jobs_to_refresh(self, flow_ids: list[str]) -> list[str]:
        """Unfinished jobs of these flows (or of no known flow) that no pending partition will
        list again, oldest first: these must be fetched one by one to learn how they ended."""
        placeholders = ", ".join("?" for _ in UNFINISHED_STATUSES)
        rows = self.connection.execute(
            f"""SELECT j.id FROM jobs AS j
                WHERE j.status IN ({placeholders})
                  AND (j.flow_id IS NULL OR list_contains(?, j.flow_id))
                  AND NOT EXISTS (
                      SELECT 1 FROM sync_partitions AS p
                      WHERE list_contains(p.flow_ids, j.flow_id)
                        AND j.created_at <= p.cursor_lte
                        AND (p.window_gte IS NULL OR j.created_at >= p.window_gte))
                ORDER BY j.created_at""",
            [*UNFINISHED_STATUSES, flow_ids],
        ).fetchall()
        return [row[0] for row in rows]

    # -- data -----------------------------------------------------------------------------

    def commit_batch(
        self,
        rows: pa.Table,
        rejects: list[Reject],
        cursors: dict[str, CursorState | None],
        run_id: str,
        now_ms: int,
    ) -> UpsertCounts:
        """Upsert `rows`, log `rejects` and move partition cursors (None: the partition is
        finished and its row goes) in one transaction."""
        counts = UpsertCounts(rejects=len(rejects))
        now = ms_to_datetime(now_ms)
        with self._transaction():
            if rows.num_rows:
                counts = self._upsert(rows, now, counts)
            if rejects:  # a record rejected before (the overlap re-reads it) is logged once
                self.connection.executemany(
                    """INSERT INTO rejects SELECT $raw, $reason, $run, $now
                       WHERE NOT EXISTS (
                           SELECT 1 FROM rejects WHERE raw = $raw AND reason = $reason)""",
                    [
                        {"raw": r.raw, "reason": r.reason, "run": run_id, "now": now}
                        for r in rejects
                    ],
                )
            for key, state in cursors.items():
                if state is None:
                    self.connection.execute("DELETE FROM sync_partitions WHERE key = ?", [key])
                else:
                    self.connection.execute(
                        "UPDATE sync_partitions SET cursor_lte = ?, cursor_seen = ? WHERE key = ?",
                        [ms_to_datetime(state.lte), sorted(state.seen), key],
                    )
        return counts

    def _upsert(self, rows: pa.Table, now: Any, counts: UpsertCounts) -> UpsertCounts:
        self.connection.register("incoming", rows)
        try:
            self.connection.execute(_CLASSIFY)
        finally:
            self.connection.unregister("incoming")
        tally = dict(
            self.connection.execute("SELECT action, count(*) FROM batch GROUP BY action").fetchall()
        )
        if tally.get("insert"):
            self.connection.execute(_INSERT, {"now": now})
        if tally.get("update"):
            self.connection.execute(_UPDATE, {"now": now})
        self.connection.execute("DROP TABLE batch")
        counts.inserted += tally.get("insert", 0)
        counts.updated += tally.get("update", 0)
        counts.unchanged += tally.get("same", 0)
        return counts

    def _transaction(self) -> _Transaction:
        return _Transaction(self.connection)


class _Transaction:
    """BEGIN ... COMMIT, or ROLLBACK on any exception (including cancellation)."""

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self.connection = connection

    def __enter__(self) -> None:
        self.connection.execute("BEGIN TRANSACTION")

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self.connection.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _statements(sql: str) -> list[str]:
    """Split a schema file into statements (its SQL holds no semicolons inside strings)."""
    without_comments = re.sub(r"--[^\n]*", "", sql)
    return [part.strip() for part in without_comments.split(";") if part.strip()]


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _open_error(path: Path, exc: duckdb.IOException) -> WarehouseError:
    text = str(exc)
    if "lock" in text.lower():
        pid = re.search(r"PID (\d+)", text)
        holder = f" (PID {pid.group(1)})" if pid else ""
        return WarehouseLocked(
            f"{path} is in use by another process{holder}, most likely another "
            "`jobsync sync`; only one writer at a time"
        )
    return WarehouseError(f"cannot open {path}: {_first_line(exc)}")
