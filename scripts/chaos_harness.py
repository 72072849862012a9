"""What every chaos attack (scripts/chaos.py) stands on: `jobsync sync` run as a real process,
the warehouse it leaves compared with the simulated account's ground truth, and the record
of each case tried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import orjson

from jobsync.simulator import Account, AccountConfig
from jobsync.simulator.process import SimulatorProcess

# The simulator's page size in every attack: small pages, so that a short backfill still
# spans a hundred requests and kills land between commits.
PAGE_SIZE = 100


def chaos_account(seed: int) -> AccountConfig:
    """A small account: about 7k listed jobs, a few dozen of them running for hours or days
    (each run refreshes those one by one)."""
    return AccountConfig(seed=seed, flows=4, days=35, long_running_share=0.3)


@dataclass
class Verdict:
    """The warehouse against the API's ground truth at one moment."""

    what: str
    listed: int = 0
    stored: int = 0
    lost: int = 0  # listed by the API, not in the warehouse
    duplicates: int = 0  # rows beyond one per id
    stale: int = 0  # in the warehouse with another state than the API shows now
    phantoms: int = 0  # in the warehouse, never shown by the API (nor planted on purpose)
    examples: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicates or self.stale or self.phantoms)

    def line(self) -> str:
        text = (
            f"{self.what}: {self.stored} stored of {self.listed} listed; lost {self.lost}, "
            f"duplicates {self.duplicates}, stale {self.stale}, phantoms {self.phantoms}"
        )
        return text + (f" (e.g. {', '.join(self.examples[:3])})" if self.examples else "")


def stored_rows(db: Path) -> list[tuple[str, str]]:
    """(id, raw) of every row of `jobs`; none when no warehouse was created."""
    if not db.exists():
        return []
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT id, raw::VARCHAR FROM jobs").fetchall()


@dataclass(frozen=True)
class Truth:
    """The simulated account behind an attack's API, as `dialect` shows its jobs: what the
    warehouse is compared with."""

    account: Account
    dialect: str

    def check(
        self,
        db: Path,
        now_ms: int,
        what: str,
        *,
        planted: Iterable[str] = (),
        complete: bool = True,
        current: bool | None = None,
    ) -> Verdict:
        """Compare the warehouse with what the API lists at `now_ms`. `complete`: every
        listed job must be there; `current` (default: as `complete`): every stored job that
        the API lists must hold the state it shows now. Duplicates and phantoms count always;
        ids in `planted` are records the attack itself put in pages."""
        current = complete if current is None else current
        truth = self.account.listed_jobs(now_ms, self.dialect)
        rows = stored_rows(db)
        verdict = Verdict(what, listed=len(truth), stored=len(rows))
        ids = [job_id for job_id, _ in rows]
        verdict.duplicates = len(ids) - len(set(ids))
        allowed = set(planted)
        for job_id, raw in rows:
            if job_id in truth:
                if current and orjson.loads(raw) != truth[job_id]:
                    verdict.stale += 1
                    verdict.examples.append(f"stale {job_id}")
            elif job_id not in allowed and not self._was_real(job_id, now_ms):
                verdict.phantoms += 1
                verdict.examples.append(f"phantom {job_id[:40]!r}")
        if complete:
            missing = sorted(set(truth) - set(ids))
            verdict.lost = len(missing)
            verdict.examples.extend(f"lost {job_id}" for job_id in missing[:3])
        return verdict

    def _was_real(self, job_id: str, now_ms: int) -> bool:
        """A job of the account created by `now_ms` (listed once, purged since)."""
        row = self.account.history.row_of(job_id)
        return row is not None and self.account.history.created[row] <= now_ms


def count_jobs(db: Path) -> int:
    """Rows of `jobs`, or 0 before the warehouse has the table."""
    if not db.exists():
        return 0
    with duckdb.connect(str(db), read_only=True) as con:
        exists = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'jobs'"
        ).fetchone()
        if not exists or not exists[0]:
            return 0
        row = con.execute("SELECT count(*) FROM jobs").fetchone()
    return int(row[0]) if row else 0


def last_run(db: Path) -> tuple[str, str | None]:
    """(outcome, error) of the latest row of `sync_runs`."""
    with duckdb.connect(str(db), read_only=True) as con:
        row = con.execute(
            "SELECT outcome, error FROM sync_runs ORDER BY started_at DESC LIMIT 1"
        ).fetchone()
    if row is None:
        raise AssertionError("no run logged")
    return row[0], row[1]


# -- `jobsync sync` as a process ---------------------------------------------------------------


@dataclass
class CliResult:
    """One finished `jobsync` process."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def summary(self) -> dict[str, Any] | None:
        """The `--json` summary, when the run printed one."""
        lines = self.stdout.strip().splitlines()
        try:
            value = orjson.loads(lines[-1]) if lines else None
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None

    @property
    def clear_failure(self) -> bool:
        """Failed with one `jobsync: error:` line of explanation and no traceback."""
        return (
            self.returncode not in (0, -signal.SIGKILL)
            and "jobsync: error:" in self.stderr
            and "Traceback" not in self.stderr
        )

    def tail(self) -> str:
        """The run's error lines, else the end of what it printed: for a case's detail."""
        lines = (self.stderr or self.stdout).strip().splitlines()
        errors = [line for line in lines if line.startswith("jobsync: error:")]
        return " | ".join(errors[:2] or lines[-3:])[:400]


class Cli:
    """Runs `python -m jobsync` with a clean environment: no JOBSYNC_* of the caller's, the
    token in JOBSYNC_API_TOKEN, and `env` on top (timeouts, retry budget, dialect)."""

    def __init__(self, token: str, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.token = token
        self.workdir = workdir
        self.env = dict(env or {})

    def environment(self, token: str | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYNC_")}
        env["JOBSYNC_API_TOKEN"] = token or self.token
        return {**env, **self.env, **extra}

    def start(
        self,
        *args: str,
        token: str | None = None,
        env: dict[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "jobsync", *args],
            env=self.environment(token, **(env or {})),
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec,
        )

    def run(
        self,
        *args: str,
        token: str | None = None,
        env: dict[str, str] | None = None,
        preexec: Callable[[], None] | None = None,
        timeout: float = 300,
    ) -> CliResult:
        started = time.monotonic()
        process = self.start(*args, token=token, env=env, preexec=preexec)
        return finish(process, started, timeout)


def finish(process: subprocess.Popen[str], started: float, timeout: float = 300) -> CliResult:
    """Wait for `process` (killing it past `timeout`) and collect what it printed."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        err += f"\n[chaos: killed after {timeout:g} s without finishing]"
    return CliResult(
        [str(arg) for arg in process.args],  # type: ignore[union-attr]
        process.returncode,
        out,
        err,
        time.monotonic() - started,
    )


def sync_args(url: str, db: Path, *extra: str) -> list[str]:
    """`sync` against the simulator at `url` into `db`, with the chaos page size."""
    return ["sync", "--api-url", url, "--db", str(db), "--page-size", str(PAGE_SIZE), *extra]


def kill_sync_when(
    process: subprocess.Popen[str],
    sim: SimulatorProcess,
    *,
    after_requests: int | None = None,
    after_seconds: float | None = None,
    timeout: float = 300,
) -> CliResult | None:
    """SIGKILL `process` once the simulator has served `after_requests` more requests or
    `after_seconds` have passed; None when the run ended on its own first (then it is waited
    for, and its result is lost: the caller reruns)."""
    started = time.monotonic()
    first = sim.request_count()
    while process.poll() is None:
        elapsed = time.monotonic() - started
        due = after_seconds is not None and elapsed >= after_seconds
        due = due or (after_requests is not None and sim.request_count() - first >= after_requests)
        if due:
            process.send_signal(signal.SIGKILL)
            return finish(process, started)
        if elapsed > timeout:
            break
        time.sleep(0.005)
    finish(process, started, timeout)
    return None


# -- cases and attacks -------------------------------------------------------------------------


@dataclass
class Case:
    """One thing tried, and whether jobsync survived it."""

    name: str
    survived: bool
    detail: str = ""


@dataclass
class AttackReport:
    """The cases of one attack family, the warehouse checks behind them, and notes."""

    attack: str
    cases: list[Case] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def case(self, name: str, survived: bool, detail: str = "") -> bool:
        self.cases.append(Case(name, survived, detail))
        return survived

    def verdict(self, verdict: Verdict) -> bool:
        """Record a warehouse check; True when it is clean."""
        self.verdicts.append(verdict)
        return verdict.clean

    @property
    def survived(self) -> int:
        return sum(case.survived for case in self.cases)

    @property
    def lost(self) -> int:
        return sum(v.lost for v in self.verdicts)

    @property
    def duplicates(self) -> int:
        return sum(v.duplicates for v in self.verdicts)

    @property
    def stale(self) -> int:
        return sum(v.stale + v.phantoms for v in self.verdicts)

    def failures(self) -> list[str]:
        failed = [f"{case.name}: {case.detail}" for case in self.cases if not case.survived]
        return failed + [v.line() for v in self.verdicts if not v.clean]

    def as_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "cases": len(self.cases),
            "survived": self.survived,
            "jobs_lost": self.lost,
            "duplicates": self.duplicates,
            "stale": self.stale,
            "notes": self.notes,
            "seconds": round(self.seconds, 1),
            "failures": self.failures(),
            "checks": [v.line() for v in self.verdicts],
        }
