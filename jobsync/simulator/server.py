"""The Jobs API over HTTP (aiohttp): routes under `/v1`, bearer auth, the 8 KB request-line
limit, a rate limit, latency and injected faults, each as the real API shows them."""

from __future__ import annotations

import asyncio
import hmac
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import orjson
from aiohttp import web

from jobsync.simulator.account import Account, CancelRefused, JobNotFound
from jobsync.simulator.clock import Clock
from jobsync.simulator.filters import InvalidQuery, parse_filter
from jobsync.simulator.ratelimit import LeakyBucket

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# aiohttp's own limit (8190) would answer 400 before the API's 414; it must be larger.
PARSER_MAX_LINE = 1 << 20
_CANCEL_STATUS = {"invalid_operation": 400, "conflict": 409}


@dataclass(frozen=True)
class ServerOptions:
    """How the simulated API behaves. `burst` defaults to `rate_limit` (one second's worth)."""

    token: str
    page_size: int = 1001
    latency_ms: float = 0
    rate_limit: float | None = None
    burst: int | None = None
    fault_rate: float = 0.0
    shuffle_ties: bool = True
    seed: int = 1
    max_request_line: int = 8192
    canceled_by: str = "api-user@example.com"

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("the token must not be empty")
        if self.page_size < 1 or self.latency_ms < 0 or self.max_request_line < 16:
            raise ValueError("page_size, latency_ms or max_request_line out of range")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be > 0 requests per second")
        if self.burst is not None and self.burst < 1:
            raise ValueError("burst must be at least 1")
        if not 0 <= self.fault_rate <= 1:
            raise ValueError("fault_rate must be between 0 and 1")


@dataclass
class ServerStats:
    """What the server did, for tests and the benchmark (written by the server's thread)."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0
    faults: int = 0
    dropped: int = 0
    jobs_listed: int = 0


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """The API's error body: `{"errors": [{"code": ..., "message": ...}]}`."""
    body = orjson.dumps({"errors": [{"code": code, "message": message}]})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def json_response(payload: Any) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def make_app(
    account: Account, clock: Clock, options: ServerOptions, stats: ServerStats | None = None
) -> web.Application:
    """The aiohttp application serving `account` as seen at `clock`'s time."""
    api = _JobsApi(account, clock, options, stats or ServerStats())
    app = web.Application(middlewares=[api.guard])
    app.on_response_prepare.append(api.stamp_date)
    app.router.add_get("/v1/jobs", api.list_jobs)
    app.router.add_get("/v1/jobs/{job_id}", api.get_job)
    app.router.add_delete("/v1/jobs/{job_id}", api.cancel_job)
    app.router.add_put("/v1/jobs/{job_id}/cancel", api.cancel_job)
    app.router.add_get("/v1/flows", api.list_flows)
    return app


class _JobsApi:
    """Route handlers and the middleware that applies the API's rules to every request."""

    def __init__(
        self, account: Account, clock: Clock, options: ServerOptions, stats: ServerStats
    ) -> None:
        self.account = account
        self.clock = clock
        self.options = options
        self.stats = stats
        self.ties = random.Random(f"{options.seed}:ties")
        self.faults = random.Random(f"{options.seed}:faults")
        self.bucket: LeakyBucket | None = None
        if options.rate_limit is not None:
            capacity = max(1, options.burst or options.rate_limit)
            self.bucket = LeakyBucket(options.rate_limit, capacity)

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.stats.requests += 1
        if self.options.latency_ms:
            await asyncio.sleep(self.options.latency_ms / 1000)
        response = await self._respond(request, handler)
        self.stats.by_status[response.status] += 1
        return response

    async def _respond(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        version = request.version
        line = len(f"{request.method}  HTTP/{version.major}.{version.minor}")
        line += len(request.raw_path.encode())
        if line > self.options.max_request_line:
            limit = self.options.max_request_line
            message = f"Request line is {line} bytes; the limit is {limit}"
            return error_response(414, "uri_too_long", message)
        if not self._authorized(request.headers.get("Authorization", "")):
            message = "Missing or invalid bearer token in the Authorization header"
            return error_response(401, "unauthorized", message)
        if self.bucket is not None:
            wait = self.bucket.take(self.options.token)
            if wait > 0:
                self.stats.rate_limited += 1
                retry_after = str(max(1, math.ceil(wait)))
                message = f"Too many requests; retry after {retry_after} s"
                return error_response(429, "rate_limited", message, {"Retry-After": retry_after})
        fault = self._fault()
        if fault in (500, 502, 503):
            return error_response(fault, "server_error", f"Injected fault (HTTP {fault})")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            code = "not_found" if exc.status == 404 else "http_error"
            return error_response(exc.status, code, exc.reason)
        # an error status never reaches the handler; a drop loses the answer of one that ran
        if fault == "drop" and isinstance(response, web.Response):
            return await self._drop_mid_body(request, response)
        return response

    async def stamp_date(self, request: web.Request, response: web.StreamResponse) -> None:
        """`Date` tells the simulated time: clients bound their windows by the API's clock."""
        response.headers["Date"] = formatdate(self.clock.now_ms() // 1000, usegmt=True)

    def _authorized(self, header: str) -> bool:
        scheme, _, token = header.partition(" ")
        expected = self.options.token.encode()
        return scheme == "Bearer" and hmac.compare_digest(token.encode(), expected)

    def _fault(self) -> int | str | None:
        """None, or the fault this request suffers: an error status or a dropped connection."""
        if not self.options.fault_rate or self.faults.random() >= self.options.fault_rate:
            return None
        self.stats.faults += 1
        return self.faults.choice((500, 502, 503, "drop", "drop"))

    async def _drop_mid_body(
        self, request: web.Request, response: web.Response
    ) -> web.StreamResponse:
        """Promise the whole body, send half of it, and close the connection."""
        body = response.body if isinstance(response.body, bytes) else b""
        self.stats.dropped += 1
        partial = web.StreamResponse(status=response.status, headers=response.headers)
        partial.content_length = len(body)
        await partial.prepare(request)
        await partial.write(body[: len(body) // 2])
        if request.transport is not None:
            request.transport.close()
        return partial

    async def list_jobs(self, request: web.Request) -> web.Response:
        try:
            query = parse_filter(request.query.items())
        except InvalidQuery as exc:
            return error_response(400, "invalid_query", str(exc))
        shuffle = self.ties if self.options.shuffle_ties else None
        now = self.clock.now_ms()
        jobs = self.account.list_jobs(query, now, self.options.page_size, shuffle)
        self.stats.jobs_listed += len(jobs)
        return json_response(jobs)

    async def get_job(self, request: web.Request) -> web.Response:
        job = self.account.job(request.match_info["job_id"], self.clock.now_ms())
        if job is None:
            return error_response(404, "not_found", "Job not found")
        return json_response(job)

    async def cancel_job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        try:
            job = self.account.cancel(job_id, self.clock.now_ms(), self.options.canceled_by)
        except JobNotFound:
            return error_response(404, "not_found", "Job not found")
        except CancelRefused as exc:
            return error_response(_CANCEL_STATUS[exc.code], exc.code, exc.message)
        return json_response(job)

    async def list_flows(self, request: web.Request) -> web.Response:
        return json_response(self.account.flows())
