"""A one-line progress display on stderr, redrawn a few times a second, only on a terminal."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from typing import TextIO


class ProgressLine:
    """Redraws `render(requests_per_second)` in place until stopped; silent off a terminal."""

    def __init__(
        self,
        render: Callable[[float], str],
        requests: Callable[[], int],
        stream: TextIO = sys.stderr,
        interval: float = 0.5,
    ) -> None:
        self.render = render
        self.requests = requests
        self.stream = stream
        self.interval = interval
        self.enabled = stream.isatty()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.enabled:
            self._task = asyncio.create_task(self._draw_forever())

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.stream.write("\r\x1b[2K")
        self.stream.flush()

    async def _draw_forever(self) -> None:
        last_time, last_requests = time.monotonic(), self.requests()
        while True:
            await asyncio.sleep(self.interval)
            now, requests = time.monotonic(), self.requests()
            rate = (requests - last_requests) / max(now - last_time, 1e-6)
            last_time, last_requests = now, requests
            self.stream.write("\r\x1b[2K" + self.render(rate))
            self.stream.flush()
