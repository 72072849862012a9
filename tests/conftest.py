"""Shared fixtures: a small synthetic account and the simulated Jobs API on a loopback port.

`make_simulator(**knobs)` builds one with any AccountConfig or ServerOptions field as a
keyword (`seed` goes to both), or an existing `account=` and a `clock=`; it is stopped when
the test ends. `simulator` is the default one, with a ManualClock at the account's start.

Every test that uses the `dialect` fixture (and so every simulator fixture) runs once per
dialect: the simulator speaks it and the clients built here speak it too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from jobsync.api import ClientSettings, JobsClient
from jobsync.dialect import DIALECT_NAMES
from jobsync.secret import ApiToken
from jobsync.simulator import Account, AccountConfig, ServerOptions, SimulatorServer
from jobsync.store import Warehouse
from jobsync.sync import SyncOptions, SyncSummary, run_sync

SIM_TOKEN = "test-token"
SMALL_ACCOUNT = {"flows": 6, "days": 35}

_ACCOUNT_KNOBS = {f.name for f in fields(AccountConfig)}
_SERVER_KNOBS = {f.name for f in fields(ServerOptions)}


@pytest.fixture(params=DIALECT_NAMES)
def dialect(request: pytest.FixtureRequest) -> str:
    """The API dialect the test's simulator and clients speak: each test runs with each."""
    return str(request.param)


@pytest.fixture
def sim_account() -> Account:
    """6 flows with 35 days of history; a fresh one per test, since cancels change it."""
    return Account(AccountConfig(**SMALL_ACCOUNT))


@pytest.fixture
def make_simulator(dialect: str) -> Iterator[Callable[..., SimulatorServer]]:
    """A factory of started simulators, e.g. `make_simulator(flows=20, rate_limit=2)`."""
    servers: list[SimulatorServer] = []

    def make(**knobs: Any) -> SimulatorServer:
        account = knobs.pop("account", None)
        clock = knobs.pop("clock", None)
        unknown = knobs.keys() - _ACCOUNT_KNOBS - _SERVER_KNOBS
        if unknown:
            raise TypeError(f"unknown simulator knobs: {sorted(unknown)}")
        if account is None:
            account_knobs = {k: v for k, v in knobs.items() if k in _ACCOUNT_KNOBS}
            account = Account(AccountConfig(**{**SMALL_ACCOUNT, **account_knobs}))
        server_knobs = {k: v for k, v in knobs.items() if k in _SERVER_KNOBS}
        options = ServerOptions(**{"token": SIM_TOKEN, "dialect": dialect, **server_knobs})
        server = SimulatorServer(account, options, clock=clock).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def simulator(
    make_simulator: Callable[..., SimulatorServer], sim_account: Account
) -> SimulatorServer:
    """The simulated API over `sim_account`, token "test-token", clock at the account's start."""
    return make_simulator(account=sim_account)


def sync_into(
    sim: SimulatorServer, db: Path, token: str | None = None, **options: Any
) -> SyncSummary:
    """One real sync of the simulator into the DuckDB file `db`, in this process; `options`
    are SyncOptions fields (the page size follows the simulator's unless given) or the
    client's `concurrency` and `max_concurrency`, and the client speaks the simulator's dialect."""
    options.setdefault("page_size", sim.options.page_cap)
    in_flight = {k: options.pop(k) for k in ("concurrency", "max_concurrency") if k in options}
    settings = ClientSettings(
        base_url=sim.url,
        token=ApiToken(token or sim.options.token),
        dialect=sim.options.dialect,
        rate_limit=500,
        max_retry_time=60,
        **in_flight,
    )

    async def go() -> SyncSummary:
        async with JobsClient(settings) as client:
            with Warehouse.open(db) as warehouse:
                return await run_sync(client, warehouse, SyncOptions(**options))

    return asyncio.run(go())


class FakeClock:
    """Time that passes only when something sleeps, so backoff and pacing cost no real time."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def listed_jobs(sim: SimulatorServer) -> dict[str, dict[str, Any]]:
    """Ground truth: every job the simulator lists now, as its dialect shows it."""
    return sim.account.listed_jobs(sim.clock.now_ms(), sim.options.dialect)
