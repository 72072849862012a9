"""Running the simulated API: in a background thread for tests and `jobsync demo` (whose own
code is synchronous and calls asyncio.run), or in the foreground for `jobsync simulate`."""

from __future__ import annotations

import asyncio
import sys
import threading
from types import TracebackType

from aiohttp import web

from jobsync.simulator.account import Account, AccountConfig
from jobsync.simulator.clock import Clock, ManualClock, WallClock
from jobsync.simulator.server import PARSER_MAX_LINE, ServerOptions, ServerStats, make_app


async def start_site(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Listen on host:port (0: a free port); returns the runner to clean up and the port."""
    runner = web.AppRunner(
        app,
        max_line_size=PARSER_MAX_LINE,
        access_log=None,
        shutdown_timeout=1.0,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner, runner.addresses[0][1]


def api_url(host: str, port: int) -> str:
    """The base URL clients use, with the `/v1` prefix of the real API."""
    return f"http://[{host}]:{port}/v1" if ":" in host else f"http://{host}:{port}/v1"


class SimulatorServer:
    """The simulated API on a loopback port, served by its own event loop in a thread.

    `with SimulatorServer(account, options) as server:` then talk to `server.url`; move
    `server.clock` (a ManualClock unless another is given) to move the account in time.
    """

    def __init__(
        self,
        account: Account,
        options: ServerOptions,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.account = account
        self.options = options
        self.clock = clock or ManualClock(account.config.start_ms)
        self.stats = ServerStats()
        self.host = host
        self.port = port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def headers(self) -> dict[str, str]:
        """The Authorization header the server accepts."""
        return {"Authorization": f"Bearer {self.options.token}"}

    def start(self) -> SimulatorServer:
        self._thread = threading.Thread(target=self._serve, name="jobsync-simulator", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> SimulatorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        app = make_app(self.account, self.clock, self.options, self.stats)
        try:
            runner, self.port = loop.run_until_complete(start_site(app, self.host, self.port))
        except BaseException as exc:
            self._error = exc
            loop.close()
            self._ready.set()
            return
        self.url = api_url(self.host, self.port)
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(runner.cleanup())
            loop.close()


def serve(
    account_config: AccountConfig, options: ServerOptions, host: str = "127.0.0.1", port: int = 8765
) -> None:
    """Serve an account whose clock is real time from `account_config.start_ms`, until Ctrl-C.

    Prints the API URL on stdout once listening. Raises OSError when the port is taken.
    """
    account = Account(account_config)
    clock = WallClock(account_config.start_ms)
    try:
        asyncio.run(_serve_forever(account, clock, options, host, port))
    except KeyboardInterrupt:
        return


async def _serve_forever(
    account: Account, clock: Clock, options: ServerOptions, host: str, port: int
) -> None:
    runner, port = await start_site(make_app(account, clock, options), host, port)
    try:
        print(api_url(host, port), flush=True)
        print(
            f"serving {len(account.history.flows)} flows; press Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
