"""The attack families of scripts/chaos.py: kills, faults and bad input against the simulator
in its own process; then the warehouse file, and secrets and trust. Each returns an
AttackReport of the cases it tried."""

from __future__ import annotations

import ctypes
import hashlib
import ipaddress
import os
import random
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import duckdb
import orjson
from chaos_harness import (
    PAGE_SIZE,
    AttackReport,
    Cli,
    CliResult,
    Truth,
    chaos_account,
    count_jobs,
    finish,
    kill_sync_when,
    last_run,
    sync_args,
)
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jobsync.simulator import Account, AccountConfig, ServerOptions
from jobsync.simulator.faults import FaultPlan
from jobsync.simulator.process import SimulatorProcess
from jobsync.store import SCHEMA_VERSION

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
OVERLAP_MS = HOUR_MS  # the sync's default --overlap
# Planted records (jobsync.simulator.faults) and what must become of each: a reject with a
# reason, a row of its own, or nothing at all because the newer real job wins.
REJECTED_KINDS = frozenset(
    {"not_object", "no_id", "text_count", "number_timestamp", "bad_timestamp", "naive_timestamp"}
)
KEPT_KINDS = frozenset({"digit_count", "huge_strings", "unknown_nested"})
LARGE_BYTES = 64 << 10  # strings in the run of every kind of bad record
HUGE_BYTES = 4 << 20  # strings in the run of huge records only


@dataclass(frozen=True)
class Scale:
    """How much of each attack to run."""

    backfill_kills: int
    incremental_hops: int  # clock moves of 3 to 12 hours, each followed by killed runs
    incremental_kills: int  # per hop
    refresh_hops: int  # clock moves of a few minutes: runs that mostly refresh running jobs
    refresh_kills: int  # per hop
    fault_hops: int  # incremental runs under faults, after the backfill under faults
    bad_input_hops: int


SHORT = Scale(3, 1, 2, 1, 2, 1, 1)
LONG = Scale(10, 5, 2, 4, 2, 6, 6)


@dataclass(frozen=True)
class Target:
    """A warehouse under attack, the API it syncs from, and the account behind that API."""

    cli: Cli
    sim: SimulatorProcess
    truth: Truth
    db: Path


@dataclass
class Context:
    """What every attack gets: the scale, a seeded Random, a work folder and the token."""

    scale: Scale
    seed: int
    workdir: Path
    token: str
    rng: random.Random
    dialect: str

    def truth(self, config: AccountConfig) -> Truth:
        return Truth(Account(config), self.dialect)

    def folder(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def cli(self, folder: Path, options: ServerOptions, **env: str) -> Cli:
        """The CLI in `folder`, speaking the simulator's dialect, starting at 200 requests/s
        (the simulator has no rate limit unless an attack gives it one)."""
        settings = {"JOBSYNC_DIALECT": options.dialect, "JOBSYNC_RATE_LIMIT": "200"}
        return Cli(self.token, folder, {**settings, **env})


def _options(ctx: Context, **knobs: Any) -> ServerOptions:
    return ServerOptions(
        ctx.token, page_size=PAGE_SIZE, seed=ctx.seed, dialect=ctx.dialect, **knobs
    )


# -- 1. kills ----------------------------------------------------------------------------------


def kills(ctx: Context) -> AttackReport:
    """SIGKILL `jobsync sync` at random moments of a backfill, of incremental runs after the
    clock moves hours on, and of runs that mostly refresh running jobs; rerun each time."""
    report = AttackReport("1. kills (SIGKILL, rerun)")
    folder = ctx.folder("kills")
    config = chaos_account(ctx.seed)
    truth = ctx.truth(config)
    options = _options(ctx, latency_ms=2)
    cli = ctx.cli(folder, options)
    db = folder / "kills.duckdb"
    scale = ctx.scale
    phases = [("backfill", 0, scale.backfill_kills)]
    phases += [
        ("incremental", ctx.rng.randint(3, 12) * HOUR_MS, scale.incremental_kills)
        for _ in range(scale.incremental_hops)
    ]
    phases += [
        ("refresh", ctx.rng.randint(2, 20) * 60_000, scale.refresh_kills)
        for _ in range(scale.refresh_hops)
    ]
    now = config.start_ms
    with SimulatorProcess(config, options) as sim:
        target = Target(cli, sim, truth, db)
        for phase, advance, wanted in phases:
            now += advance
            sim.set_clock(now)
            _killed_phase(ctx, report, target, now, phase, wanted)
    landed = sum(1 for case in report.cases if " kill " in case.name)
    report.notes.append(f"{landed} kills in {len(phases)} runs to the end")
    return report


def _killed_phase(
    ctx: Context, report: AttackReport, target: Target, now: int, phase: str, wanted: int
) -> None:
    """Kill `wanted` runs of one phase, then run it to the end and compare with the truth.
    A kill's case survives when the warehouse opens after it, holds no fewer jobs than
    before it and nothing the API never showed, and the phase ends equal to the truth.

    First, an unkilled run on a copy of the warehouse measures how many requests the phase
    takes: kills are aimed inside that, and a resumed backfill must take fewer."""
    baseline = _baseline_requests(report, target, phase)
    kills: list[tuple[str, bool, str]] = []
    committed = count_jobs(target.db)
    served = target.sim.request_count()
    attempts = 0
    while len(kills) < wanted and attempts < 4 * wanted:
        attempts += 1
        # Kill inside what is left of the work, which each killed run shrinks.
        left = baseline - (target.sim.request_count() - served)
        moment, result = _killed_run(ctx, target, max(2, left * 4 // 5))
        if result is None:
            continue  # the run ended before the moment came: nothing was killed
        try:
            after = count_jobs(target.db)
            partial = target.truth.check(target.db, now, "after a kill", complete=False)
            ok = after >= committed and partial.clean
            detail = f"{committed} -> {after} jobs; {partial.line()}"
        except duckdb.Error as exc:
            ok, detail = False, f"the warehouse does not open after the kill: {exc}"
            after = committed
        kills.append((f"{phase} kill {len(kills) + 1} {moment}", ok, detail))
        committed = after
    final = target.cli.run(*sync_args(target.sim.url, target.db, "--json"))
    verdict = target.truth.check(target.db, now, f"{phase} at {_iso(now)}")
    clean = report.verdict(verdict) and final.returncode == 0
    for name, ok, detail in kills:
        report.case(name, ok and clean, detail if clean else f"{detail}; {verdict.line()}")
    report.case(
        f"{phase} rerun to the end",
        clean,
        f"exit {final.returncode}; {verdict.line()}; {final.tail()}",
    )
    if phase == "backfill" and 0 < committed < verdict.listed:
        # A backfill that started again from the top would make every request again.
        resumed = int((final.summary or {}).get("requests", baseline))
        report.case(
            "backfill resumes, not from the top",
            resumed < baseline,
            f"{resumed} requests to finish, {baseline} for a whole backfill; "
            f"{committed} jobs were committed before",
        )


def _baseline_requests(report: AttackReport, target: Target, phase: str) -> int:
    """Requests an unkilled run of this phase makes, on a copy of the warehouse."""
    copy = target.db.with_name(f"baseline-{phase}.duckdb")
    copy.unlink(missing_ok=True)
    if target.db.exists():
        shutil.copy(target.db, copy)
    result = target.cli.run(*sync_args(target.sim.url, copy, "--json"))
    requests = (result.summary or {}).get("requests")
    if result.returncode != 0 or not isinstance(requests, int):
        report.case(
            f"{phase}: an unkilled run", False, f"exit {result.returncode}: {result.tail()}"
        )
        return 2
    return requests


def _killed_run(ctx: Context, target: Target, expected: int) -> tuple[str, CliResult | None]:
    """Start a sync and SIGKILL it at a random moment: after a random number of requests
    below `expected`, or (three times in ten) a random time into its first second and a
    bit: start-up, opening and migrating the warehouse, planning, the first commits."""
    process = target.cli.start(*sync_args(target.sim.url, target.db))
    if ctx.rng.random() < 0.3:
        seconds = ctx.rng.uniform(0.2, 1.2)
        result = kill_sync_when(process, target.sim, after_seconds=seconds)
        return f"after {seconds:.2f} s", result
    requests = ctx.rng.randint(1, max(1, expected - 1))
    result = kill_sync_when(process, target.sim, after_requests=requests)
    return f"after {requests} requests", result


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def _ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


# -- 2. faults ---------------------------------------------------------------------------------

STALL_SECONDS = 2.5
CLIENT_TIMEOUT = "1"


def faults(ctx: Context) -> AttackReport:
    """About 30% of responses fail (5xx, dropped connections, 429 storms with Retry-After,
    stalls past the client's timeout, bodies that are not a JSON list): the runs end equal
    to the truth. Then the API goes down for good mid-run: a clear failure, what was fetched
    committed, and a rerun once it is back completes the warehouse."""
    report = AttackReport("2. faults (30% failing)")
    folder = ctx.folder("faults")
    config = chaos_account(ctx.seed + 1)
    truth = ctx.truth(config)
    plan = FaultPlan(stall=0.03, storm=0.004, bad_body=0.15, stall_seconds=STALL_SECONDS)
    options = _options(ctx, fault_rate=0.14, faults=plan)
    # A generous retry budget: at 30% failing, eight tries all fail once in 15,000 requests.
    cli = ctx.cli(folder, options, JOBSYNC_TIMEOUT=CLIENT_TIMEOUT, JOBSYNC_MAX_ATTEMPTS="12")
    db = folder / "faults.duckdb"
    now = config.start_ms
    runs_ok = []
    with SimulatorProcess(config, options) as sim:
        for hop in range(ctx.scale.fault_hops + 1):
            now += 0 if hop == 0 else ctx.rng.randint(3, 12) * HOUR_MS
            sim.set_clock(now)
            name = "backfill" if hop == 0 else f"incremental run {hop}"
            runs_ok.append(_run_until_done(report, cli, sim.url, db, truth, now, name))
        stats = sim.stats()
    kinds = stats.chaos.by_kind
    failures = {
        "HTTP 5xx or connection dropped mid-body": stats.faults,
        "429 storm answer (Retry-After)": kinds["storm"],
        "stall past the client's timeout": kinds["stall_before_headers"] + kinds["stall_mid_body"],
        "body not the JSON expected": sum(v for k, v in kinds.items() if k.startswith("body_")),
    }
    # Each failed answer is a case: survived when every run it struck ended equal to the truth.
    for name, count in failures.items():
        for number in range(count):
            report.case(f"{name} {number + 1}", all(runs_ok))
    failed = sum(failures.values())
    report.notes.append(
        f"{failed} of {stats.requests} responses failed ({100 * failed / stats.requests:.0f}%): "
        + ", ".join(f"{name} {count}" for name, count in failures.items())
    )
    _outage(ctx, report, folder, config, truth)
    return report


def _run_until_done(
    report: AttackReport, cli: Cli, url: str, db: Path, truth: Truth, now: int, name: str
) -> bool:
    """Run to the end under faults; a run that gives up (retry budget spent) must say so
    clearly and keep what it fetched, and the rerun must finish the job. True if it did."""
    result = cli.run(*sync_args(url, db, "--json"))
    reruns = 0
    while result.returncode != 0 and result.clear_failure and reruns < 2:
        partial = truth.check(db, now, f"{name}, after giving up", complete=False)
        if not report.verdict(partial):
            break
        reruns += 1
        result = cli.run(*sync_args(url, db, "--json"))
    verdict = truth.check(db, now, name)
    ok = report.verdict(verdict) and result.returncode == 0
    tries = f" after {reruns} clear failure(s) and rerun(s)" if reruns else ""
    detail = f"exit {result.returncode}{tries}; {verdict.line()}; {result.tail()}"
    return report.case(f"{name} under faults", ok, detail)


def _outage(
    ctx: Context, report: AttackReport, folder: Path, config: AccountConfig, truth: Truth
) -> None:
    db = folder / "outage.duckdb"
    backfill = truth.account.count_listed(config.start_ms) // PAGE_SIZE
    plan = FaultPlan(outage_after=backfill // 2)
    options = _options(ctx, faults=plan)
    cli = ctx.cli(folder, options, JOBSYNC_MAX_ATTEMPTS="3")
    with SimulatorProcess(config, options) as sim:
        down = cli.run(*sync_args(sim.url, db, "--json"))
    outcome, error = last_run(db)
    kept = count_jobs(db)
    partial = truth.check(db, config.start_ms, "outage", complete=False, current=True)
    ok = report.verdict(partial)
    ok = ok and down.returncode == 1 and down.clear_failure and "503" in down.stderr
    ok = ok and outcome == "failed" and bool(error) and kept > 0
    report.case(
        "API down for good mid-run: clear failure, fetched jobs committed",
        ok,
        f"exit {down.returncode}, run logged {outcome!r}, {kept} jobs kept; {down.tail()}",
    )
    with SimulatorProcess(config, _options(ctx)) as sim:
        back = cli.run(*sync_args(sim.url, db, "--json"))
    verdict = truth.check(db, config.start_ms, "after the outage")
    report.case(
        "API back: the rerun completes the warehouse",
        report.verdict(verdict) and back.returncode == 0,
        f"exit {back.returncode}; {verdict.line()}",
    )


# -- 3. bad input ------------------------------------------------------------------------------


def bad_input(ctx: Context) -> AttackReport:
    """Pages that are not a JSON list, and pages with malformed records mixed in (see
    jobsync.simulator.faults.BAD_RECORDS). A bad page must be retried; a planted record must
    end as a reject with a reason, or as a row of its own, or lose to the newer real job;
    every real job must end equal to the truth. Records with strings of megabytes get a
    warehouse of their own, so that what they do is told apart from the rest."""
    report = AttackReport("3. bad input")
    folder = ctx.folder("bad_input")
    config = chaos_account(ctx.seed + 2)
    every_kind = FaultPlan(bad_records=0.35, bad_body=0.15, huge_bytes=LARGE_BYTES)
    _bad_input_runs(ctx, report, folder / "bad_input.duckdb", config, every_kind)
    huge = FaultPlan(bad_records=0.1, record_kinds=("huge_strings",), huge_bytes=HUGE_BYTES)
    _bad_input_runs(ctx, report, folder / "huge.duckdb", config, huge, hops=0)
    return report


def _bad_input_runs(
    ctx: Context,
    report: AttackReport,
    db: Path,
    config: AccountConfig,
    plan: FaultPlan,
    hops: int | None = None,
) -> None:
    """A backfill and incremental runs against an API that serves `plan`'s bad input, each
    compared with the truth; then a case for every bad body and every planted record."""
    truth = ctx.truth(config)
    options = _options(ctx, faults=plan)
    cli = ctx.cli(db.parent, options)
    now = config.start_ms
    verdicts = len(report.verdicts)
    with SimulatorProcess(config, options) as sim:
        for hop in range(1 + (ctx.scale.bad_input_hops if hops is None else hops)):
            now += 0 if hop == 0 else ctx.rng.randint(3, 12) * HOUR_MS
            sim.set_clock(now)
            result = cli.run(*sync_args(sim.url, db, "--json"))
            planted = {p.marker for p in sim.stats().chaos.planted if p.job_id == p.marker}
            verdict = truth.check(db, now, f"{db.stem} run {hop}", planted=planted)
            report.verdict(verdict)
            if result.returncode != 0:
                detail = f"exit {result.returncode}: {result.tail()}"
                report.case(f"{db.stem} run {hop}", False, detail)
        stats = sim.stats()
    clean = all(v.clean for v in report.verdicts[verdicts:])
    bodies = {k: v for k, v in stats.chaos.by_kind.items() if k.startswith("body_")}
    for kind, count in sorted(bodies.items()):
        for number in range(count):
            report.case(f"{kind} {number + 1}: retried", clean)
    judge = _planted_outcomes(db, plan.huge_bytes)
    for planted in stats.chaos.planted:
        ok, why = judge(planted.marker, planted.kind)
        report.case(f"{planted.kind} {planted.marker}", ok and clean, why)
    report.notes.append(
        f"{db.stem}: {sum(bodies.values())} bad bodies, {len(stats.chaos.planted)} bad records "
        f"(strings of {plan.huge_bytes // 1024:,} KB) in {stats.requests} responses"
    )


def _planted_outcomes(db: Path, huge_bytes: int) -> Callable[[str, str], tuple[bool, str]]:
    """A judge of what became of each planted record (by marker and kind), from the
    warehouse's rejects and rows."""
    with duckdb.connect(str(db), read_only=True) as con:
        rejects = con.execute("SELECT raw, reason FROM rejects").fetchall()
        rows = con.execute("SELECT raw::VARCHAR FROM jobs WHERE raw LIKE '%chaos-%'").fetchall()
    rejected = {
        marker: reason for raw, reason in rejects if (marker := _marker(raw)) and reason.strip()
    }
    kept = {marker: raw for (raw,) in rows if (marker := _marker(raw))}

    def judge(marker: str, kind: str) -> tuple[bool, str]:
        if kind in REJECTED_KINDS:
            return marker in rejected and marker not in kept, rejected.get(marker, "no reject")
        if kind in KEPT_KINDS:
            raw = kept.get(marker)
            if raw is None or marker in rejected:
                return False, f"no row (reject: {rejected.get(marker)})"
            whole = _kept_whole(kind, orjson.loads(raw), huge_bytes)
            return whole, f"a row of {len(raw):,} characters"
        # a stale duplicate: the real job's row (checked against the truth) is not the copy
        gone = marker not in kept and marker not in rejected
        return gone, "the newer real job kept" if gone else "the stale copy was stored"

    return judge


def _marker(raw: str) -> str | None:
    """The marker a planted record carries, wherever it carries it, from its JSON text."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(value, dict):
        found = value.get("chaosMarker")
        return found if isinstance(found, str) else None
    if isinstance(value, str):
        return value.split(":", 1)[0]
    if isinstance(value, list) and value and isinstance(value[0], str):
        return value[0]
    return None


def _kept_whole(kind: str, job: dict[str, Any], huge_bytes: int) -> bool:
    """A kept record holds what was planted, whole."""
    if kind == "digit_count":
        return job.get("numSuccess") == "12"
    if kind == "huge_strings":
        return len(job.get("chaosNotes", "")) == huge_bytes // 2
    depth, nested = 0, job.get("chaosNested")
    while isinstance(nested, dict) and len(nested) == 2:
        nested = next(value for key, value in nested.items() if key != "n")
        depth += 1
    return depth == 40


# -- 4. the warehouse file ---------------------------------------------------------------------


def warehouse(ctx: Context) -> AttackReport:
    """A second sync at once, a missing or read-only folder, a read-only file, an older
    warehouse, a newer one, a truncated, corrupt or foreign file: each refused clearly
    (nothing overwritten) or brought up to date."""
    report = AttackReport("4. warehouse file")
    folder = ctx.folder("warehouse")
    config = chaos_account(ctx.seed + 3)
    truth = ctx.truth(config)
    options = _options(ctx, latency_ms=15)
    cli = ctx.cli(folder, options)
    now = config.start_ms
    with SimulatorProcess(config, options) as sim:
        good = folder / "good.duckdb"
        _second_sync(report, cli, sim, truth, good, now)
        _missing_folder(report, cli, sim.url, folder)
        _read_only(report, cli, sim.url, folder, good)
        _older_warehouse(report, cli, sim.url, folder, good, truth, now)
        for name, spoil in _SPOILERS.items():
            _refused_untouched(report, cli, sim.url, folder, good, name, spoil)
    return report


def _second_sync(
    report: AttackReport, cli: Cli, sim: SimulatorProcess, truth: Truth, db: Path, now: int
) -> None:
    first = cli.start(*sync_args(sim.url, db, "--json"))
    started = time.monotonic()
    while sim.request_count() < 5 and first.poll() is None and time.monotonic() - started < 60:
        time.sleep(0.01)
    second = cli.run(*sync_args(sim.url, db))
    first_result = finish(first, started)
    verdict = truth.check(db, now, "the first sync")
    ok = report.verdict(verdict) and first_result.returncode == 0
    ok = ok and second.returncode == 4 and second.clear_failure and "in use" in second.stderr
    report.case(
        "a second sync at once: refused (exit 4), the first completes",
        ok,
        f"second exit {second.returncode} ({second.tail()}); first exit {first_result.returncode}",
    )


def _missing_folder(report: AttackReport, cli: Cli, url: str, folder: Path) -> None:
    db = folder / "no" / "such" / "folder" / "j.duckdb"
    result = cli.run(*sync_args(url, db))
    ok = result.clear_failure and "does not exist" in result.stderr
    ok = ok and not (folder / "no").exists()
    report.case("a missing folder: clear error, nothing created", ok, result.tail())


def _read_only(report: AttackReport, cli: Cli, url: str, folder: Path, good: Path) -> None:
    """A folder and a warehouse file that the sync's user cannot write (root writes
    anywhere: as root, the sync runs without the capabilities that allow it)."""
    locked = folder / "read-only"
    locked.mkdir()
    copy = locked / "copy.duckdb"
    shutil.copy(good, copy)
    before = _digest(copy)
    os.chmod(copy, 0o444)
    os.chmod(locked, 0o555)
    try:
        as_user = _obey_file_modes if os.geteuid() == 0 else None
        new = cli.run(*sync_args(url, locked / "new.duckdb"), preexec=as_user)
        ok = new.clear_failure and not (locked / "new.duckdb").exists()
        report.case("a read-only folder: clear error, nothing created", ok, new.tail())
        old = cli.run(*sync_args(url, copy), preexec=as_user)
        ok = old.clear_failure and _digest(copy) == before
        report.case("a read-only warehouse file: clear error, file unchanged", ok, old.tail())
    finally:
        os.chmod(locked, 0o755)
        os.chmod(copy, 0o644)


_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _obey_file_modes() -> None:
    """In a child process of root: drop the capabilities that let root ignore file modes,
    so that the exec'd program (still uid 0, the files' owner) obeys them."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def _older_warehouse(
    report: AttackReport, cli: Cli, url: str, folder: Path, good: Path, truth: Truth, now: int
) -> None:
    """A warehouse of schema version 1 (which had a primary key on `jobs.id`) with views an
    older jobsync left: migrated to the current version, its jobs kept, then synced."""
    db = folder / "older.duckdb"
    shutil.copy(good, db)
    with duckdb.connect(str(db)) as con:
        views = _views(con)
        for view in views:
            con.execute(f'DROP VIEW "{view}"')
        con.execute("ALTER TABLE jobs ADD PRIMARY KEY (id)")
        con.execute("UPDATE jobsync_meta SET value = '1' WHERE key = 'schema_version'")
        con.execute("CREATE VIEW flow_daily AS SELECT 'outdated' AS flow_id")
        kept = con.execute("SELECT count(*) FROM jobs").fetchone()
    result = cli.run(*sync_args(url, db, "--json"))
    with duckdb.connect(str(db), read_only=True) as con:
        version = con.execute(
            "SELECT value FROM jobsync_meta WHERE key = 'schema_version'"
        ).fetchone()
        keys = con.execute(
            "SELECT count(*) FROM duckdb_constraints() "
            "WHERE table_name = 'jobs' AND constraint_type = 'PRIMARY KEY'"
        ).fetchone()
        again = _views(con)
        columns = [d[0] for d in con.execute("SELECT * FROM flow_daily LIMIT 0").description]
    verdict = truth.check(db, now, "v1 warehouse, migrated and synced")
    ok = report.verdict(verdict) and result.returncode == 0
    ok = ok and version == (str(SCHEMA_VERSION),) and keys == (0,)
    ok = ok and sorted(again) == sorted(views) and "runs" in columns
    report.case(
        f"a schema 1 warehouse ({kept[0] if kept else 0} jobs, older views): migrated to "
        f"{SCHEMA_VERSION} and synced",
        ok,
        f"exit {result.returncode}; version {version}, primary keys {keys}, views "
        f"{len(views)} -> {len(again)}; {result.tail()}",
    )


def _views(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    return [row[0] for row in rows]


def _newer(db: Path) -> None:
    with duckdb.connect(str(db)) as con:
        con.execute(
            "UPDATE jobsync_meta SET value = ? WHERE key = 'schema_version'",
            [str(SCHEMA_VERSION + 1)],
        )


def _truncated(db: Path) -> None:
    with db.open("r+b") as file:
        file.truncate(db.stat().st_size // 2)


def _corrupt(db: Path) -> None:
    size = db.stat().st_size
    with db.open("r+b") as file:
        for offset in range(size // 3, size, size // 3 or 1):
            file.seek(offset)
            file.write(b"\xde\xad\xbe\xef" * 1024)


def _foreign(db: Path) -> None:
    db.unlink()
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE invoices AS SELECT 1 AS id")


_SPOILERS: dict[str, Callable[[Path], None]] = {
    f"a newer schema ({SCHEMA_VERSION + 1})": _newer,
    "a truncated file": _truncated,
    "a corrupt file": _corrupt,
    "a file that is not a database": lambda db: db.write_bytes(b"not a database\n" * 512),
    "an empty file": lambda db: db.write_bytes(b""),
    "another program's database": _foreign,
}


def _refused_untouched(
    report: AttackReport,
    cli: Cli,
    url: str,
    folder: Path,
    good: Path,
    name: str,
    spoil: Callable[[Path], None],
) -> None:
    db = folder / f"spoiled-{len(report.cases)}.duckdb"
    shutil.copy(good, db)
    spoil(db)
    before = _digest(db)
    result = cli.run(*sync_args(url, db))
    unchanged = _digest(db) == before
    wal = Path(f"{db}.wal")
    ok = result.clear_failure and unchanged and not wal.exists()
    report.case(
        f"{name}: clear error, file unchanged",
        ok,
        f"exit {result.returncode}, unchanged {unchanged}; {result.tail()}",
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- 5. secrets and trust ----------------------------------------------------------------------


def secrets(ctx: Context) -> AttackReport:
    """The token in no output, log, error, run log or file, on success, under faults, on a
    401 and with -v; plain http only to loopback; TLS certificates verified; odd flow ids
    cannot change the request beyond their own parameter."""
    report = AttackReport("5. secrets and trust")
    folder = ctx.folder("secrets")
    config = chaos_account(ctx.seed + 4)
    _token_nowhere(ctx, report, folder, config)
    _plain_http(ctx, report, folder, config)
    _tls_verified(ctx, report, folder)
    _odd_flow_ids(ctx, report, folder, config)
    return report


def _token_nowhere(ctx: Context, report: AttackReport, folder: Path, config: AccountConfig) -> None:
    wrong = f"wrong-{ctx.token}"
    plan = FaultPlan(bad_body=0.1, bad_records=0.1, huge_bytes=LARGE_BYTES)
    options = _options(ctx, fault_rate=0.1, faults=plan)
    cli = ctx.cli(folder, options, JOBSYNC_TIMEOUT=CLIENT_TIMEOUT, JOBSYNC_MAX_ATTEMPTS="12")
    db, archive = folder / "secrets.duckdb", folder / "archive"
    with SimulatorProcess(config, options) as sim:
        runs = {
            "-v under faults, with --parquet": cli.run(
                *sync_args(sim.url, db, "-v", "--parquet", str(archive))
            ),
            "-v --json": cli.run(*sync_args(sim.url, db, "-v", "--json")),
            "a 401 with -v": cli.run(*sync_args(sim.url, db, "-v"), token=wrong),
            "a 401 with --json": cli.run(*sync_args(sim.url, db, "--json"), token=wrong),
        }
    for name, result in runs.items():
        unauthorized = name.startswith("a 401")
        expected = 3 if unauthorized else 0
        leaked = [t for t in (ctx.token, wrong) if t in result.stdout + result.stderr]
        report.case(
            f"token not in stdout or stderr: {name}",
            result.returncode == expected and not leaked,
            f"exit {result.returncode} (expected {expected}); leaked {len(leaked)}",
        )
    with duckdb.connect(str(db), read_only=True) as con:
        logged = con.execute("SELECT * FROM sync_runs").fetchall()
        unauthorized_runs = sum(1 for row in logged if "token" in str(row).lower())
    in_log = [row for row in logged if ctx.token in str(row) or wrong in str(row)]
    report.case(
        "token not in sync_runs (401 runs logged with their error)",
        not in_log and unauthorized_runs >= 1,
        f"{len(logged)} runs logged, {unauthorized_runs} mention the token, none hold it",
    )
    files = [path for path in folder.rglob("*") if path.is_file()]
    holding = [
        path.name
        for path in files
        if ctx.token.encode() in path.read_bytes() or wrong.encode() in path.read_bytes()
    ]
    parquet = [path for path in files if path.suffix == ".parquet"]
    report.case(
        "token in no file written (warehouse, its WAL, Parquet, manifest)",
        not holding and bool(parquet),
        f"{len(files)} files scanned ({len(parquet)} Parquet); holding the token: {holding}",
    )


def _plain_http(ctx: Context, report: AttackReport, folder: Path, config: AccountConfig) -> None:
    """The simulator on this machine's own network address: reachable, but not loopback."""
    address = _own_address()
    options = _options(ctx)
    cli = ctx.cli(folder, options)
    db = folder / "plain.duckdb"
    with SimulatorProcess(config, options, host="0.0.0.0") as sim:
        port = urlsplit(sim.url).port
        remote = f"http://{address}:{port}/v1"
        refused = cli.run("sync", "--api-url", remote, "--db", str(db))
        served = sim.request_count()
        report.case(
            f"plain http to {address} (not loopback): refused, nothing sent",
            refused.returncode == 2 and "--insecure" in refused.stderr and served == 0,
            f"exit {refused.returncode}, {served} requests reached the API; {refused.tail()}",
        )
        allowed = cli.run(*sync_args(remote, db, "--insecure", "--json"))
        report.case(
            "the same with --insecure: synced",
            allowed.returncode == 0 and sim.request_count() > 0,
            f"exit {allowed.returncode}; {allowed.tail()}",
        )
    for url in ("http://localhost.example.com/v1", "http://127.0.0.1.nip.io/v1"):
        result = cli.run("sync", "--api-url", url, "--db", str(db))
        report.case(
            f"plain http to {urlsplit(url).hostname}: refused",
            result.returncode == 2 and "--insecure" in result.stderr,
            result.tail(),
        )


def _own_address() -> str:
    """This machine's address on its default route (no packet is sent), else one that
    routes nowhere: either way not loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            address = probe.getsockname()[0]
        except OSError:
            return "10.255.255.1"
    return "10.255.255.1" if address.startswith("127.") else address


def _tls_verified(ctx: Context, report: AttackReport, folder: Path) -> None:
    """An https server on loopback with a self-signed certificate: the sync must refuse to
    talk to it (and so never send it the token), at once: no retry can make it trusted."""
    cli = Cli(ctx.token, folder)
    with _self_signed_server(folder) as (port, seen):
        url = f"https://127.0.0.1:{port}/v1"
        result = cli.run("sync", "-v", "--api-url", url, "--db", str(folder / "tls.duckdb"))
    # -v logs each retry (and shows the error's traceback, so not `clear_failure`)
    refused = "jobsync: error: 127.0.0.1: its TLS certificate is not trusted" in result.stderr
    ok = result.returncode == 1 and refused and "; retry " not in result.stderr and not seen
    report.case(
        "https with a self-signed certificate: refused at once, token never sent",
        ok,
        f"exit {result.returncode}, {len(seen)} requests reached the server; {result.tail()}",
    )


@contextmanager
def _self_signed_server(folder: Path) -> Iterator[tuple[int, list[str]]]:
    """An HTTPS server on a free loopback port with a fresh self-signed certificate; yields
    the port and the list of request lines it receives."""
    cert, key = self_signed_certificate(folder)
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.requestline)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"[]")

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A fresh self-signed certificate for 127.0.0.1 and its key, as PEM files in `folder`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(tz=UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "self-signed.pem", folder / "self-signed.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# Flow ids that would change a request if they were not encoded: a new parameter, a
# fragment, escapes, a path and a query, spaces and a plus, other scripts, control characters.
ODD_FLOW_IDS = (
    "a&status=failed",
    "x=y",
    "a#b",
    "50%25%",
    "../flows?x=1",
    "a b+c",
    "ünïcødé-流れ",
    "tab\there",
    "line\nbreak",
)
# A comma cannot be told apart from the separator of a flow list: such ids are refused.
LIST_BREAKING_IDS = ("a,b",)
# The parameters the crawler sends (either dialect); list items may be indexed (`name[0]`).
_FLOW_PARAMETERS = frozenset({"flow_id", "flow_id_in", "_flowId", "_flowId_in"})
_OTHER_PARAMETERS = frozenset(
    {
        "createdAt_gte",
        "createdAt_lte",
        "type",
        "type_in",
        "status",
        "numSuccess_gte",
        "numSuccess_lte",
        "flow_job_id",
        "_flowJobId",
    }
)


def _odd_flow_ids(ctx: Context, report: AttackReport, folder: Path, config: AccountConfig) -> None:
    """Each odd id alone (`flow_id`), all together (the list parameter), and from a flows
    file: the API must receive exactly the ids given, each in the flow parameter only."""
    options = _options(ctx)
    cli = ctx.cli(folder, options)
    in_file = [f for f in ODD_FLOW_IDS if "#" not in f and "\n" not in f]  # a file's syntax
    flows_file = folder / "odd-flows.txt"
    flows_file.write_text("".join(f"{flow}\n" for flow in in_file), encoding="utf-8")
    runs = [(f"flow id {flow!r}", ["--flow", flow], [flow]) for flow in ODD_FLOW_IDS]
    runs.append(
        ("all odd flow ids at once", [a for f in ODD_FLOW_IDS for a in ("--flow", f)], ODD_FLOW_IDS)
    )
    runs.append(("a flows file of odd ids", ["--flows-file", str(flows_file)], in_file))
    since = ["--since", _iso(config.start_ms - DAY_MS)]  # one day: a few listings a run
    with SimulatorProcess(config, options, record_requests=True) as sim:
        for name, args, wanted in runs:
            before = len(sim.requests())
            db = folder / f"odd-{len(report.cases)}.duckdb"
            result = cli.run(*sync_args(sim.url, db, *since, *args))
            named = _flows_named(sim.requests()[before:])
            ok = result.returncode == 0 and bool(named)
            ok = ok and all(sorted(flows) == sorted(wanted) for flows in named)
            report.case(
                f"{name}: sent whole, in its own parameter",
                ok,
                f"exit {result.returncode}; {len(named)} listings named {set(named)}",
            )
    for flow in LIST_BREAKING_IDS:
        result = cli.run(*sync_args("http://127.0.0.1:9/v1", folder / "x.duckdb", "--flow", flow))
        report.case(
            f"flow id {flow!r}: refused (a comma separates list items)",
            result.returncode == 2 and "flow id" in result.stderr,
            result.tail(),
        )


def _flows_named(requests: list[tuple[str, str]]) -> list[tuple[str, ...]]:
    """The flow ids each `GET /jobs` listing named, read from its raw query string. A listing
    with a parameter the crawler never sends names ("injected: <name>",)."""
    named: list[tuple[str, ...]] = []
    for method, target in requests:
        path, _, query = target.partition("?")
        if method != "GET" or not path.endswith("/jobs"):
            continue
        flows: list[str] = []
        injected = []
        for key, value in parse_qsl(query, keep_blank_values=True):
            name = key.split("[", 1)[0]
            if name in _FLOW_PARAMETERS:
                flows.extend(
                    value.split(",") if name.endswith("_in") and "[" not in key else [value]
                )
            elif name not in _OTHER_PARAMETERS:
                injected.append(f"injected: {key}")
        named.append(tuple(injected) or tuple(flows))
    return named
