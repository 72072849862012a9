"""`jobsync demo`: the whole pipeline offline — the simulator on loopback, a real sync into
a DuckDB file, and two analyst questions answered from it."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from pathlib import Path

import duckdb

from jobsync.api import ClientSettings, JobsClient
from jobsync.dialect import DEFAULT_DIALECT
from jobsync.errors import ConfigError, WarehouseError
from jobsync.secret import ApiToken
from jobsync.simulator import Account, AccountConfig, ServerOptions, SimulatorServer, WallClock
from jobsync.store import Warehouse
from jobsync.sync import SyncOptions, SyncSummary, run_sync
from jobsync.timestamps import now_ms

QUESTIONS: tuple[tuple[str, str], ...] = (
    (
        "Which flows failed most in the last 7 days?",
        """SELECT flow_id,
       count(*) AS runs,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       sum(num_error) AS records_errored
FROM jobs
WHERE type = 'flow' AND created_at >= now() - INTERVAL 7 DAY
GROUP BY flow_id
ORDER BY failed DESC, records_errored DESC
LIMIT 5""",
    ),
    (
        "How long do flow runs take, per day (last 5 days)?",
        """SELECT created_at::DATE AS day,
       count(*) AS runs,
       round(median(epoch(ended_at - started_at)), 1) AS median_s,
       round(quantile_cont(epoch(ended_at - started_at), 0.95), 1) AS p95_s
FROM jobs
WHERE type = 'flow' AND ended_at IS NOT NULL
GROUP BY day
ORDER BY day DESC
LIMIT 5""",
    ),
)


_MARK_DEMO = "INSERT OR REPLACE INTO jobsync_meta VALUES ('demo', 'true')"


@dataclass(frozen=True)
class DemoResult:
    """The sync's summary and each question with its column names and rows."""

    summary: SyncSummary
    answers: list[tuple[str, str, list[str], list[tuple]]]


def run_demo(
    db: Path, flows: int, days: int, seed: int, dialect: str = DEFAULT_DIALECT
) -> DemoResult:
    """Serve a synthetic account whose history ends now in `dialect`, sync it into `db`,
    ask QUESTIONS."""
    _remove_earlier_demo(db)
    token = secrets.token_urlsafe(24)
    config = AccountConfig(seed=seed, flows=flows, days=days, start_ms=now_ms())
    account = Account(config)
    options = ServerOptions(token=token, dialect=dialect)
    with SimulatorServer(account, options, clock=WallClock(config.start_ms)) as server:
        settings = ClientSettings(
            base_url=server.url, token=ApiToken(token), dialect=dialect, rate_limit=500
        )
        with Warehouse.open_for_sync(db) as warehouse:
            sync_options = SyncOptions(page_size=options.page_cap)
            summary = asyncio.run(_sync(settings, warehouse, sync_options))
            warehouse.connection.execute(_MARK_DEMO)
            answers = []
            for question, sql in QUESTIONS:
                result = warehouse.connection.execute(sql)
                columns = [d[0] for d in result.description]
                answers.append((question, sql, columns, result.fetchall()))
    return DemoResult(summary, answers)


async def _sync(
    settings: ClientSettings, warehouse: Warehouse, options: SyncOptions
) -> SyncSummary:
    async with JobsClient(settings) as client:
        return await run_sync(client, warehouse, options)


def _remove_earlier_demo(db: Path) -> None:
    """Each demo serves a new account (its history ends now), so an earlier demo's file is
    replaced; any other file at that path is left alone."""
    if not db.exists():
        return
    try:
        with Warehouse.open(db, read_only=True) as warehouse:
            marked = warehouse.connection.execute(
                "SELECT count(*) FROM jobsync_meta WHERE key = 'demo'"
            ).fetchone()
    except (WarehouseError, duckdb.Error):
        marked = None
    if not marked or not marked[0]:
        raise ConfigError(f"{db} exists and is not a demo warehouse; pass another --db")
    db.unlink()
    db.with_name(db.name + ".wal").unlink(missing_ok=True)
