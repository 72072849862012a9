"""The benchmark of issue 5: how close `jobsync sync` comes to the API's rate limit, how many
requests it spends, how much memory it needs, what a rerun costs, how fast it ingests, and how
it compares with the reference's own paging approach, all against the local simulator.

    pip install -e .                   # once, in a fresh clone
    python scripts/bench.py            # defaults: 200 flows (~300k jobs) and 600 (~900k)
    python scripts/bench.py --quick    # one run of each figure, no 3x account
    python scripts/bench.py --json > bench.json

The simulator runs in its own process with the machine's clock as its clock, so the benchmark
can ask an identical in-process account what the API listed at any moment of a run (ground
truth). Each sync is the real CLI in a subprocess; its peak RSS comes from wait4(2), by way of
a small launcher (see `_LAUNCHER`).
Progress notes go to stderr; the table (or, with --json, a JSON document) to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import orjson
import pyarrow as pa

from jobsync.held_pages import PageToStore
from jobsync.job_record import decode_job_page
from jobsync.memory import give_back_freed_memory
from jobsync.records import normalise_page
from jobsync.simulator import Account, AccountConfig, JobFilter, ServerOptions
from jobsync.simulator.process import SimulatorProcess, SimulatorProcessError
from jobsync.store import SYNC_MEMORY_MB, UNFINISHED_STATUSES, Warehouse
from jobsync.sync import SyncOptions
from jobsync.timestamps import now_ms
from jobsync.writer import BatchWriter

PAGE_SIZE = 1001  # the API's page cap, and the simulator's
TOKEN = "bench-token"
DIALECT = "reference"
HOST = "127.0.0.1"
# the simulator's "now" is the machine's clock, so the benchmark knows it exactly
_SIMULATOR: dict[str, Any] = {"host": HOST, "machine_clock": True, "start_timeout": 300}
REPO = Path(__file__).resolve().parent.parent
# A child started straight from the benchmark (vfork, then exec) reports the benchmark's own
# peak RSS as its ru_maxrss, which the kernel carries across exec: under a 1 GB parent,
# `python -c pass` reported 964 MB. So a small process starts the sync and reports its usage.
_LAUNCHER = """
import json, os, sys
report, command = sys.argv[1], sys.argv[2:]
pid = os.posix_spawn(command[0], command, os.environ)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as out:
    json.dump([status, usage.ru_utime + usage.ru_stime, usage.ru_maxrss], out)
"""


class BenchError(Exception):
    """A part of the benchmark could not run (the simulator or a sync failed)."""


# -- one `jobsync sync` subprocess -------------------------------------------------------------


@dataclass
class SyncResult:
    """One run of the CLI: its JSON summary, and what the OS says it cost."""

    summary: dict[str, Any]
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    started_ms: int
    ended_ms: int
    simulator_cpu_s: float = 0.0
    file_mb: float = 0.0  # the warehouse file once the sync has closed it

    @property
    def jobs(self) -> int:
        return int(self.summary["jobs_inserted"])

    @property
    def requests(self) -> int:
        return int(self.summary["requests"])

    @property
    def partitions(self) -> int:
        return int(self.summary["partitions"])


def _sync_environment() -> dict[str, str]:
    """The environment minus any JOBSYNC_* setting of ours, plus the simulator's token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYNC_")}
    env["JOBSYNC_API_TOKEN"] = TOKEN
    return env


def run_sync_cli(
    sim: SimulatorProcess, db: Path, workdir: Path, extra: list[str], timeout: float = 900
) -> SyncResult:
    """Run `python -m jobsync sync --json` to the end and measure it (wall, CPU, peak RSS, and
    the simulator's CPU meanwhile: both share the machine's cores)."""
    command = [sys.executable, "-m", "jobsync", "sync", "--api-url", sim.url, "--db", str(db)]
    command += ["--json", *extra]
    out_path, err_path = workdir / "sync.out", workdir / "sync.err"
    report_path = workdir / "sync.usage"
    report_path.unlink(missing_ok=True)
    launcher = [sys.executable, "-c", _LAUNCHER, str(report_path), *command]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        simulator_cpu = sim.cpu_seconds()
        started_ms = now_ms()
        started = time.perf_counter()
        process = subprocess.Popen(
            launcher,
            stdout=out,
            stderr=err,
            env=_sync_environment(),
            cwd=workdir,
            start_new_session=True,
        )
        try:
            _wait(process, started + timeout)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # the launcher and the sync
            process.wait()
            raise
        wall = time.perf_counter() - started
        ended_ms = now_ms()
        simulator_cpu = sim.cpu_seconds() - simulator_cpu
    stdout = out_path.read_text(errors="replace").strip()
    stderr = err_path.read_text(errors="replace").strip()
    try:
        status, cpu_s, max_rss_kb = json.loads(report_path.read_text())
    except (OSError, ValueError):
        raise BenchError(f"the launcher of `jobsync sync` failed: {stderr[-500:]}") from None
    returncode = os.waitstatus_to_exitcode(status)
    if returncode != 0 or not stdout:
        tail = "\n".join(stderr.splitlines()[-5:])
        raise BenchError(f"`jobsync sync` exited {returncode}: {tail or stdout}")
    summary = json.loads(stdout.splitlines()[-1])
    return SyncResult(
        summary=summary,
        wall_s=wall,
        cpu_s=cpu_s,
        max_rss_mb=max_rss_kb / 1024,  # kilobytes on Linux
        started_ms=started_ms,
        ended_ms=ended_ms,
        simulator_cpu_s=simulator_cpu,
        file_mb=db.stat().st_size / 2**20,
    )


def _wait(process: subprocess.Popen[bytes], deadline: float) -> None:
    """Until the launcher exits, or BenchError at the deadline."""
    while process.poll() is None:
        if time.perf_counter() > deadline:
            raise BenchError(f"`jobsync sync` (pid {process.pid}) did not finish in time")
        time.sleep(0.005)


def stored_ids(db: Path) -> set[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {row[0] for row in con.execute("SELECT id FROM jobs").fetchall()}


def unfinished_jobs(db: Path) -> int:
    """Jobs stored as queued or running: the ones a rerun may fetch one by one."""
    placeholders = ", ".join("?" for _ in UNFINISHED_STATUSES)
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute(
            f"SELECT count(*) FROM jobs WHERE status IN ({placeholders})",
            list(UNFINISHED_STATUSES),
        ).fetchone()
    return int(row[0]) if row else 0


def listed_throughout(account: Account, start_ms: int, end_ms: int) -> set[str]:
    """Ids the API listed during all of [start, end]: a run over that span must store each."""
    ids = set(account.listed_jobs(start_ms))
    ids.intersection_update(account.listed_jobs(end_ms))
    return ids


# -- the reference's approach, as a baseline ---------------------------------------------------


def _iso(ms: int) -> str:
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _epoch_ms(text: str) -> int:
    return round(datetime.fromisoformat(text).timestamp() * 1000)


@dataclass
class ReferenceResult:
    jobs: list[dict[str, Any]]
    requests: int
    throttled: int
    wall_s: float
    started_ms: int
    ended_ms: int


class ReferenceCrawl:
    """What the reference's example does: one flow after another, newest first, the next page
    asked with `createdAt_lte` = the page's last createdAt minus 1 ms, until a short page."""

    def __init__(self, base_url: str, token: str, page_size: int = PAGE_SIZE) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.page_size = page_size
        self.requests = 0
        self.throttled = 0

    async def run(self, top_ms: int) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        async with aiohttp.ClientSession(headers=self.headers) as session:
            flows = await self._get(session, "/flows", {})
            for flow in flows:
                lte = top_ms
                while True:
                    params = {"flow_id": flow["_id"], "createdAt_lte": _iso(lte)}
                    page = await self._get(session, "/jobs", params)
                    jobs.extend(page)
                    if len(page) < self.page_size:
                        break
                    lte = _epoch_ms(page[-1]["createdAt"]) - 1
        return jobs

    async def _get(
        self, session: aiohttp.ClientSession, path: str, params: dict[str, str]
    ) -> list[dict[str, Any]]:
        while True:
            self.requests += 1
            async with session.get(self.base_url + path, params=params) as response:
                if response.status == 429:
                    self.throttled += 1
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                response.raise_for_status()
                return orjson.loads(await response.read())


def store_reference(jobs: list[dict[str, Any]], db: Path) -> None:
    """The reference's single insert at the end: every job collected, as one Arrow table."""
    table = pa.table(
        {
            "id": [job.get("_id") for job in jobs],
            "flow_id": [job.get("_flowId") for job in jobs],
            "type": [job.get("type") for job in jobs],
            "status": [job.get("status") for job in jobs],
            "created_at": [job.get("createdAt") for job in jobs],
            "raw": [orjson.dumps(job).decode() for job in jobs],
        }
    )
    with duckdb.connect(str(db)) as con:
        con.register("incoming", table)
        con.execute(
            "CREATE TABLE jobs AS SELECT id, flow_id, type, status, "
            "CAST(created_at AS TIMESTAMPTZ) AS created_at, CAST(raw AS JSON) AS raw "
            "FROM incoming"
        )


def run_reference(url: str, db: Path) -> ReferenceResult:
    crawl = ReferenceCrawl(url, TOKEN)
    started_ms = now_ms()
    started = time.perf_counter()
    jobs = asyncio.run(crawl.run(started_ms))
    store_reference(jobs, db)
    wall = time.perf_counter() - started
    return ReferenceResult(jobs, crawl.requests, crawl.throttled, wall, started_ms, now_ms())


# -- ingest without a network ------------------------------------------------------------------


@dataclass
class IngestResult:
    """Jobs and seconds of one ingest; `decode_s` and `normalise_s` are the loop's time in
    each, `waiting_s` its time waiting for the writer's thread (which commits meanwhile)
    and for the close."""

    jobs: int
    seconds: float
    decode_s: float
    normalise_s: float
    waiting_s: float

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds

    def detail(self) -> dict[str, Any]:
        """As the JSON's details list it."""
        return asdict(self) | {"jobs_per_s": round(self.jobs_per_s)}


def make_pages(account: Account, at_ms: int, count: int) -> list[bytes]:
    """Up to `count` full listing pages as the API sends them (JSON bytes), newest first."""
    pages: list[bytes] = []
    lte: int | None = None
    while len(pages) < count:
        page = account.list_jobs(JobFilter(created_lte=lte), at_ms, PAGE_SIZE)
        if not page:
            break
        pages.append(orjson.dumps(page))
        lte = _epoch_ms(page[-1]["createdAt"]) - 1  # no job twice: throughput, not completeness
    return pages


def ingest(
    pages: list[bytes], db: Path, options: SyncOptions, memory_mb: int | None
) -> IngestResult:
    """What a sync does with the pages it fetches, minus the network: decode and normalise
    them on the event loop and hand them to the sync's own writer, which commits batches on
    its thread meanwhile, on the sync's DuckDB threads, capped at `memory_mb` (None: DuckDB's
    default). Ends when the warehouse is closed, every job checkpointed into the file: where
    DuckDB's checkpoint (one per 256 MB of log) falls against the last batch must not move
    the figure (with a queue of 24 pages, so batches of 20, the 300 pages' log stopped just
    short of it, and the ingest read 135k jobs/s instead of 88k)."""

    async def feed(writer: BatchWriter) -> tuple[float, float, float]:
        """Every page to the writer; seconds decoding, normalising and waiting for room."""
        decode = normalise = waiting = 0.0
        for page in pages:
            t0 = time.perf_counter()
            records = decode_job_page(page)  # as the client decodes a listing
            if records is None:
                records = orjson.loads(page)
            t1 = time.perf_counter()
            normalised = normalise_page(records)
            t2 = time.perf_counter()
            await writer.put(PageToStore(normalised))
            t3 = time.perf_counter()
            decode, normalise, waiting = decode + t1 - t0, normalise + t2 - t1, waiting + t3 - t2
        return decode, normalise, waiting

    async def run(warehouse: Warehouse) -> IngestResult:
        writer = BatchWriter(
            warehouse, "bench-ingest", now_ms, options.queue_pages, options.commit_rows
        )
        started = time.perf_counter()
        task = asyncio.create_task(writer.run())
        feeding = asyncio.create_task(feed(writer))
        # as the sync does: a writer that fails stops the ingest, which would otherwise wait
        # for room in its queue for ever
        await asyncio.wait({task, feeding}, return_when=asyncio.FIRST_COMPLETED)
        if not feeding.done():
            feeding.cancel()
            try:
                task.result()
            except Exception as exc:
                raise BenchError(f"the ingest's writer failed: {exc}") from exc
        decode, normalise, waiting = feeding.result()
        t3 = time.perf_counter()
        await writer.finish(task)
        seconds = time.perf_counter() - started
        waiting += time.perf_counter() - t3
        return IngestResult(writer.totals.jobs, seconds, decode, normalise, waiting)

    give_back_freed_memory()  # as run_sync does
    with Warehouse.open_for_sync(db, memory_mb=memory_mb) as warehouse:
        fed = asyncio.run(run(warehouse))
        closing = time.perf_counter()
    closed = time.perf_counter() - closing
    return replace(fed, seconds=fed.seconds + closed, waiting_s=fed.waiting_s + closed)


def ingest_runs(
    config: AccountConfig, count: int, workdir: Path, runs: int
) -> tuple[list[IngestResult], list[IngestResult]]:
    """`runs` ingests of `count` pages of the account's newest jobs, each into a new file:
    with DuckDB under the sync's memory cap (as `jobsync sync` opens it), then without it
    (what the cap costs). Not alternated: a capped run right after an uncapped one was
    the slowest of its process (76k jobs/s twice, against 87-97k)."""
    pages = make_pages(Account(config), now_ms(), count)
    results: dict[int | None, list[IngestResult]] = {SYNC_MEMORY_MB: [], None: []}
    for memory_mb, done in results.items():
        for run in range(runs):
            db = workdir / f"ingest-{run}.duckdb"
            done.append(ingest(pages, db, SyncOptions(), memory_mb))
            db.unlink()
    return results[SYNC_MEMORY_MB], results[None]


# -- bookkeeping and output --------------------------------------------------------------------


class Budget:
    """How long each part of the benchmark takes, with notes on stderr as it goes."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.parts: dict[str, float] = {}

    def note(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.started:6.1f} s] {text}", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        self.note(f"{name} ...")
        began = time.perf_counter()
        try:
            yield
        finally:
            self.parts[name] = self.parts.get(name, 0.0) + time.perf_counter() - began

    @property
    def total(self) -> float:
        return time.perf_counter() - self.started


@dataclass
class Figure:
    name: str
    value: float | int | None
    shown: str
    target: str = ""
    met: bool | None = None  # None: information, no target


@dataclass
class Report:
    machine: dict[str, Any]
    settings: dict[str, Any]
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, float] = field(default_factory=dict)

    def add(
        self,
        name: str,
        value: float | int | None,
        shown: str,
        target: str = "",
        met: bool | None = None,
    ) -> None:
        self.figures.append(Figure(name, value, shown, target, met))

    def table(self) -> str:
        rows = [("figure", "value", "target", "met?")]
        for f in self.figures:
            met = "" if f.met is None else ("yes" if f.met else "NO")
            rows.append((f.name, f.shown, f.target, met))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "settings": self.settings,
            "figures": [asdict(f) for f in self.figures],
            "details": self.details,
            "budget_s": {k: round(v, 1) for k, v in self.budget.items()},
        }


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("jobsync", "duckdb", "pyarrow", "aiohttp", "orjson", "msgspec"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "?"
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "commit": commit or "?",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def median(values: list[float]) -> float:
    return statistics.median(values)


# -- the benchmark -----------------------------------------------------------------------------


class Benchmark:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.budget = Budget()
        self.start_ms = now_ms()
        # The targets are set against the reference's paging (1001 jobs a page, children listed
        # with their flows), so both sides speak the reference dialect.
        self.sync_flags: list[str] = ["--dialect", DIALECT]
        if args.sync_rate_limit is not None:
            self.sync_flags += ["--rate-limit", str(args.sync_rate_limit)]
        if args.sync_concurrency is not None:
            self.sync_flags += ["--concurrency", str(args.sync_concurrency)]
        self.server = ServerOptions(
            token=TOKEN,
            dialect=DIALECT,
            page_size=PAGE_SIZE,
            latency_ms=args.latency_ms,
            rate_limit=args.rate_limit,
            seed=args.seed,
        )

    def account_config(self, flows: int) -> AccountConfig:
        return AccountConfig(
            seed=self.args.seed, flows=flows, days=self.args.days, start_ms=self.start_ms
        )

    def run(self) -> Report:
        args = self.args
        report = Report(machine(), self.settings())
        backfills: list[SyncResult] = []
        reruns: list[tuple[SyncResult, int]] = []
        stored: list[set[str]] = []
        small = self.account_config(args.flows)
        sim = SimulatorProcess(small, self.server, **_SIMULATOR)
        try:
            with self.budget.part(f"simulator start ({args.flows} flows)"):
                sim.start()
            for run in range(args.runs):
                db = self.workdir / f"backfill-{run}.duckdb"
                with self.budget.part("backfill"):
                    result = run_sync_cli(sim, db, self.workdir, self.sync_flags)
                backfills.append(result)
                self.budget.note(
                    f"backfill {run + 1}/{args.runs}: {result.wall_s:.1f} s, "
                    f"{result.requests} requests, {result.jobs:,} jobs, "
                    f"{result.max_rss_mb:.0f} MB, {result.cpu_s:.1f} s CPU "
                    f"(simulator {result.simulator_cpu_s:.1f} s)"
                )
                stored.append(stored_ids(db))
                unfinished = unfinished_jobs(db)
                with self.budget.part("rerun"):
                    again = run_sync_cli(sim, db, self.workdir, self.sync_flags)
                reruns.append((again, unfinished))
                self.budget.note(
                    f"rerun {run + 1}/{args.runs}: {again.wall_s:.1f} s, {again.requests} "
                    f"requests, {again.summary['jobs_refreshed']} refreshed "
                    f"of {unfinished} unfinished"
                )
                db.unlink()
            reference: ReferenceResult | None = None
            if not args.no_baseline:
                with self.budget.part("reference baseline"):
                    reference = run_reference(sim.url, self.workdir / "reference.duckdb")
                self.budget.note(
                    f"reference: {reference.wall_s:.1f} s, {reference.requests} requests, "
                    f"{len(reference.jobs):,} jobs"
                )
        finally:
            sim.stop()

        large: list[SyncResult] = []
        if not args.quick:
            big = self.account_config(args.flows_large)
            sim = SimulatorProcess(big, self.server, **_SIMULATOR)
            try:
                with self.budget.part(f"simulator start ({args.flows_large} flows)"):
                    sim.start()
                for run in range(args.large_runs):
                    db = self.workdir / f"large-{run}.duckdb"
                    with self.budget.part("backfill of the 3x account"):
                        result = run_sync_cli(sim, db, self.workdir, self.sync_flags)
                    large.append(result)
                    self.budget.note(
                        f"3x backfill {run + 1}/{args.large_runs}: {result.wall_s:.1f} s, "
                        f"{result.jobs:,} jobs, {result.max_rss_mb:.0f} MB, "
                        f"{result.cpu_s:.1f} s CPU (simulator {result.simulator_cpu_s:.1f} s)"
                    )
                    db.unlink()
            finally:
                sim.stop()

        with self.budget.part("ground truth (in-process account)"):
            account = Account(small)
            # A run bounds its windows by the API's `Date` header (whole seconds), so jobs
            # created in the second before it started may fall after its newest window.
            missed = [
                len(listed_throughout(account, r.started_ms - 1000, r.ended_ms) - ids)
                for r, ids in zip(backfills, stored, strict=True)
            ]
            reference_missed = None
            reference_truth = 0
            if reference is not None:
                truth = listed_throughout(account, reference.started_ms, reference.ended_ms)
                reference_truth = len(truth)
                reference_missed = len(truth - {job["_id"] for job in reference.jobs})
            del stored
        del account
        # in a process of its own, as a sync runs: this one's heap (the reference's jobs, the
        # ground truth) is not a sync's, and it slowed the allocators the ingest measures
        spawn = multiprocessing.get_context("spawn")
        with (
            self.budget.part("ingest (its pages made in its own process)"),
            ProcessPoolExecutor(1, mp_context=spawn) as process,
        ):
            ingests, uncapped = process.submit(
                ingest_runs, small, args.ingest_pages, self.workdir, args.runs
            ).result()
        for run, (result, free) in enumerate(zip(ingests, uncapped, strict=True)):
            self.budget.note(
                f"ingest {run + 1}/{args.runs}: {result.jobs_per_s:,.0f} jobs/s "
                f"({free.jobs_per_s:,.0f} without the memory cap)"
            )

        self.figures(
            report, backfills, reruns, missed, large, reference, reference_missed, ingests, uncapped
        )
        report.details.update(
            backfills=[self.sync_detail(r) for r in backfills],
            reruns=[{**self.sync_detail(r), "unfinished_before": u} for r, u in reruns],
            large_backfills=[self.sync_detail(r) for r in large],
            jobsync_missed=missed,
            ingest=[i.detail() for i in ingests],
            ingest_without_memory_cap=[i.detail() for i in uncapped],
            ingest_commit_rows=SyncOptions().commit_rows,
        )
        if reference is not None:
            report.details["reference"] = {
                "wall_s": round(reference.wall_s, 2),
                "requests": reference.requests,
                "throttled": reference.throttled,
                "jobs": len(reference.jobs),
                "distinct_jobs": len({job["_id"] for job in reference.jobs}),
                "ground_truth_jobs": reference_truth,
                "missed": reference_missed,
            }
        report.machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        report.budget = dict(self.budget.parts, total=self.budget.total)
        return report

    def settings(self) -> dict[str, Any]:
        a = self.args
        return {
            "flows": a.flows,
            "flows_large": None if a.quick else a.flows_large,
            "days": a.days,
            "latency_ms": a.latency_ms,
            "rate_limit": a.rate_limit,
            "runs": a.runs,
            "large_runs": 0 if a.quick else a.large_runs,
            "seed": a.seed,
            "ingest_pages": a.ingest_pages,
            "sync_flags": self.sync_flags,
        }

    @staticmethod
    def sync_detail(result: SyncResult) -> dict[str, Any]:
        return {
            "wall_s": round(result.wall_s, 2),
            "cpu_s": round(result.cpu_s, 2),
            "simulator_cpu_s": round(result.simulator_cpu_s, 2),
            "max_rss_mb": round(result.max_rss_mb, 1),
            "file_mb": round(result.file_mb, 1),
            "summary": result.summary,
        }

    def figures(
        self,
        report: Report,
        backfills: list[SyncResult],
        reruns: list[tuple[SyncResult, int]],
        missed: list[int],
        large: list[SyncResult],
        reference: ReferenceResult | None,
        reference_missed: int | None,
        ingests: list[IngestResult],
        uncapped: list[IngestResult],
    ) -> None:
        rate = self.args.rate_limit
        n = len(backfills)
        of = f" (median of {n})" if n > 1 else ""
        wall = median([r.wall_s for r in backfills])
        jobs = int(median([r.jobs for r in backfills]))
        minimum = math.ceil(jobs / PAGE_SIZE)
        bound = minimum / rate
        ratio = median([r.wall_s / (math.ceil(r.jobs / PAGE_SIZE) / rate) for r in backfills])
        report.add(f"backfill wall time{of}", round(wall, 2), f"{wall:.1f} s ({jobs:,} jobs)")
        report.add("rate-limit bound ceil(jobs/1001)/rate", round(bound, 2), f"{bound:.1f} s")
        report.add("backfill / bound", round(ratio, 3), f"{ratio:.2f}", "<= 1.30", ratio <= 1.3)
        cpu = median([r.cpu_s for r in backfills])
        sim_cpu = median([r.simulator_cpu_s for r in backfills])
        report.add(
            f"backfill CPU: sync process, simulator{of}",
            round(cpu, 2),
            f"{cpu:.1f} s, {sim_cpu:.1f} s ({(cpu + sim_cpu) / wall:.2f} cores busy)",
        )

        requests = int(median([r.requests for r in backfills]))
        partitions = int(median([r.partitions for r in backfills]))
        allowed = 1.05 * minimum + partitions
        report.add(
            f"backfill requests{of}",
            requests,
            f"{requests} (min {minimum}, {partitions} partitions)",
            f"<= 1.05 x {minimum} + {partitions} = {allowed:.0f}",
            requests <= allowed,
        )
        report.add(
            "jobs missed by jobsync (worst run)",
            max(missed),
            f"{max(missed)}",
            "0",
            max(missed) == 0,
        )

        rss = median([r.max_rss_mb for r in backfills])
        report.add(
            f"peak RSS at {jobs / 1000:,.0f}k jobs{of}",
            round(rss, 1),
            f"{rss:.0f} MB",
            "< 300 MB",
            rss < 300,
        )
        size = median([r.file_mb for r in backfills])
        report.add(
            f"warehouse file after the backfill{of}",
            round(size, 1),
            f"{size:.1f} MB ({size * 2**20 / jobs:.0f} bytes a job)",
        )
        if large:
            big = median([r.max_rss_mb for r in large])
            big_jobs = int(median([r.jobs for r in large]))
            growth = big / rss
            of_large = f" (median of {len(large)})" if len(large) > 1 else ""
            report.add(
                f"peak RSS at {big_jobs / 1000:,.0f}k jobs{of_large}",
                round(big, 1),
                f"{big:.0f} MB ({growth:.2f}x)",
                "<= 1.10x the smaller",
                growth <= 1.10,
            )
            big_wall = median([r.wall_s for r in large])
            big_ratio = big_wall / (math.ceil(big_jobs / PAGE_SIZE) / rate)
            report.add(
                f"3x backfill wall time / bound{of_large}",
                round(big_ratio, 3),
                f"{big_wall:.1f} s / {big_ratio:.2f}",
            )
            big_size = median([r.file_mb for r in large])
            report.add(
                f"warehouse file after the 3x backfill{of_large}",
                round(big_size, 1),
                f"{big_size:.1f} MB ({big_size * 2**20 / big_jobs:.0f} bytes a job)",
            )

        rerun_wall = median([r.wall_s for r, _ in reruns])
        rerun_requests = int(median([r.requests for r, _ in reruns]))
        rerun_partitions = int(median([r.partitions for r, _ in reruns]))
        unfinished = int(median([u for _, u in reruns]))
        rerun_allowed = rerun_partitions + unfinished + 1
        report.add(
            f"rerun wall time{of}",
            round(rerun_wall, 2),
            f"{rerun_wall:.1f} s",
            "< 3 s",
            rerun_wall < 3,
        )
        report.add(
            f"rerun requests{of}",
            rerun_requests,
            f"{rerun_requests} ({unfinished} unfinished jobs)",
            f"<= {rerun_partitions} partition(s) + {unfinished} + 1 GET /flows",
            rerun_requests <= rerun_allowed,
        )
        changed = median(
            [r.summary["jobs_inserted"] + r.summary["jobs_updated"] for r, _ in reruns]
        )
        report.add("rerun: jobs new or changed upstream", changed, f"{changed:.0f}")

        throughput = median([i.jobs_per_s for i in ingests])
        report.add(
            f"ingest, no network, DuckDB capped at {SYNC_MEMORY_MB} MB as a sync{of}",
            round(throughput),
            f"{throughput:,.0f} jobs/s ({ingests[0].jobs:,} jobs)",
            ">= 100,000 jobs/s",
            throughput >= 100_000,
        )
        free = median([i.jobs_per_s for i in uncapped])
        report.add(f"ingest without the memory cap{of}", round(free), f"{free:,.0f} jobs/s")
        split = ingests[len(ingests) // 2]
        report.add(
            "ingest time: decode / normalise / waiting for commits and the close",
            None,
            " / ".join(
                f"{100 * part / split.seconds:.0f}%"
                for part in (split.decode_s, split.normalise_s, split.waiting_s)
            ),
        )
        if reference is not None:
            report.add(
                "reference baseline wall time",
                round(reference.wall_s, 2),
                f"{reference.wall_s:.1f} s ({reference.requests} requests)",
            )
            report.add("jobs missed by the reference", reference_missed, f"{reference_missed}")
            speedup = reference.wall_s / wall
            report.add(
                "jobsync speed-up over the reference",
                round(speedup, 2),
                f"{speedup:.1f}x",
                ">= 3x",
                speedup >= 3,
            )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--flows", type=int, default=200, help="flows of the account (default 200, ~300k jobs)"
    )
    parser.add_argument(
        "--flows-large",
        type=int,
        default=600,
        help="flows of the 3x account for the memory figure (default 600)",
    )
    parser.add_argument("--days", type=int, default=35, help="days of history (default 35)")
    parser.add_argument(
        "--latency-ms", type=float, default=100, help="simulator latency per request (default 100)"
    )
    parser.add_argument(
        "--rate-limit", type=float, default=25, help="simulator rate limit, requests/s (default 25)"
    )
    parser.add_argument(
        "--runs", type=int, help="runs per figure, reporting the median (default 3; 1 with --quick)"
    )
    parser.add_argument(
        "--large-runs",
        type=int,
        default=3,
        help="backfills of the 3x account, reporting the median (default 3)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one run of each figure and no 3x account"
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the reference's approach")
    parser.add_argument(
        "--ingest-pages",
        type=int,
        default=300,
        help="pages of 1001 jobs for the ingest figure (default 300)",
    )
    parser.add_argument(
        "--sync-rate-limit",
        type=float,
        help="pass --rate-limit to `jobsync sync` (default: its own)",
    )
    parser.add_argument(
        "--sync-concurrency",
        type=int,
        help="pass --concurrency to `jobsync sync` (default: its own)",
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="seed of the synthetic account (default 1)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="folder for the DuckDB files (default: a temporary one, removed)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON document instead of the table"
    )
    args = parser.parse_args(argv)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if (
        min(args.runs, args.large_runs, args.flows, args.flows_large, args.days, args.ingest_pages)
        < 1
    ):
        parser.error(
            "--runs, --large-runs, --flows, --flows-large, --days and --ingest-pages must be >= 1"
        )
    return args


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM cleans up like Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    own_workdir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="jobsync-bench-")) if own_workdir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        report = Benchmark(args, workdir).run()
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except (BenchError, SimulatorProcessError) as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(render(report))
    return 0


def render(report: Report) -> str:
    m, s = report.machine, report.settings
    v = m["versions"]
    lines = [
        f"jobsync benchmark (issue 5): {s['flows']} flows x {s['days']} days, latency "
        f"{s['latency_ms']:g} ms, rate limit {s['rate_limit']:g} req/s, "
        f"{s['runs']} run(s) per figure"
        + (f", sync flags {' '.join(s['sync_flags'])}" if s["sync_flags"] else ""),
        f"machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable), "
        f"Python {m['python']}, duckdb {v['duckdb']}, pyarrow {v['pyarrow']}, "
        f"aiohttp {v['aiohttp']}, orjson {v['orjson']}, msgspec {v['msgspec']}, "
        f"jobsync {v['jobsync']} @ {m['commit']}",
        f"load average: {m['load_average_at_start']} at start, {m['load_average_at_end']} at end",
        "",
        report.table(),
        "",
        "time spent: " + ", ".join(f"{k} {v:.0f} s" for k, v in report.budget.items()),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
