"""The Jobs API over HTTP (aiohttp): routes under `/v1`, bearer auth, the 8 KB request-line
limit, a rate limit, latency and injected faults, each as the real API shows them."""

from __future__ import annotations

import asyncio
import hashlib
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

from jobsync.dialect import DIALECTS, INTEGRATOR
from jobsync.simulator.account import Account, CancelRefused, JobNotFound
from jobsync.simulator.clock import Clock
from jobsync.simulator.faults import FaultInjector, FaultLog, FaultPlan
from jobsync.simulator.filters import InvalidQuery, JobFilter, parse_filter
from jobsync.simulator.ratelimit import LeakyBucket

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# aiohttp's own limit (8190) would answer 400 before the API's 414; it must be larger.
PARSER_MAX_LINE = 1 << 20
_CANCEL_STATUS = {"invalid_operation": 400, "conflict": 409}


@dataclass(frozen=True)
class ServerOptions:
    """How the simulated API behaves. `burst` defaults to `rate_limit` (one second's worth);
    `page_size` to the dialect's page cap (1001 reference, 1000 integrator)."""

    token: str
    page_size: int | None = None
    latency_ms: float = 0
    rate_limit: float | None = None
    burst: int | None = None
    fault_rate: float = 0.0
    shuffle_ties: bool = True
    seed: int = 1
    max_request_line: int = 8192
    canceled_by: str = "api-user@example.com"
    dialect: str = "reference"
    # outages, 429 storms, stalls, bad bodies and bad records (faults.py)
    faults: FaultPlan = field(default_factory=FaultPlan)

    def __post_init__(self) -> None:
        if not self.token:
            raise ValueError("the token must not be empty")
        if self.dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}")
        if self.page_cap < 1 or self.latency_ms < 0 or self.max_request_line < 16:
            raise ValueError("page_size, latency_ms or max_request_line out of range")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be > 0 requests per second")
        if self.burst is not None and self.burst < 1:
            raise ValueError("burst must be at least 1")
        if not 0 <= self.fault_rate <= 1:
            raise ValueError("fault_rate must be between 0 and 1")

    @property
    def page_cap(self) -> int:
        """The most jobs one listing returns."""
        return self.page_size or DIALECTS[self.dialect].page_cap


@dataclass
class ServerStats:
    """What the server did, for tests and the benchmark (written by the server's thread)."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0
    faults: int = 0
    dropped: int = 0
    jobs_listed: int = 0
    chaos: FaultLog = field(default_factory=FaultLog)  # what `ServerOptions.faults` did


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
    if options.dialect != INTEGRATOR.name:
        app.router.add_delete("/v1/jobs/{job_id}", api.cancel_job)
    app.router.add_put("/v1/jobs/{job_id}/cancel", api.cancel_job)
    app.router.add_get("/v1/flows", api.list_flows)
    if options.dialect == INTEGRATOR.name:
        app.router.add_get("/v1/tokenInfo", api.token_info)
    return app


class _JobsApi:
    """Route handlers and the middleware that applies the API's rules to every request."""

    def __init__(
        self, account: Account, clock: Clock, options: ServerOptions, stats: ServerStats
    ) -> None:
        self.account = account
        self.clock = clock
        self.options = options
        self.dialect = DIALECTS[options.dialect]
        self.stats = stats
        self.ties = random.Random(f"{options.seed}:ties")
        self.faults = random.Random(f"{options.seed}:faults")
        self.chaos = FaultInjector(options.faults, options.seed, stats.chaos)
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
        spoil = None
        if fault is None and self.options.faults.active:
            refusal = self.chaos.refuse()
            if refusal is not None:
                return refusal
            spoil = self.chaos.pick()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            code = "not_found" if exc.status == 404 else "http_error"
            return error_response(exc.status, code, exc.reason)
        # an error status never reaches the handler; a drop loses the answer of one that ran
        if fault == "drop" and isinstance(response, web.Response):
            return await self._drop_mid_body(request, response)
        if spoil is not None and isinstance(response, web.Response):
            return await self.chaos.spoil(spoil, request, response)
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
            query = parse_filter(request.query.items(), self.dialect)
            if self.dialect is INTEGRATOR:
                _require_integrator_filters(query)
        except InvalidQuery as exc:
            return error_response(400, "invalid_query", str(exc))
        shuffle = self.ties if self.options.shuffle_ties else None
        now = self.clock.now_ms()
        name = self.dialect.name
        jobs = self.account.list_jobs(query, now, self.options.page_cap, shuffle, name)
        self.stats.jobs_listed += len(jobs)
        if not jobs and self.dialect is INTEGRATOR:
            return web.Response(status=204)
        return json_response(jobs)

    async def get_job(self, request: web.Request) -> web.Response:
        job = self.account.job(request.match_info["job_id"], self.clock.now_ms(), self.dialect.name)
        if job is None:
            return error_response(404, "not_found", "Job not found")
        return json_response(job)

    async def cancel_job(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        try:
            now = self.clock.now_ms()
            job = self.account.cancel(job_id, now, self.options.canceled_by, self.dialect.name)
        except JobNotFound:
            return error_response(404, "not_found", "Job not found")
        except CancelRefused as exc:
            return error_response(_CANCEL_STATUS[exc.code], exc.code, exc.message)
        return json_response(job)

    async def list_flows(self, request: web.Request) -> web.Response:
        return json_response(self.account.flows(self.clock.now_ms(), self.dialect.name))

    async def token_info(self, request: web.Request) -> web.Response:
        """`GET /tokenInfo`: who the (already checked) token belongs to; never the token."""
        digest = hashlib.sha256(self.options.token.encode()).hexdigest()
        info = {"_id": digest[:24], "_userId": digest[24:48], "name": "simulator token"}
        return json_response({**info, "scope": "full"})


def _require_integrator_filters(query: JobFilter) -> None:
    """integrator.io refuses a listing with neither a resource nor a date, and a listing of
    child jobs that names neither their flow job nor their step."""
    if not query.names_resource_or_date():
        raise InvalidQuery("a listing needs a resource filter (e.g. _flowId) or a date filter")
    children = {"export", "import"} & (query.types or frozenset())
    if children and not query.names_children():
        raise InvalidQuery(
            f"type {'/'.join(sorted(children))} needs _flowJobId, _exportId or _importId"
        )
