"""The DuckDB warehouse: schema and migrations, batched upserts, crawl state, run log, rejects.

It knows nothing of HTTP. Every write that matters goes through `commit_batch`, which stores
rows and the partition cursors that cover them in one transaction, so a killed run resumes
exactly where its last commit left it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from jobsync.cursor import CursorState
from jobsync.errors import WarehouseError, WarehouseLocked
from jobsync.partition import Partition
from jobsync.records import JOB_COLUMNS, Reject
from jobsync.schema_files import schema_text
from jobsync.timestamps import ms_to_datetime

log = logging.getLogger("jobsync.store")

SCHEMA_VERSION = 3
# Versions whose `jobs` differs from the one before only in its DDL (2: no primary-key index;
# 3: `raw` a VARCHAR compressed with zstd): an older file gets its rows copied into a `jobs`
# that schemas/warehouse.sql creates.
_JOBS_REBUILT_AT = frozenset({2, 3})
UNFINISHED_STATUSES = ("queued", "running", "retrying")  # integrator.io's `retrying` too
# DuckDB's buffers for a sync's connection: what it writes spills to disk beyond this, so the
# sync's memory does not grow with the warehouse (scripts/bench.py, peak RSS figure).
SYNC_MEMORY_MB = 32
# Rows per row group of `jobs` (DuckDB's default: 122,880). DuckDB writes a commit's whole
# row groups straight into the file, compressed, when the commit holds at least one (its log
# then records where they are), so the writer commits whole row groups (see jobsync.writer).
# With the default, that is 120 pages a commit: its rows spilled past the sync's memory cap,
# and the loop waited for each commit (0.5 s). With 16,384 rows, 300k jobs took the writer
# 1.0 s against 2.05 s through the log, and the file is a fifth larger (42.7 MB against
# 35.4: segments of 16k rows fill DuckDB's 256 kB blocks less well); 8,192 rows made it half
# again as large. DuckDB keeps no row group size in the file: every open sets it.
ROW_GROUP_ROWS = 16_384
# Strings longer than LONG_VALUE_BYTES (DuckDB's limit for strings stored inline) are read,
# committed and checkpointed a vector or a row group at a time, in memory whole: 70 of 2 MB
# under a 32 MB cap could not be read, 160 MB of them failed a commit under 128 MB, and a
# checkpoint that runs out of memory invalidates the database. A warehouse that holds such a
# value lifts the cap to MAX_MEMORY_MB for the rest of the sync (DuckDB takes what it uses),
# and so does a log's replay on open.
LONG_VALUE_BYTES = 4096
MAX_MEMORY_MB = 4096
# DuckDB's threads for a sync's connection, once the file is checked: a second one added
# CPU without shortening a sync's commits (paired CLI backfills: 7.8-9.2 s of CPU against
# 8.3-10.2 at 300k jobs, 25-27 s against 29-32 at 900k, the same wall time and peak RSS;
# the writer alone under the cap, 2.4-2.6 s of CPU against 3.0-3.7, no slower).
SYNC_THREADS = 1
# Checkpoints rewrite and recompress `raw`; DuckDB's default (one per 16 MB of log) made them
# the bulk of a backfill's commit time (scripts/bench.py, ingest figure).
CHECKPOINT_LOG_MB = 256
# DuckDB's threads for a sync's checkpoints: it writes a checkpoint's row groups in parallel,
# and one holds some 2.4 of them (296k jobs); each thread needs some 5 MB of the sync's
# 32 MB (on two threads a checkpoint failed at 8 MB and went through at 12).
CHECKPOINT_THREADS = 2

# The name the file is attached under (see _attach); SQL names its tables unqualified.
_CATALOG = "warehouse"

_DATA_COLUMNS = ", ".join(JOB_COLUMNS)
_UPDATE_SET = ", ".join(f"{c} = b.{c}" for c in JOB_COLUMNS if c != "id")

# Records and ids are compared by MD5, not by DuckDB's hash(): that one is weak on strings
# that differ in a few characters. Of 810k copies of a record that differed only in numError
# and numSuccess, 86,720 shared a hash() with another (236/583 and 238/563 among them): an
# update like that would have read as unchanged and been lost. Of a 3x backfill's 878k ids
# (ObjectIds, as integrator.io's), 2,933 did, and most of its batches took the slow path
# (see _TRACK_IDS). An id's key is 64 bits of its MD5 (what md5_number_lower gives, taken by
# a shift: that macro goes through a 128-character bit string, 5.7 ms per 8k ids against
# 1.5); a record's digest is all 128.
_ID_KEY = "(md5_number(id) >> 64)::UBIGINT"
# A batch (`incoming`, ids unique) is upserted in steps that keep DuckDB's memory small: the
# stored ids it holds, each with whether its record differs (compared by digest, so the join
# holds no records) and is not older; then inserts of the rest and updates of the changed.
_STORED = """
CREATE OR REPLACE TEMP TABLE stored AS
SELECT b.id,
       md5_number(j.raw) <> b.raw_digest
       AND coalesce(b.last_modified >= j.last_modified, TRUE) AS changed
FROM (SELECT id, md5_number(raw) AS raw_digest, last_modified FROM incoming) AS b
JOIN jobs AS j ON j.id = b.id
"""
_OLDEST = -(2**63)
_ANY_STORED = "SELECT EXISTS (SELECT 1 FROM jobs WHERE id IN (SELECT id FROM incoming))"
# A sync into an empty warehouse (a first backfill) knows every id it stored: their keys,
# in a table of its connection. A batch none of whose keys is there is all new, found
# without scanning every stored id (which made a backfill's commits grow with its square).
_TRACK_IDS = f"""
CREATE TEMP TABLE stored_ids AS SELECT {_ID_KEY} AS h FROM jobs WHERE false
"""
_ANY_TRACKED = f"""
SELECT EXISTS (SELECT 1 FROM stored_ids WHERE h IN (SELECT {_ID_KEY} FROM incoming))
"""
_NOTE_TRACKED = f"INSERT INTO stored_ids SELECT {_ID_KEY} FROM incoming"
_INSERT_ALL = f"""
INSERT INTO jobs ({_DATA_COLUMNS}, first_seen_at, last_synced_at)
SELECT {_DATA_COLUMNS}, $now, $now FROM incoming
"""
_INSERT_NEW = _INSERT_ALL + " WHERE id NOT IN (SELECT id FROM stored)"
_UPDATE_CHANGED = f"""
UPDATE jobs SET {_UPDATE_SET}, last_synced_at = $now
FROM incoming AS b
WHERE jobs.id = b.id AND b.id IN (SELECT id FROM stored WHERE changed)
"""


@dataclass(frozen=True)
class Unfinished:
    """A stored job that has not ended (as last seen)."""

    job_id: str
    flow_id: str | None
    created_ms: int


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
        self._batches: duckdb.DuckDBPyConnection | None = None
        self._tracking_ids = False  # see _TRACK_IDS
        self._capped = False  # under the `memory_mb` of open, not yet lifted
        self._threads: int | None = None  # DuckDB's threads as open set them (None: default)

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        read_only: bool = False,
        memory_mb: int | None = None,
        threads: int | None = None,
    ) -> Warehouse:
        """Open (or create) the warehouse and bring its schema to the current version.
        `memory_mb` caps DuckDB's buffers (it spills to disk beyond) while the warehouse
        holds no long values (see LONG_VALUE_BYTES); `threads` sets DuckDB's threads once
        the file is checked (None: DuckDB's default, one per core)."""
        path = Path(path)
        if read_only and not path.exists():
            raise WarehouseError(f"no warehouse at {path}: run `jobsync sync` first")
        if not read_only and not path.parent.exists():
            raise WarehouseError(f"cannot create {path}: folder {path.parent} does not exist")
        # room to replay a log that a killed sync left
        config = {} if memory_mb is None else {"memory_limit": f"{MAX_MEMORY_MB}MB"}
        connection = duckdb.connect(":memory:", config=config)
        try:
            _attach(connection, path, read_only)
        except duckdb.Error as exc:
            connection.close()
            raise _open_error(path, exc) from None
        warehouse = cls(connection, path)
        try:
            connection.execute("SET TimeZone = 'UTC'")
            connection.execute(f"SET checkpoint_threshold = '{CHECKPOINT_LOG_MB}MB'")
            if memory_mb is not None:
                connection.execute(f"SET memory_limit = '{memory_mb}MB'")
                warehouse._capped = True
            try:
                version = warehouse._check_version()
                if not read_only:  # before the first write: a damaged file stays as it is
                    warehouse._verify_readable()
            except duckdb.Error as exc:
                raise _damaged(path, exc) from None
            if not read_only:
                warehouse._migrate(version)
                warehouse._create_views()
            if threads is not None:
                connection.execute(f"SET threads = {int(threads)}")
                warehouse._threads = threads
        except BaseException:
            connection.close()
            raise
        return warehouse

    @classmethod
    def open_for_sync(cls, path: Path, *, memory_mb: int | None = SYNC_MEMORY_MB) -> Warehouse:
        """Open the warehouse as a sync writes to it: DuckDB capped at `memory_mb` (None:
        DuckDB's default) and on SYNC_THREADS."""
        return cls.open(path, memory_mb=memory_mb, threads=SYNC_THREADS)

    def close(self) -> None:
        """Close; DuckDB's checkpoint at the close runs on CHECKPOINT_THREADS too (see
        _checkpoint_when_due)."""
        if self._batches is not None:
            self._batches.close()
        more = self._checkpoint_threads()
        if more is not None:
            # a database that a failed statement invalidated refuses this, and closes all the same
            with contextlib.suppress(duckdb.Error):
                self.connection.execute(f"SET threads = {more}")
        self.connection.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema ---------------------------------------------------------------------------

    def schema_version(self) -> int | None:
        """The version recorded in the file, or None for a file jobsync never wrote."""
        exists = _first_row(
            self.connection.execute(
                "SELECT count(*) FROM information_schema.tables "
                "WHERE table_catalog = current_database() AND table_name = 'jobsync_meta'"
            )
        )
        if not exists or not exists[0]:
            return None
        row = _first_row(
            self.connection.execute("SELECT value FROM jobsync_meta WHERE key = 'schema_version'")
        )
        return int(row[0]) if row else None

    def _check_version(self) -> int | None:
        version = self.schema_version()
        if version is not None and version > SCHEMA_VERSION:
            raise WarehouseError(
                f"{self.path} has schema version {version}, newer than this jobsync "
                f"understands ({SCHEMA_VERSION}); upgrade jobsync"
            )
        return version

    def _migrate(self, version: int | None) -> None:
        """Bring a file at `version` (None: new) to SCHEMA_VERSION."""
        if version == SCHEMA_VERSION:
            return
        if version is None:
            user_tables = _first_row(
                self.connection.execute(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_catalog = current_database()"
                )
            )
            if user_tables and user_tables[0]:
                raise WarehouseError(
                    f"{self.path} is a DuckDB database that jobsync did not create; "
                    "refusing to write into it"
                )
        steps = range((version or SCHEMA_VERSION) + 1, SCHEMA_VERSION + 1)
        with self._transaction():
            if steps:
                self._drop_views()  # they name the tables a migration replaces
                self.connection.execute("DELETE FROM jobsync_meta WHERE key = 'views_sha256'")
            rebuild = not _JOBS_REBUILT_AT.isdisjoint(steps)
            if rebuild:
                self.connection.execute("ALTER TABLE jobs RENAME TO jobs_before")
            self._execute_all(_statements(schema_text("warehouse.sql")))
            if rebuild:
                self.connection.execute("INSERT INTO jobs SELECT * FROM jobs_before")
                self.connection.execute("DROP TABLE jobs_before")
            self.connection.execute(
                "INSERT OR REPLACE INTO jobsync_meta VALUES ('schema_version', ?)",
                [str(SCHEMA_VERSION)],
            )

    def _execute_all(self, statements: list[str]) -> None:
        for statement in statements:
            self.connection.execute(statement)

    def _drop_views(self) -> None:
        views = self.connection.execute(
            "SELECT view_name FROM duckdb_views() "
            "WHERE database_name = current_database() AND NOT internal AND NOT temporary"
        ).fetchall()
        for (name,) in views:
            self.connection.execute(f'DROP VIEW "{name}"')

    def _verify_readable(self) -> None:
        """Read every row of every table: DuckDB checks each block's checksum as it loads
        it, so a damaged file is refused here, before anything is written to it. A file
        holding long values lifts the memory cap (it takes that to read them)."""
        try:
            longest = self._read_every_row()
        except duckdb.OutOfMemoryException:
            if not self._capped:
                raise
            self._lift_memory_cap("reading the warehouse ran out of memory")
            longest = self._read_every_row()
        if self._capped and longest > LONG_VALUE_BYTES:
            self._lift_memory_cap(f"the warehouse holds values over {LONG_VALUE_BYTES} bytes")

    def _read_every_row(self) -> int:
        """The longest `raw` (bytes) of jobs and rejects, read on the way."""
        tables = self.connection.execute(
            """SELECT t.table_name, bool_or(c.column_name = 'raw')
               FROM duckdb_tables() AS t JOIN duckdb_columns() AS c ON c.table_oid = t.table_oid
               WHERE t.database_name = current_database() AND NOT t.temporary
               GROUP BY t.table_name"""
        ).fetchall()
        longest = 0
        for table, has_raw in tables:
            raw_length = "max(strlen(raw::VARCHAR))" if has_raw else "0"
            row = _first_row(
                self.connection.execute(
                    f'SELECT count(*), bit_xor(hash(t)), {raw_length} FROM "{table}" AS t'
                )
            )
            longest = max(longest, row[2] or 0) if row else longest
        return longest

    def _create_views(self) -> None:
        """(Re)create the analyst views when views.sql changed, so a newer jobsync's views
        replace an older one's (and an open that changes nothing writes nothing)."""
        text = schema_text("views.sql")
        digest = hashlib.sha256(text.encode()).hexdigest()
        row = _first_row(
            self.connection.execute("SELECT value FROM jobsync_meta WHERE key = 'views_sha256'")
        )
        if row is not None and row[0] == digest:
            return
        with self._transaction():
            for statement in _statements(text):
                self.connection.execute(statement)
            self.connection.execute(
                "INSERT OR REPLACE INTO jobsync_meta VALUES ('views_sha256', ?)", [digest]
            )

    # -- runs -----------------------------------------------------------------------------

    def begin_run(self, run_id: str, started_at_ms: int) -> int:
        """Log a new run; runs left 'running' by a killed process become 'interrupted'.
        Returns how many such runs there were."""
        with self._transaction():
            stale = _first_row(
                self.connection.execute(
                    "UPDATE sync_runs SET outcome = 'interrupted' WHERE outcome = 'running'"
                )
            )
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
            if partitions:  # one statement each: executemany runs one per row (0.9 s for 200)
                _insert_rows(
                    self.connection,
                    "INSERT INTO sync_partitions",
                    [p.key for p in partitions],
                    [run_id] * len(partitions),
                    [list(p.flow_ids) for p in partitions],
                    [
                        None if p.window_gte is None else ms_to_datetime(p.window_gte)
                        for p in partitions
                    ],
                    [ms_to_datetime(p.window_lte) for p in partitions],
                    [ms_to_datetime(p.cursor.lte) for p in partitions],
                    [sorted(p.cursor.seen) for p in partitions],
                )
            if planned_through:
                _insert_rows(
                    self.connection,
                    "INSERT OR REPLACE INTO flow_state",
                    list(planned_through),
                    [ms_to_datetime(ms) for ms in planned_through.values()],
                )

    def jobs_to_refresh(
        self, flow_ids: list[str], now_ms: int, retention_days: int
    ) -> list[Unfinished]:
        """Unfinished jobs of these flows (or of no known flow) that no pending partition will
        list again, oldest first: these must be fetched again to learn how they ended. Jobs
        past their purge date (`purgeAt`, else created + retention) are left as last seen:
        the API no longer has them, and asking every night would cost requests forever."""
        placeholders = ", ".join("?" for _ in UNFINISHED_STATUSES)
        rows = self.connection.execute(
            f"""SELECT j.id, j.flow_id, epoch_ms(j.created_at) FROM jobs AS j
                WHERE j.status IN ({placeholders})
                  AND (j.flow_id IS NULL OR list_contains(?, j.flow_id))
                  AND coalesce(j.purge_at, j.created_at + to_days(?)) > ?
                  AND NOT EXISTS (
                      SELECT 1 FROM sync_partitions AS p
                      WHERE list_contains(p.flow_ids, j.flow_id)
                        AND j.created_at <= p.cursor_lte
                        AND (p.window_gte IS NULL OR j.created_at >= p.window_gte))
                ORDER BY j.created_at""",
            [*UNFINISHED_STATUSES, flow_ids, retention_days, ms_to_datetime(now_ms)],
        ).fetchall()
        return [Unfinished(job_id, flow_id, int(created)) for job_id, flow_id, created in rows]

    def flow_retention_ms(self) -> dict[str, int]:
        """flow id -> how long the API keeps its jobs after they end, as the purgeAt of its
        newest ended job says (the flow's setting now); flows whose jobs carry none are absent."""
        rows = self.connection.execute(
            """SELECT flow_id, arg_max(epoch_ms(purge_at) - epoch_ms(ended_at), created_at)
               FROM jobs WHERE flow_id IS NOT NULL AND purge_at IS NOT NULL
                 AND ended_at IS NOT NULL
               GROUP BY flow_id"""
        ).fetchall()
        return {flow_id: int(ms) for flow_id, ms in rows}

    def count_jobs(self, flow_ids: tuple[str, ...], gte_ms: int, lte_ms: int) -> int:
        """Stored jobs of these flows created within [gte, lte]: what listing them costs."""
        row = _first_row(
            self.connection.execute(
                """SELECT count(*) FROM jobs WHERE list_contains(?, flow_id)
               AND created_at BETWEEN ? AND ?""",
                [list(flow_ids), ms_to_datetime(gte_ms), ms_to_datetime(lte_ms)],
            )
        )
        return int(row[0]) if row else 0

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
        finished and its row goes) in one transaction; then checkpoint if the log is due."""
        if self._batches is None:
            # Its own connection: a result left unread on the main one (by a caller) would
            # make DuckDB refuse to register the batch.
            self._batches = self.connection.cursor()
            self._batches.execute(f"USE {_CATALOG}")
            if _scalar(self._batches, "SELECT NOT EXISTS (SELECT 1 FROM jobs)"):
                self._batches.execute(_TRACK_IDS)
                self._tracking_ids = True
        now = ms_to_datetime(now_ms)
        tracked = self._tracking_ids
        if self._capped and _longest_value(rows, rejects) > LONG_VALUE_BYTES:
            self._lift_memory_cap(f"a batch holds values over {LONG_VALUE_BYTES} bytes")
        try:
            try:
                counts = _commit(self._batches, rows, rejects, cursors, run_id, now, tracked)
            except (duckdb.OutOfMemoryException, duckdb.TransactionException) as exc:
                if not self._capped:
                    raise
                # rolled back (as is a commit that fails before it is written): once more
                self._lift_memory_cap(
                    f"a batch of {rows.num_rows} jobs failed ({_first_line(exc)})"
                )
                counts = _commit(self._batches, rows, rejects, cursors, run_id, now, tracked)
        except (duckdb.OutOfMemoryException, duckdb.FatalException) as exc:
            raise WarehouseError(
                f"DuckDB could not store a batch of {rows.num_rows} jobs "
                f"({rows.nbytes // 2**20} MB) within {MAX_MEMORY_MB} MB: {_first_line(exc)}; "
                "what earlier batches stored is kept"
            ) from None
        self._checkpoint_when_due()
        return counts

    def _checkpoint_when_due(self) -> None:
        """Checkpoint once the log holds CHECKPOINT_LOG_MB, as DuckDB would at the next commit,
        but on CHECKPOINT_THREADS where open held DuckDB to fewer: the checkpoint is the one
        step of a sync that a second thread shortens (296k jobs under the 32 MB cap: 0.65-0.70 s
        on two threads against 1.03-1.04 s on one, for 0.12 s more CPU and the same file), and
        the writer waits for it."""
        wal = self.path.with_name(self.path.name + ".wal")
        if not wal.exists() or wal.stat().st_size < CHECKPOINT_LOG_MB * 1000**2:
            return
        batches = self._batches
        assert batches is not None  # made by the batch just stored
        more = self._checkpoint_threads()
        if more is not None:
            batches.execute(f"SET threads = {more}")
        try:
            batches.execute("CHECKPOINT")
        except duckdb.Error as exc:
            raise WarehouseError(
                f"DuckDB could not checkpoint {self.path}: {_first_line(exc)}; every batch "
                "committed is in its log, which the next run replays"
            ) from None
        if more is not None:
            batches.execute(f"SET threads = {self._threads}")

    def _checkpoint_threads(self) -> int | None:
        """CHECKPOINT_THREADS (at most one per core) where open held DuckDB to fewer, else
        None: the threads as they are."""
        threads = min(CHECKPOINT_THREADS, os.cpu_count() or 1)
        return threads if self._threads is not None and self._threads < threads else None

    def _lift_memory_cap(self, why: str) -> None:
        """For the rest of the sync: see LONG_VALUE_BYTES. `why` goes to the log."""
        log.info("%s: DuckDB's memory limit lifted to %d MB", why, MAX_MEMORY_MB)
        self.connection.execute(f"SET memory_limit = '{MAX_MEMORY_MB}MB'")
        self._capped = False

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


def _commit(
    con: duckdb.DuckDBPyConnection,
    rows: pa.Table,
    rejects: list[Reject],
    cursors: dict[str, CursorState | None],
    run_id: str,
    now: datetime,
    tracked: bool,
) -> UpsertCounts:
    counts = UpsertCounts(rejects=len(rejects))
    # registered outside the transaction, so that a failed statement's error is the one
    # raised (unregistering inside an aborted transaction fails too, and hides it)
    con.register("incoming", _unique_by_id(rows))
    try:
        with _Transaction(con):
            if rows.num_rows:
                _upsert(con, now, counts, tracked)
            _log_rejects(con, rejects, run_id, now)
            _move_cursors(con, cursors)
    finally:
        con.unregister("incoming")
    return counts


def _upsert(
    con: duckdb.DuckDBPyConnection, now: datetime, counts: UpsertCounts, tracked: bool
) -> None:
    """Insert what is new and update what changed among the registered `incoming`;
    `tracked`: the connection's `stored_ids` holds every stored id (see _TRACK_IDS)."""
    if tracked:
        all_new = not _scalar(con, _ANY_TRACKED)
        con.execute(_NOTE_TRACKED)  # inside the transaction: undone with the batch
    else:
        all_new = not _scalar(con, _ANY_STORED)
    if all_new:  # a backfill's every batch
        counts.inserted += _scalar(con, _INSERT_ALL, {"now": now})
        return
    con.execute(_STORED)
    stored, changed = _first_row(
        con.execute("SELECT count(*), count(*) FILTER (WHERE changed) FROM stored")
    ) or (0, 0)
    counts.inserted += _scalar(con, _INSERT_NEW, {"now": now})
    if changed:
        con.execute(_UPDATE_CHANGED, {"now": now})
    counts.updated += changed
    counts.unchanged += stored - changed
    con.execute("DROP TABLE stored")


def _log_rejects(
    con: duckdb.DuckDBPyConnection, rejects: list[Reject], run_id: str, now: datetime
) -> None:
    """A record rejected before (the overlap re-reads it) is logged once."""
    if not rejects:
        return
    con.execute(
        """INSERT INTO rejects
           SELECT DISTINCT b.raw, b.reason, $run, $now
           FROM (SELECT unnest($raws) AS raw, unnest($reasons) AS reason) AS b
           WHERE NOT EXISTS (
               SELECT 1 FROM rejects AS r WHERE r.raw = b.raw AND r.reason = b.reason)""",
        {
            "raws": [r.raw for r in rejects],
            "reasons": [r.reason for r in rejects],
            "run": run_id,
            "now": now,
        },
    )


def _move_cursors(con: duckdb.DuckDBPyConnection, cursors: dict[str, CursorState | None]) -> None:
    for key, state in cursors.items():
        if state is None:
            con.execute("DELETE FROM sync_partitions WHERE key = ?", [key])
        else:
            con.execute(
                "UPDATE sync_partitions SET cursor_lte = ?, cursor_seen = ? WHERE key = ?",
                [ms_to_datetime(state.lte), sorted(state.seen), key],
            )


def _scalar(
    con: duckdb.DuckDBPyConnection, sql: str, parameters: dict[str, Any] | None = None
) -> Any:
    row = _first_row(con.execute(sql, parameters))
    return row[0] if row else None


def _first_row(result: duckdb.DuckDBPyConnection) -> tuple[Any, ...] | None:
    """The first row, reading the result to its end: DuckDB refuses some calls (register)
    while a result is left unfinished."""
    rows = result.fetchall()
    return rows[0] if rows else None


def _unique_by_id(rows: pa.Table) -> pa.Table:
    """One row per id: the latest `last_modified` (a missing one is the oldest), the later
    row on a tie. Pages are unique already; a batch repeats an id when a refresh and a
    listing both brought it."""
    ids = rows.column("id")
    if pc.count_distinct(ids).as_py() == rows.num_rows:
        return rows
    modified = pc.fill_null(rows.column("last_modified").cast(pa.int64()), _OLDEST).to_pylist()
    best: dict[str, int] = {}
    for index, job_id in enumerate(ids.to_pylist()):
        held = best.get(job_id)
        if held is None or modified[held] <= modified[index]:
            best[job_id] = index
    return rows.take(pa.array(sorted(best.values()), type=pa.int64()))


def _statements(sql: str) -> list[str]:
    """Split a schema file into statements (its SQL holds no semicolons inside strings)."""
    without_comments = re.sub(r"--[^\n]*", "", sql)
    return [part.strip() for part in without_comments.split(";") if part.strip()]


def _insert_rows(con: duckdb.DuckDBPyConnection, insert: str, *columns: list[Any]) -> None:
    """`insert` (INSERT ... INTO table) of the rows that `columns` hold, in one statement."""
    values = ", ".join(f"unnest(${n})" for n in range(1, len(columns) + 1))
    con.execute(f"{insert} SELECT {values}", list(columns))


def _longest_value(rows: pa.Table, rejects: list[Reject]) -> int:
    """The longest raw text of a batch, in bytes (`raw` holds every other value)."""
    longest = pc.max(pc.binary_length(rows["raw"])).as_py() if rows.num_rows else 0
    return max([longest or 0, *(len(reject.raw.encode()) for reject in rejects)])


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _damaged(path: Path, exc: duckdb.Error) -> WarehouseError:
    """A read that failed on a file that opened: its blocks are damaged."""
    return WarehouseError(
        f"{path} is damaged ({_first_line(exc)}); it was left as it is: restore it from a "
        "backup, or move it aside and sync into a new file"
    )


def _attach(connection: duckdb.DuckDBPyConnection, path: Path, read_only: bool) -> None:
    """Open the file in `connection` as its default catalog, its row groups ROW_GROUP_ROWS."""
    quoted = str(path).replace("'", "''")
    options = "READ_ONLY" if read_only else f"ROW_GROUP_SIZE {ROW_GROUP_ROWS}"
    connection.execute(f"ATTACH '{quoted}' AS {_CATALOG} ({options})")
    connection.execute(f"USE {_CATALOG}")


def _open_error(path: Path, exc: duckdb.Error) -> WarehouseError:
    text = str(exc)
    if isinstance(exc, duckdb.IOException) and re.search(r"\block\b", text, re.IGNORECASE):
        pid = re.search(r"PID (\d+)", text)
        holder = f" (PID {pid.group(1)})" if pid else ""
        return WarehouseLocked(
            f"{path} is in use by another process{holder}, most likely another "
            "`jobsync sync`; only one writer at a time"
        )
    return WarehouseError(f"cannot open {path}: {_first_line(exc)}")
