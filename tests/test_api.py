"""The HTTP client: error mapping, retries and their limits, the token kept secret, and what
goes on the wire (checked on a real loopback socket)."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import orjson
import pytest
from aioresponses import aioresponses as _aioresponses
from conftest import FakeClock

from jobsync.api import ClientSettings, JobsClient, check_base_url, client_settings
from jobsync.config import Settings
from jobsync.dialect import REFERENCE, dialect_named
from jobsync.errors import (
    ApiError,
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
from jobsync.job_record import as_dicts
from jobsync.query import JobQuery
from jobsync.secret import ApiToken

T = TypeVar("T")
TOKEN = "tok-9f8e7d6c5b4a-SECRET"
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from chaos_attacks import self_signed_certificate  # noqa: E402

BASE = "https://api.example.test/v1"
JOBS = re.compile(r"^https://api\.example\.test/v1/jobs(\?.*)?$")
JOB_A = {"_id": "a", "type": "flow", "createdAt": "2024-01-15T10:00:00.000Z"}


class _CompatResponse(aiohttp.ClientResponse):
    """aioresponses 0.7.9 builds responses without the `stream_writer` that aiohttp 3.14
    requires; a stand-in with nothing left to upload lets them be built."""

    def __init__(self, method: str, url: Any, **kwargs: Any) -> None:
        kwargs.setdefault("stream_writer", SimpleNamespace(output_size=0))
        super().__init__(method, url, **kwargs)


class aioresponses(_aioresponses):
    """aioresponses whose mocked responses can be built on current aiohttp."""

    def add(self, url: Any, method: str = "GET", *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("response_class", _CompatResponse)
        super().add(url, method, *args, **kwargs)


def make_client(clock: FakeClock, base: str = BASE, **overrides: Any) -> JobsClient:
    """A client on the fake clock; the reference dialect unless `dialect=` says otherwise."""
    overrides.setdefault("dialect", "reference")
    settings = ClientSettings(base_url=base, token=ApiToken(TOKEN), **overrides)
    return JobsClient(settings, sleep=clock.sleep, clock=clock)


def run(clock: FakeClock, call: Callable[[JobsClient], Awaitable[T]], **overrides: Any) -> T:
    """Open a client (on the fake clock) and run one call with it."""

    async def main() -> T:
        async with make_client(clock, **overrides) as client:
            return await call(client)

    return asyncio.run(main())


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


def sent(m: aioresponses) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, url, kwargs) of every request aioresponses saw, in order of first sight."""
    return [
        (method, str(url), call.kwargs)
        for (method, url), calls in m.requests.items()
        for call in calls
    ]


# --- error mapping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "exc_type", "code", "message"),
    [
        (404, error_body("not_found", "Job not found"), NotFound, "not_found", "Job not found"),
        (
            400,
            error_body("invalid_operation", "Only flow jobs can be canceled"),
            InvalidOperation,
            "invalid_operation",
            "Only flow jobs can be canceled",
        ),
        (
            409,
            error_body("conflict", "Cannot cancel completed job"),
            Conflict,
            "conflict",
            "Cannot cancel completed job",
        ),
        (401, None, Unauthorized, "unauthorized", "the API rejected the token"),
        (414, None, RequestTooLong, "request_uri_too_long", "Request-URI Too Long"),
        (403, error_body("forbidden", "No access"), HttpStatusError, "forbidden", "No access"),
        (400, b"<html><body>Bad</body></html>", HttpStatusError, "bad_request", "Bad Request"),
        (422, b"plain words", HttpStatusError, "unprocessable_entity", "plain words"),
        (400, {"message": "flat error"}, HttpStatusError, "bad_request", "flat error"),
        (400, {"errors": "odd"}, HttpStatusError, "bad_request", "Bad Request"),
    ],
)
def test_final_statuses_raise_typed_errors_without_retry(
    status: int, body: Any, exc_type: type[HttpStatusError], code: str, message: str
) -> None:
    clock = FakeClock()
    raw = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    with aioresponses() as m:
        m.delete(f"{BASE}/jobs/j1", status=status, body=raw or b"")
        with pytest.raises(HttpStatusError) as info:
            run(clock, lambda c: c.cancel_job("j1"))
    exc = info.value
    assert type(exc) is exc_type
    assert (exc.status, exc.code) == (status, code)
    assert message in exc.message
    assert str(exc).startswith(exc.message)
    assert len(sent(m)) == 1
    assert clock.sleeps == []


def test_not_found_code_maps_to_not_found_whatever_the_status() -> None:
    with aioresponses() as m:
        m.get(f"{BASE}/jobs/x", status=400, payload=error_body("not_found", "gone"))
        with pytest.raises(NotFound):
            run(FakeClock(), lambda c: c.get_job("x"))


def test_several_errors_are_joined() -> None:
    body = {"errors": [{"code": "a", "message": "one"}, {"code": "b", "message": "two"}]}
    with aioresponses() as m:
        m.get(f"{BASE}/jobs/x", status=400, payload=body)
        with pytest.raises(HttpStatusError, match="one; two") as info:
            run(FakeClock(), lambda c: c.get_job("x"))
    assert info.value.code == "a"


# --- retries ----------------------------------------------------------------------------


def test_429_honours_retry_after_seconds_and_slows_the_limiter() -> None:
    clock = FakeClock()
    with aioresponses() as m:
        m.get(JOBS, status=429, headers={"Retry-After": "3"}, payload=error_body("x", "slow"))
        m.get(JOBS, payload=[JOB_A])

        async def call(client: JobsClient) -> tuple[list[Any], float, Any]:
            return await client.list_jobs(JobQuery()), client.limiter.rate, client.stats

        jobs, rate, stats = run(clock, call, rate_limit=20.0)
    assert as_dicts(jobs) == [JOB_A]
    assert 3.0 in clock.sleeps
    assert sum(clock.sleeps) == pytest.approx(3.0, abs=0.5)
    assert rate < 20.0
    assert (stats.requests, stats.retries, stats.throttled) == (2, 1, 1)


def test_429_honours_retry_after_as_an_http_date_on_the_servers_clock() -> None:
    clock = FakeClock()
    headers = {
        "Date": "Wed, 21 Oct 2015 07:28:00 GMT",
        "Retry-After": "Wed, 21 Oct 2015 07:28:04 GMT",
    }
    with aioresponses() as m:
        m.get(JOBS, status=429, headers=headers)
        m.get(JOBS, payload=[])
        assert run(clock, lambda c: c.list_jobs(JobQuery())) == []
    assert 4.0 in clock.sleeps


@pytest.mark.parametrize(
    "first",
    [
        {"status": 500},
        {"status": 502, "body": b"<html>Bad Gateway</html>"},
        {"status": 503, "headers": {"Retry-After": "1"}},
        {"exception": aiohttp.ClientOSError(104, "Connection reset by peer")},
        {"exception": aiohttp.ServerDisconnectedError()},
        {"exception": aiohttp.ClientConnectionError("Connection refused")},
        {"exception": TimeoutError()},
        {"exception": aiohttp.ClientPayloadError("Response payload is not completed")},
        {"status": 200, "body": b"<html>maintenance</html>"},
        {"status": 200, "body": b'[{"_id": "a", "createdAt": "2024'},
        {"status": 200, "body": b'{"jobs": []}'},
        {"status": 200, "body": b'"just a string"'},
    ],
    ids=[
        "500",
        "502-html",
        "503",
        "reset",
        "disconnected",
        "refused",
        "timeout",
        "payload",
        "html-200",
        "truncated-json",
        "object-not-list",
        "string-not-list",
    ],
)
def test_transient_failures_are_retried(first: dict[str, Any]) -> None:
    clock = FakeClock()
    with aioresponses() as m:
        m.get(JOBS, **first)
        m.get(JOBS, payload=[JOB_A, 7, "odd"])

        async def call(client: JobsClient) -> tuple[list[Any], Any]:
            return await client.list_jobs(JobQuery()), client.stats

        jobs, stats = run(clock, call)
    assert jobs == [JOB_A, 7, "odd"]  # items are not vetted here
    assert (stats.requests, stats.retries, stats.failures) == (2, 1, 0)


def test_empty_listing_bodies_are_empty_lists() -> None:
    with aioresponses() as m:
        m.get(JOBS, status=204)
        m.get(JOBS, status=200, body=b"")
        assert run(FakeClock(), lambda c: c.list_jobs(JobQuery())) == []
        assert run(FakeClock(), lambda c: c.list_jobs(JobQuery())) == []


def test_a_list_where_a_job_belongs_is_a_transport_error_after_retries() -> None:
    with aioresponses() as m:
        m.get(f"{BASE}/jobs/j1", payload=[JOB_A], repeat=True)
        with pytest.raises(TransportError, match=r"GET /jobs/j1 failed after 3 attempts: .*list"):
            run(FakeClock(), lambda c: c.get_job("j1"), max_attempts=3)


def test_server_errors_stop_at_the_attempt_cap() -> None:
    clock = FakeClock()
    with aioresponses() as m:
        m.get(JOBS, status=503, payload=error_body("unavailable", "Try later"), repeat=True)
        with pytest.raises(ServerError) as info:
            run(clock, lambda c: c.list_jobs(JobQuery()), max_attempts=8)
    assert str(info.value).startswith("GET /jobs failed after 8 attempts: Try later")
    assert info.value.status == 503
    assert len(sent(m)) == 8
    assert len(clock.sleeps) >= 7
    backoff = clock.sleeps[-7:]
    assert all(0 <= d <= 30.0 for d in backoff)


def test_throttling_that_outlasts_the_budget_raises_rate_limited() -> None:
    with aioresponses() as m:
        m.get(JOBS, status=429, headers={"Retry-After": "0"}, repeat=True)
        with pytest.raises(RateLimited, match="GET /jobs failed after 4 attempts") as info:
            run(FakeClock(), lambda c: c.list_jobs(JobQuery()), max_attempts=4)
    assert info.value.status == 429


def test_a_retry_after_past_the_time_budget_gives_up_at_once() -> None:
    clock = FakeClock()
    with aioresponses() as m:
        m.get(JOBS, status=429, headers={"Retry-After": "3600"}, repeat=True)
        with pytest.raises(RateLimited, match="Retry-After 3600 s is past the 600 s retry budget"):
            run(clock, lambda c: c.list_jobs(JobQuery()), max_retry_time=600.0)
    assert len(sent(m)) == 1


def test_the_time_budget_caps_retrying() -> None:
    clock = FakeClock()
    with aioresponses() as m:
        m.get(JOBS, exception=aiohttp.ClientOSError(111, "refused"), repeat=True)
        with pytest.raises(TransportError, match="retry budget is spent") as info:
            run(clock, lambda c: c.list_jobs(JobQuery()), max_attempts=1000, max_retry_time=60)
    assert "refused" in str(info.value)
    assert sum(clock.sleeps) <= 60.0 + 10.0  # backoff plus the limiter's own pacing


def test_transport_errors_after_the_last_attempt_are_wrapped() -> None:
    with aioresponses() as m:
        m.get(JOBS, exception=aiohttp.ClientOSError(104, "Connection reset by peer"), repeat=True)
        with pytest.raises(TransportError) as info:
            run(FakeClock(), lambda c: c.list_jobs(JobQuery()), max_attempts=3)
    exc = info.value
    assert str(exc) == (
        "GET /jobs failed after 3 attempts: ClientOSError: [Errno 104] Connection reset by peer"
    )
    assert exc.__cause__ is None and exc.__context__ is None


# --- the token --------------------------------------------------------------------------


def test_token_is_sent_only_in_the_authorization_header() -> None:
    with aioresponses() as m:
        m.get(JOBS, payload=[])
        run(FakeClock(), lambda c: c.list_jobs(JobQuery(flow_id="f")))
    [(_, url, kwargs)] = sent(m)
    assert kwargs["headers"]["Authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in url
    assert kwargs["allow_redirects"] is False
    assert isinstance(kwargs["timeout"], aiohttp.ClientTimeout)


def test_token_never_reaches_an_error_or_a_log_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = error_body("bad", f"token {TOKEN} is no good")
    failures: list[ApiError] = []
    with aioresponses() as m:
        m.get(f"{BASE}/jobs/a", status=401, payload=echo)
        m.get(f"{BASE}/jobs/b", status=500, payload=echo, repeat=True)
        m.get(f"{BASE}/jobs/c", status=429, payload=echo, repeat=True)
        m.get(f"{BASE}/jobs/d", exception=aiohttp.ClientOSError(1, f"echo {TOKEN}"), repeat=True)
        m.get(f"{BASE}/jobs/e", status=200, body=f"not json {TOKEN}".encode(), repeat=True)
        m.get(f"{BASE}/jobs/f", status=418, body=f"teapot {TOKEN}".encode())
        m.get(f"{BASE}/jobs/g", status=302, headers={"Location": f"https://x/?t={TOKEN}"})

        async def call(client: JobsClient) -> None:
            for job_id in "abcdefg":
                try:
                    await client.get_job(job_id)
                except ApiError as exc:
                    failures.append(exc)

        run(FakeClock(), call, max_attempts=3)
    assert [type(f) for f in failures] == [
        Unauthorized,
        ServerError,
        RateLimited,
        TransportError,
        TransportError,
        HttpStatusError,
        HttpStatusError,
    ]
    for exc in failures:
        text = " ".join(map(str, [exc, repr(exc), *exc.args, *vars(exc).values()]))
        assert TOKEN not in text
        assert exc.__context__ is None
    assert caplog.records, "retries are logged"
    for record in caplog.records:
        assert TOKEN not in record.getMessage()
        assert "Authorization" not in record.getMessage()


def test_settings_and_client_reprs_hide_the_token() -> None:
    settings = ClientSettings(base_url=BASE, token=ApiToken(TOKEN))
    assert TOKEN not in repr(settings)
    assert TOKEN not in repr(JobsClient(settings).settings)


# --- base URL ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "insecure", "expected"),
    [
        ("https://api.integrator.io/v1", False, "https://api.integrator.io/v1"),
        ("https://api.integrator.io/v1/", False, "https://api.integrator.io/v1"),
        ("http://127.0.0.1:8080/v1", False, "http://127.0.0.1:8080/v1"),
        ("http://127.9.9.9/v1", False, "http://127.9.9.9/v1"),
        ("http://localhost:1234/v1", False, "http://localhost:1234/v1"),
        ("http://LOCALHOST/v1", False, "http://LOCALHOST/v1"),
        ("http://[::1]:9000/v1", False, "http://[::1]:9000/v1"),
        ("http://api.example.com/v1", True, "http://api.example.com/v1"),
        ("  https://api.eu.integrator.io/v1  ", False, "https://api.eu.integrator.io/v1"),
    ],
)
def test_check_base_url_accepts(url: str, insecure: bool, expected: str) -> None:
    assert check_base_url(url, insecure) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://api.example.com/v1",
        "http://10.0.0.1/v1",
        "http://128.0.0.1/v1",
        "http://localhost.evil.com/v1",
        "http://[::2]/v1",
        "ftp://api.integrator.io/v1",
        "file:///etc/passwd",
        "api.integrator.io/v1",
        "https://",
        "https://user:pw@api.integrator.io/v1",
        "https://api.integrator.io/v1?x=1",
    ],
)
def test_check_base_url_refuses(url: str) -> None:
    with pytest.raises(ConfigError):
        check_base_url(url, False)


def test_client_refuses_a_bad_base_url() -> None:
    with pytest.raises(ConfigError, match="insecure"):
        make_client(FakeClock(), base="http://api.example.com/v1")


def test_client_settings_come_from_settings() -> None:
    settings = Settings(
        api_url="http://127.0.0.1:1/v1",
        token=ApiToken(TOKEN),
        dialect="reference",
        insecure=True,
        concurrency=3,
        max_concurrency=12,
        rate_limit=5.0,
        timeout=7.0,
        max_attempts=2,
    )
    cs = client_settings(settings)
    assert (cs.base_url, cs.dialect, cs.allow_insecure) == (
        "http://127.0.0.1:1/v1",
        "reference",
        True,
    )
    assert (cs.concurrency, cs.max_concurrency) == (3, 12)
    assert (cs.rate_limit, cs.timeout, cs.max_attempts) == (5.0, 7.0, 2)
    with pytest.raises(ConfigError, match="no API token"):
        client_settings(Settings())


# --- flows, server clock ----------------------------------------------------------------


def test_list_flows_follows_next_links_on_the_same_server() -> None:
    with aioresponses() as m:
        m.get(
            f"{BASE}/flows",
            payload=[{"_id": "f1"}],
            headers={"Link": f'<{BASE}/flows?page=2>; rel="next"'},
        )
        m.get(f"{BASE}/flows?page=2", payload=[{"_id": "f2"}])
        flows = run(FakeClock(), lambda c: c.list_flows())
    assert flows == [{"_id": "f1"}, {"_id": "f2"}]


def test_list_flows_refuses_a_next_link_to_another_server() -> None:
    with aioresponses() as m:
        m.get(
            f"{BASE}/flows",
            payload=[{"_id": "f1"}],
            headers={"Link": '<https://elsewhere.test/flows?page=2>; rel="next"'},
        )
        with pytest.raises(TransportError, match="next-page link"):
            run(FakeClock(), lambda c: c.list_flows())
    assert len(sent(m)) == 1


def test_server_now_follows_the_date_header() -> None:
    clock = FakeClock()
    with aioresponses() as m:
        m.get(f"{BASE}/flows", payload=[], headers={"Date": "Mon, 15 Jan 2024 10:00:00 GMT"})

        async def call(client: JobsClient) -> tuple[int | None, int | None]:
            before = client.server_now_ms()
            await client.list_flows()
            clock.now += 2.5
            return before, client.server_now_ms()

        before, after = run(clock, call)
    assert before is None
    assert after == 1_705_312_800_000 + 2_500


# --- the wire, on a real socket ---------------------------------------------------------


class RawServer:
    """A loopback HTTP/1.1 server that answers each connection with the next canned
    response and records the request line and headers it got."""

    def __init__(self, responses: list[bytes]) -> None:
        self.responses = list(responses)
        self.requests: list[tuple[str, list[str]]] = []
        self.url = ""

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        line, *headers = head.rstrip("\r\n").split("\r\n")
        self.requests.append((line, headers))
        writer.write(self.responses.pop(0))
        await writer.drain()
        writer.close()


def http_response(body: bytes, status: str = "200 OK", length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def on_wire(responses: list[bytes], call: Callable[[JobsClient], Awaitable[T]], **kw: Any):
    """Run `call` against a RawServer; (result, recorded requests, client)."""
    clock = FakeClock()

    async def main() -> tuple[T, list[tuple[str, list[str]]], JobsClient]:
        async with RawServer(responses) as server:
            client = make_client(clock, base=server.url, **kw)
            async with client:
                return await call(client), server.requests, client

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("job_id", "path"),
    [
        ("abc123", "/v1/jobs/abc123"),
        ("a/b", "/v1/jobs/a%2Fb"),
        ("../flows", "/v1/jobs/..%2Fflows"),
        ("..", "/v1/jobs/%2E%2E"),
        (".", "/v1/jobs/%2E"),
        ("x?status=running#frag", "/v1/jobs/x%3Fstatus%3Drunning%23frag"),
        ("sp ace&%", "/v1/jobs/sp%20ace%26%25"),
        ("ü", "/v1/jobs/%C3%BC"),
    ],
)
def test_job_ids_are_one_encoded_path_segment(job_id: str, path: str) -> None:
    body = orjson.dumps({"_id": job_id})
    job, requests, _ = on_wire([http_response(body)], lambda c: c.get_job(job_id))
    assert job == {"_id": job_id}
    assert requests[0][0] == f"GET {path} HTTP/1.1"


def test_an_empty_job_id_is_refused_before_sending() -> None:
    with pytest.raises(ConfigError, match="empty"):
        run(FakeClock(), lambda c: c.get_job(""))


@pytest.mark.parametrize(
    ("dialect", "request_line"),
    [
        ("reference", "DELETE /v1/jobs/j1 HTTP/1.1"),
        ("integrator", "PUT /v1/jobs/j1/cancel HTTP/1.1"),
    ],
)
def test_cancel_uses_the_dialects_verb(dialect: str, request_line: str) -> None:
    body = orjson.dumps({"_id": "j1", "status": "canceled"})
    job, requests, _ = on_wire([http_response(body)], lambda c: c.cancel_job("j1"), dialect=dialect)
    assert job["status"] == "canceled"
    assert requests[0][0] == request_line


def test_token_info_is_asked_only_where_the_dialect_has_it() -> None:
    body = orjson.dumps({"_userId": "u1", "scope": "full"})
    info, requests, _ = on_wire(
        [http_response(body)], lambda c: c.token_info(), dialect="integrator"
    )
    assert info == {"_userId": "u1", "scope": "full"}
    assert requests[0][0] == "GET /v1/tokenInfo HTTP/1.1"
    info, requests, _ = on_wire([], lambda c: c.token_info(), dialect="reference")
    assert (info, requests) == (None, [])


def test_a_204_listing_without_a_body_is_empty() -> None:
    empty = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"
    jobs, requests, client = on_wire(
        [empty], lambda c: c.list_jobs(JobQuery(flow_id="f")), dialect="integrator"
    )
    assert (jobs, len(requests), client.stats.retries) == ([], 1, 0)


def test_filter_values_cannot_add_parameters() -> None:
    query = JobQuery(flow_id="f1&status=running", status="failed", type="a b#c")
    _, requests, client = on_wire([http_response(b"[]")], lambda c: c.list_jobs(query))
    line = requests[0][0]
    assert line == "GET /v1/jobs?flow_id=f1%26status%3Drunning&status=failed&type=a+b%23c HTTP/1.1"
    assert client.request_line_length(query) == len(line.encode())


@pytest.mark.parametrize(
    ("dialect", "expected"),
    [
        ("reference", "flow_id_in=f1%2Cf2&integration_id=i1&flow_job_id=j1"),
        (
            "integrator",
            "_flowId_in%5B0%5D=f1&_flowId_in%5B1%5D=f2&_integrationId=i1&_flowJobId=j1",
        ),
    ],
)
def test_each_dialects_filter_spelling_on_the_wire(dialect: str, expected: str) -> None:
    query = JobQuery(
        flow_ids=("f1", "f2"),
        integration_id="i1",
        flow_job_id="j1",
        created_at_gte=1_705_312_800_000,
        num_error_gte=1,
    )
    _, requests, client = on_wire(
        [http_response(b"[]")], lambda c: c.list_jobs(query), dialect=dialect
    )
    line = requests[0][0]
    assert line == (
        f"GET /v1/jobs?{expected}&createdAt_gte=2024-01-15T10%3A00%3A00.000Z&numError_gte=1 "
        "HTTP/1.1"
    )
    assert client.request_line_length(query) == len(line.encode())


def test_integrator_only_filters_on_the_wire_and_refused_in_the_reference() -> None:
    query = JobQuery(
        flow_id="f1", num_export_gte=2, num_export_lte=9, num_resolved_gte=1, retriable=False
    )
    _, requests, _ = on_wire(
        [http_response(b"[]")], lambda c: c.list_jobs(query), dialect="integrator"
    )
    assert requests[0][0] == (
        "GET /v1/jobs?_flowId=f1&numExport_gte=2&numExport_lte=9&numResolved_gte=1"
        "&retriable=false HTTP/1.1"
    )
    assert JobQuery(num_export_gte=2).query_string(REFERENCE) == "numExport_gte=2"
    with pytest.raises(ValueError, match="reference dialect has no retriable filter"):
        JobQuery(retriable=True).query_string(REFERENCE)


def test_a_list_item_with_a_comma_is_never_comma_joined() -> None:
    """`flow_id_in=a,b,c` would name three flows; indexed keys carry the item whole."""
    query = JobQuery(flow_ids=("a,b", "c"))
    with pytest.raises(ValueError, match="flow_id_in: an item holds a comma"):
        query.query_string(REFERENCE)
    assert query.query_string(dialect_named("integrator")) == (
        "_flowId_in%5B0%5D=a%2Cb&_flowId_in%5B1%5D=c"
    )
    assert JobQuery(flow_id="a,b").query_string(REFERENCE) == "flow_id=a%2Cb"


def test_authorization_header_on_the_wire() -> None:
    _, requests, _ = on_wire([http_response(b"[]")], lambda c: c.list_flows())
    line, headers = requests[0]
    assert line == "GET /v1/flows HTTP/1.1"
    assert f"Authorization: Bearer {TOKEN}" in headers
    assert TOKEN not in line


def test_a_body_cut_short_on_the_socket_is_retried() -> None:
    cut = http_response(b'[{"_id": "a", "createdAt": "2024-01-15T10:00:00.000Z"}', length=500)
    whole = http_response(orjson.dumps([JOB_A]))
    jobs, requests, client = on_wire([cut, whole], lambda c: c.list_jobs(JobQuery()))
    assert as_dicts(jobs) == [JOB_A]
    assert len(requests) == 2
    assert (client.stats.retries, client.stats.transport_errors) == (1, 1)


def test_a_body_cut_short_every_time_is_a_transport_error() -> None:
    cut = http_response(b"[", length=50)
    with pytest.raises(TransportError, match="failed after 2 attempts: response body cut short"):
        on_wire([cut, cut], lambda c: c.list_jobs(JobQuery()), max_attempts=2)


def test_a_refused_connection_is_a_transport_error() -> None:
    async def free_port() -> int:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        return port

    port = asyncio.run(free_port())
    with pytest.raises(TransportError, match="GET /jobs failed after 2 attempts") as info:
        run(
            FakeClock(),
            lambda c: c.list_jobs(JobQuery()),
            base=f"http://127.0.0.1:{port}/v1",
            max_attempts=2,
        )
    assert info.value.__context__ is None


def test_an_untrusted_certificate_fails_at_once_without_retrying(tmp_path: Path) -> None:
    """Retrying cannot make a certificate trusted: one attempt, then the run ends."""
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def main() -> JobsClient:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        async with server, make_client(FakeClock(), base=f"https://127.0.0.1:{port}/v1") as client:
            with pytest.raises(
                Untrusted, match=r"127\.0\.0\.1: its TLS certificate is not trusted"
            ):
                await client.list_jobs(JobQuery())
        return client

    stats = asyncio.run(main()).stats
    assert (stats.requests, stats.retries) == (1, 0)
