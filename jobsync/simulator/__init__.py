"""A local integrator.io Jobs API with a synthetic, clock-driven account, for tests, the demo
and the benchmark: `with SimulatorServer(Account(AccountConfig()), ServerOptions(token=...))`."""

from __future__ import annotations

from jobsync.simulator.account import Account, CancelRefused, JobNotFound
from jobsync.simulator.clock import Clock, ManualClock, WallClock
from jobsync.simulator.filters import InvalidQuery, JobFilter, parse_filter
from jobsync.simulator.history import AccountConfig
from jobsync.simulator.runner import SimulatorServer, serve
from jobsync.simulator.server import ServerOptions, ServerStats, make_app

__all__ = [
    "Account",
    "AccountConfig",
    "CancelRefused",
    "Clock",
    "InvalidQuery",
    "JobFilter",
    "JobNotFound",
    "ManualClock",
    "ServerOptions",
    "ServerStats",
    "SimulatorServer",
    "WallClock",
    "make_app",
    "parse_filter",
    "serve",
]
