"""The HTTP client of the Jobs API: one session, adaptive concurrency and rate limit, retries
of what is transient, and typed errors that never carry the token.

Every aiohttp exception is turned into a message here and the jobsync error is raised
outside the `except` block, so no aiohttp object (whose repr can hold request headers)
travels with it, not even as `__context__`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import orjson
from yarl import URL

from jobsync import __version__
from jobsync.concurrency import AdaptiveConcurrency
from jobsync.config import Settings
from jobsync.dialect import DEFAULT_DIALECT, Dialect, dialect_named
from jobsync.errors import (
    ConfigError,
    Conflict,
    HttpStatusError,
    InvalidOperation,
    NotFound,
    RateLimited,
    RequestTooLong,
    ServerError,
    TransportError,
    Unauthorized,
    Untrusted,
)
from jobsync.job_record import JobRecord, decode_job_page
from jobsync.query import JobQuery, request_line_length
from jobsync.ratelimit import AdaptiveRateLimiter
from jobsync.retry import RetryPolicy, is_retryable_status, parse_retry_after
from jobsync.secret import ApiToken

log = logging.getLogger("jobsync.api")

_LOOPBACK_NAMES = frozenset({"localhost"})
_SNIPPET = 200


@dataclass(frozen=True)
class ClientSettings:
    """How the client reaches the API and how hard it may push."""

    base_url: str
    token: ApiToken
    dialect: str = DEFAULT_DIALECT
    allow_insecure: bool = False
    concurrency: int = 8  # requests in flight to start with
    max_concurrency: int = 64  # the most the in-flight window widens to
    rate_limit: float = 20.0
    max_rate: float = 1000.0
    timeout: float = 60.0
    max_attempts: int = 8
    max_retry_time: float = 600.0


def client_settings(settings: Settings) -> ClientSettings:
    """The client's part of the command's settings (the token must be there)."""
    return ClientSettings(
        base_url=settings.api_url,
        token=settings.require_token(),
        dialect=settings.dialect,
        allow_insecure=settings.insecure,
        concurrency=settings.concurrency,
        max_concurrency=settings.max_concurrency,
        rate_limit=settings.rate_limit,
        max_rate=settings.max_rate,
        timeout=settings.timeout,
        max_attempts=settings.max_attempts,
        max_retry_time=settings.max_retry_time,
    )


@dataclass
class RequestStats:
    """Counters for the run log and the progress line."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0  # requests sent again after a transient failure
    throttled: int = 0  # 429 answers
    server_errors: int = 0  # 5xx answers
    transport_errors: int = 0  # no usable answer: connection, timeout, bad body
    failures: int = 0  # calls that gave up when the retry budget ran out
    retry_wait: float = 0.0  # seconds spent waiting between attempts


def check_base_url(url: str, allow_insecure: bool) -> str:
    """The base URL without a trailing slash, or a ConfigError: only https, or http to a
    loopback host (the simulator), unless the user accepts sending the token in clear."""
    text = url.strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"API URL must be an http(s) URL with a host, got {text!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("API URL must not hold credentials; the token comes from elsewhere")
    if parts.query or parts.fragment:
        raise ConfigError(f"API URL must not have a query or fragment, got {text!r}")
    if parts.scheme == "http" and not allow_insecure and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"refusing plain http:// to {parts.hostname}: the token would travel in clear; "
            "use https://, or --insecure if you really mean it"
        )
    return text


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _segment(value: str) -> str:
    """One path segment, encoded so that no character of it can reach the rest of the URL."""
    if not value:
        raise ConfigError("a job id is empty")
    encoded = quote(value, safe="")
    # "." and ".." survive quoting and would be resolved as relative paths.
    return encoded.replace(".", "%2E") if encoded in (".", "..") else encoded


@dataclass(frozen=True)
class _Reply:
    """What came back from one request, read completely."""

    status: int
    reason: str
    body: bytes
    retry_after: str | None
    date: str | None
    location: str | None
    next_url: URL | None


@dataclass(frozen=True)
class _Answer:
    """A successful call: the parsed body and, for paged listings, the next page's URL."""

    value: Any
    next_url: URL | None


class JobsClient:
    """The Jobs API, for one command or sync run. Use as `async with JobsClient(...)`."""

    def __init__(
        self,
        settings: ClientSettings,
        *,
        session: aiohttp.ClientSession | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.dialect: Dialect = dialect_named(settings.dialect)
        self._base = URL(check_base_url(settings.base_url, settings.allow_insecure))
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout)
        self.in_flight = AdaptiveConcurrency(
            settings.concurrency, settings.max_concurrency, clock=clock
        )
        self._sleep = sleep
        self._clock = clock
        self._policy = RetryPolicy(
            settings.max_attempts, settings.max_retry_time, rng=rng or random.Random()
        )
        self.limiter = AdaptiveRateLimiter(
            settings.rate_limit,
            settings.max_rate,
            min_rate=min(0.5, settings.rate_limit, settings.max_rate),
            clock=clock,
            sleep=sleep,
        )
        self.stats = RequestStats()
        self._server_time: tuple[float, float] | None = None  # (epoch s per Date, our clock)

    async def __aenter__(self) -> JobsClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self.in_flight.ceiling),
                headers={"User-Agent": f"jobsync/{__version__}", "Accept": "application/json"},
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        gate = self.in_flight
        log.info(
            "requests in flight: at most %d at once; window %d at the end (%d cut by 429)",
            gate.peak,
            gate.limit,
            gate.decreases,
        )
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def list_jobs(self, query: JobQuery) -> list[Any]:
        """One page of jobs, newest first; items as the API sent them (a later stage vets
        them): JobRecords when every item plainly follows the type rules, else JSON values."""
        query_string = query.query_string(self.dialect)
        answer = await self._call("GET", "/jobs", query_string, expect=JobRecord)
        return answer.value

    async def get_job(self, job_id: str) -> dict[str, Any]:
        """One job by id; NotFound once the API has purged it."""
        answer = await self._call("GET", f"/jobs/{_segment(job_id)}", expect=dict)
        return answer.value

    async def cancel_job(self, job_id: str) -> dict[str, Any]:
        """Cancel a flow job; InvalidOperation for export/import jobs, Conflict if finished."""
        method, path = self.dialect.cancel
        answer = await self._call(method, path.format(id=_segment(job_id)), expect=dict)
        return answer.value

    async def token_info(self) -> dict[str, Any] | None:
        """What the API says about the token (`GET /tokenInfo`), or None in a dialect that has
        no such endpoint. Unauthorized when the token is rejected."""
        if self.dialect.token_info_path is None:
            return None
        answer = await self._call("GET", self.dialect.token_info_path, expect=dict)
        return answer.value

    async def list_flows(self) -> list[Any]:
        """Every flow of the account, following `Link: rel="next"` pages if the API sends them."""
        flows: list[Any] = []
        answer = await self._call("GET", "/flows")
        seen: set[URL] = set()
        while True:
            flows.extend(answer.value)
            url = answer.next_url
            if url is None or url in seen:
                return flows
            if url.origin() != self._base.origin():
                raise TransportError(f"GET /flows: next-page link leaves {self._base.origin()}")
            seen.add(url)
            answer = await self._call("GET", "/flows", url=url)

    def request_line_length(self, query: JobQuery) -> int:
        """Bytes of the request line `list_jobs(query)` sends (the API refuses over 8 KB)."""
        path = f"{self._base.raw_path.rstrip('/')}/jobs"
        return request_line_length(path, query, self.dialect)

    def server_now_ms(self) -> int | None:
        """The API's clock (from the last response's `Date`, moved on by ours since), or None
        before any response carried one. Lags by up to a second: `Date` has whole seconds."""
        if self._server_time is None:
            return None
        server_epoch, seen_at = self._server_time
        return round((server_epoch + self._clock() - seen_at) * 1000)

    async def _call(
        self,
        method: str,
        target: str,
        query_string: str = "",
        *,
        expect: type = list,
        url: URL | None = None,
    ) -> _Answer:
        """Send until there is an answer of the expected shape, a final error, or the retry
        budget is spent."""
        what = f"{method} {target}"
        if url is None:
            text = f"{self._base}{target}" + (f"?{query_string}" if query_string else "")
            url = URL(text, encoded=True)
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            reply = await self._send(method, url)
            retry_after: float | None = None
            final: type[HttpStatusError] | None = None
            if isinstance(reply, str):
                problem = reply
                self.stats.transport_errors += 1
            elif 200 <= reply.status < 300:
                answer = self._parse(reply, expect)
                if isinstance(answer, _Answer):
                    self.limiter.on_success()
                    self.in_flight.on_success()
                    return answer
                problem = answer
                self.stats.transport_errors += 1
            elif reply.status == 429:
                retry_after = parse_retry_after(reply.retry_after, _http_date(reply.date))
                self.limiter.on_throttled(retry_after)
                self.in_flight.on_throttled()
                self.stats.throttled += 1
                problem, final = self._describe_status(reply), RateLimited
            elif is_retryable_status(reply.status):
                retry_after = parse_retry_after(reply.retry_after, _http_date(reply.date))
                self.stats.server_errors += 1
                problem, final = self._describe_status(reply), ServerError
            else:
                raise self._status_error(reply)

            delay = self._policy.delay(attempt, retry_after)
            if not self._policy.allows(attempt, self._clock() - started, delay):
                self.stats.failures += 1
                raise self._give_up(what, attempt, problem, reply, final, retry_after)
            self.stats.retries += 1
            self.stats.retry_wait += delay
            log.log(
                logging.DEBUG if final is RateLimited else logging.INFO,
                "%s: %s; retry %d of %d in %.2f s",
                what,
                self._redact(problem),
                attempt,
                self.settings.max_attempts - 1,
                delay,
            )
            await self._sleep(delay)

    async def _send(self, method: str, url: URL) -> _Reply | str:
        """One request in an in-flight slot and at the rate limit's pace: the reply, or what
        kept it from arriving."""
        if self._session is None:
            raise RuntimeError("JobsClient used outside `async with`")
        headers = {"Authorization": f"Bearer {self.settings.token.reveal()}"}
        await self.in_flight.acquire()
        try:
            with self.in_flight.pacing():
                await self.limiter.acquire()
            self.stats.requests += 1
            async with self._session.request(
                method, url, headers=headers, timeout=self._timeout, allow_redirects=False
            ) as response:
                body = await response.read()
                reply = _Reply(
                    status=response.status,
                    reason=response.reason or "",
                    body=body,
                    retry_after=response.headers.get("Retry-After"),
                    date=response.headers.get("Date"),
                    location=response.headers.get("Location"),
                    next_url=_next_link(response),
                )
        except TimeoutError:
            return f"no complete answer within {self.settings.timeout:g} s"
        except aiohttp.ClientPayloadError as exc:
            return f"response body cut short ({_first_line(exc)})"
        except aiohttp.ClientConnectorCertificateError as exc:
            raise Untrusted(
                f"{url.host}: its TLS certificate is not trusted ({_first_line(exc)})"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            return f"{type(exc).__name__}: {_first_line(exc)}"
        finally:
            self.in_flight.release()
        self._note_server_time(reply.date)
        return reply

    def _parse(self, reply: _Reply, expect: type) -> _Answer | str:
        """The body as `expect` (list, dict, or JobRecord for a list of them where it can be),
        or why it is not usable (which is transient: a proxy's error page, a body cut short)."""
        if reply.status == 204 or not reply.body.strip():
            if expect is not dict:
                return _Answer([], reply.next_url)
            return f"HTTP {reply.status} with an empty body"
        if expect is JobRecord:
            records = decode_job_page(reply.body)
            if records is not None:
                return _Answer(records, reply.next_url)
            expect = list
        try:
            value = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            return f"HTTP {reply.status} body is not JSON ({len(reply.body)} bytes)"
        if not isinstance(value, expect):
            wanted = "a list" if expect is list else "an object"
            return f"HTTP {reply.status} body is JSON {type(value).__name__}, expected {wanted}"
        return _Answer(value, reply.next_url)

    def _describe_status(self, reply: _Reply) -> str:
        code, message = self._error_detail(reply)
        return f"{message} (HTTP {reply.status}, {code})"

    def _error_detail(self, reply: _Reply) -> tuple[str, str]:
        """(code, message) from the API's error body, or made up from the status when the body
        is missing or odd; both redacted."""
        codes: list[str] = []
        messages: list[str] = []
        try:
            data = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            data = None
        errors = data.get("errors") if isinstance(data, dict) else None
        items = errors if isinstance(errors, list) else [data]
        for item in items:
            if not isinstance(item, dict):
                continue
            if isinstance(item.get("code"), str) and item["code"]:
                codes.append(item["code"])
            if isinstance(item.get("message"), str) and item["message"]:
                messages.append(item["message"])
        phrase = _phrase(reply)
        code = codes[0] if codes else re.sub(r"[^a-z0-9]+", "_", phrase.lower()).strip("_")
        if messages:
            message = "; ".join(messages)
        elif reply.status == 401:
            message = "the API rejected the token (check JOBSYNC_API_TOKEN or --token-file)"
        elif 300 <= reply.status < 400 and reply.location:
            message = f"unexpected redirect to {reply.location}"
        elif data is None and reply.body.strip() and not reply.body.lstrip().startswith(b"<"):
            message = f"{phrase}: {_snippet(reply.body)}"
        else:
            message = phrase
        return self._redact(code), self._redact(message)

    def _status_error(self, reply: _Reply) -> HttpStatusError:
        code, message = self._error_detail(reply)
        status = reply.status
        cls: type[HttpStatusError] = HttpStatusError
        if status == 401:
            cls = Unauthorized
        elif status == 414:
            cls = RequestTooLong
        elif status == 404 or code == "not_found":
            cls = NotFound
        elif status == 409 or code == "conflict":
            cls = Conflict
        elif code == "invalid_operation":
            cls = InvalidOperation
        return cls(status, code, message)

    def _give_up(
        self,
        what: str,
        attempts: int,
        problem: str,
        reply: _Reply | str,
        final: type[HttpStatusError] | None,
        retry_after: float | None,
    ) -> Exception:
        plural = "attempt" if attempts == 1 else "attempts"
        lead = f"{what} failed after {attempts} {plural}"
        if attempts < self.settings.max_attempts:
            budget = f"the {self.settings.max_retry_time:g} s retry budget"
            lead += (
                f" (Retry-After {retry_after:g} s is past {budget})"
                if retry_after is not None
                else f" ({budget} is spent)"
            )
        if final is None or isinstance(reply, str):
            return TransportError(self._redact(f"{lead}: {problem}"))
        code, message = self._error_detail(reply)
        return final(reply.status, code, f"{lead}: {message}")

    def _note_server_time(self, date: str | None) -> None:
        moment = _http_date(date)
        if moment is not None:
            self._server_time = (moment.timestamp(), self._clock())

    def _redact(self, text: str) -> str:
        return self.settings.token.redact(text)


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo is not None else None


def _next_link(response: aiohttp.ClientResponse) -> URL | None:
    if "Link" not in response.headers:
        return None
    try:
        link = response.links.get("next")
    except ValueError:
        return None
    url = link.get("url") if link else None
    return url if isinstance(url, URL) else None


def _phrase(reply: _Reply) -> str:
    try:
        return HTTPStatus(reply.status).phrase
    except ValueError:
        return reply.reason or f"HTTP {reply.status}"


def _snippet(body: bytes) -> str:
    text = " ".join(body.decode("utf-8", "replace").split())
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 1] + "…"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:_SNIPPET] if text else "no detail"
