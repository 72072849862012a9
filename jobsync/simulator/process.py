"""The simulated API in a process of its own, for harnesses that run `jobsync` as real
processes (scripts/chaos.py): the server does not share a GIL or a core with the code it
serves, and it outlives any sync that is killed. The parent moves its clock and reads its
statistics over a pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ctypes
import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from jobsync.simulator.account import Account, AccountConfig
from jobsync.simulator.clock import Clock, MachineClock, ManualClock
from jobsync.simulator.runner import api_url, start_site
from jobsync.simulator.server import ServerOptions, ServerStats, make_app

_PR_SET_PDEATHSIG = 1


class SimulatorProcessError(Exception):
    """The simulator process did not start or stopped answering its pipe."""


class SimulatorProcess:
    """`with SimulatorProcess(config, options) as sim:` the API at `sim.url`, its clock at
    `now_ms` (default: the account's start) until `sim.set_clock(ms)` moves it; with
    `machine_clock`, the machine's clock instead (scripts/bench.py).

    With `record_requests`, `sim.requests()` returns the method and target (path and raw query)
    of every request served, to check what a client really sent.
    """

    def __init__(
        self,
        config: AccountConfig,
        options: ServerOptions,
        *,
        now_ms: int | None = None,
        host: str = "127.0.0.1",
        record_requests: bool = False,
        machine_clock: bool = False,
        start_timeout: float = 120,
    ) -> None:
        self.config = config
        self.options = options
        self.host = host
        self.url = ""
        self.start_timeout = start_timeout
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        start = None if machine_clock else config.start_ms if now_ms is None else now_ms
        self._process = context.Process(
            target=_serve,
            args=(config, options, start, host, record_requests, child),
            name="jobsync-simulator",
            daemon=True,
        )
        self._child = child
        self._lock = threading.Lock()

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> SimulatorProcess:
        self._process.start()
        self._child.close()
        try:
            if not self._pipe.poll(self.start_timeout):
                raise SimulatorProcessError("the simulator did not start in time")
            port = self._pipe.recv()
        except (EOFError, OSError, SimulatorProcessError) as exc:
            self.stop()
            raise SimulatorProcessError(f"the simulator did not start: {exc}") from None
        self.url = api_url(self.host, port)
        return self

    def set_clock(self, ms: int) -> None:
        """Move the account to moment `ms` (epoch milliseconds)."""
        if self._ask("clock", ms) is not None:
            raise SimulatorProcessError("the simulator runs on the machine's clock")

    def stats(self) -> ServerStats:
        """A copy of the server's statistics, faults and planted records included."""
        return self._ask("stats")

    def request_count(self) -> int:
        """Requests served so far (cheaper than `stats()`, for polling)."""
        return self._ask("count")

    def requests(self) -> list[tuple[str, str]]:
        """(method, raw path with query) of every request so far (needs `record_requests`)."""
        return self._ask("requests")

    def cpu_seconds(self) -> float:
        """CPU time the simulator has used so far (user + system), from /proc."""
        try:
            stat = Path(f"/proc/{self._process.pid}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(10)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._pipe.close()

    def _ask(self, command: str, argument: Any = None) -> Any:
        with self._lock:
            try:
                self._pipe.send((command, argument))
                if not self._pipe.poll(60):
                    raise SimulatorProcessError(f"the simulator did not answer {command!r}")
                return self._pipe.recv()
            except (EOFError, OSError) as exc:
                raise SimulatorProcessError(f"the simulator is gone: {exc}") from None


def _serve(
    config: AccountConfig,
    options: ServerOptions,
    now_ms: int | None,
    host: str,
    record_requests: bool,
    pipe: Connection,
) -> None:
    """Process target: build the account, listen on a free port, send the port, then serve
    requests on the event loop and the parent's commands on the main thread. `now_ms` None:
    the machine's clock."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us, after Ctrl-C too
    with contextlib.suppress(OSError, AttributeError):  # die with the parent, even on SIGKILL
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    manual = None if now_ms is None else ManualClock(now_ms)
    clock: Clock = manual or MachineClock()
    stats = ServerStats()
    app = make_app(Account(config), clock, options, stats)
    served: list[tuple[str, str]] = []
    if record_requests:

        async def record(request: web.Request, response: web.StreamResponse) -> None:
            served.append((request.method, request.raw_path))

        app.on_response_prepare.append(record)
    loop = asyncio.new_event_loop()
    runner, port = loop.run_until_complete(start_site(app, host, 0))
    thread = threading.Thread(target=loop.run_forever, name="simulator-loop", daemon=True)
    thread.start()

    def on_loop(make: Any) -> Any:
        async def run() -> Any:
            return make()

        return asyncio.run_coroutine_threadsafe(run(), loop).result()

    pipe.send(port)
    commands = {
        "clock": lambda ms: on_loop(lambda: manual.set(ms)) if manual else "machine clock",
        "stats": lambda _: on_loop(lambda: copy.deepcopy(stats)),
        "count": lambda _: stats.requests,
        "requests": lambda _: on_loop(lambda: list(served)),
    }
    try:
        while True:
            command, argument = pipe.recv()
            pipe.send(commands[command](argument))
    except (EOFError, OSError):
        pass  # the parent has gone
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        with contextlib.suppress(RuntimeError):
            loop.run_until_complete(runner.cleanup())
