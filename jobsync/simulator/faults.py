"""Faults the simulated API injects on purpose, beyond the 5xx answers and dropped connections
of `ServerOptions.fault_rate`: an outage, storms of 429s, answers that stall past a client's
timeout, bodies that are not a JSON list, and listing pages with malformed records in them.

Bad records never change a real job. They are added to a page: records made from a real one
and then broken (each carries a marker, `chaos-<n>`, as its `_id` or in `chaosMarker`, so a
test can find what became of it), or a stale copy of a real job with an older `lastModified`.
So the account's ground truth stays what `Account.listed_jobs` says, and every planted record
is logged in `FaultLog.planted`.
"""

from __future__ import annotations

import asyncio
import copy
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from jobsync.timestamps import format_iso_ms, parse_iso_ms

# Bodies a 200 may carry instead of the JSON the client expects: a proxy's HTML page, an
# object where a list belongs (or a list where an object belongs), JSON cut short with a
# correct Content-Length, a NaN (JavaScript's JSON, not JSON), bytes that are not UTF-8.
BAD_BODIES = ("html", "wrong_shape", "cut_json", "nan", "not_utf8")

# Records mixed into a listing page: what each is, by kind.
BAD_RECORDS = (
    "not_object",  # a string or a list where a job object belongs
    "no_id",  # a job without `_id`
    "text_count",  # `numSuccess: "a dozen"`
    "digit_count",  # `numSuccess: "12"`: a count spelled as a string of digits
    "number_timestamp",  # `endedAt` as epoch milliseconds
    "bad_timestamp",  # `startedAt: "yesterday at noon"`
    "naive_timestamp",  # `createdAt` without its timezone
    "stale_duplicate",  # a real job again, one minute older and with other counts
    "huge_strings",  # a megabyte-long unknown field and a 64 KB flowExecutionGroupId
    "unknown_nested",  # an unknown field nested 40 levels deep, with odd keys
)


@dataclass(frozen=True)
class FaultPlan:
    """Shares of requests that suffer each fault; at most one fault per request.

    `outage_after`: after this many requests every answer is a 503, for good;
    `record_kinds`: the kinds of bad records planted (default: every one of BAD_RECORDS).
    """

    stall: float = 0.0
    storm: float = 0.0
    bad_body: float = 0.0
    bad_records: float = 0.0
    outage_after: int | None = None
    stall_seconds: float = 30.0
    storm_seconds: float = 2.0
    huge_bytes: int = 1 << 20
    record_kinds: tuple[str, ...] = BAD_RECORDS

    def __post_init__(self) -> None:
        shares = (self.stall, self.storm, self.bad_body, self.bad_records)
        if not all(0 <= share <= 1 for share in shares) or sum(shares) > 1:
            raise ValueError("fault shares must be between 0 and 1 and add up to at most 1")
        if self.stall_seconds <= 0 or self.storm_seconds <= 0 or self.huge_bytes < 1:
            raise ValueError("stall_seconds, storm_seconds and huge_bytes must be positive")
        if self.outage_after is not None and self.outage_after < 0:
            raise ValueError("outage_after must not be negative")
        if not self.record_kinds or not set(self.record_kinds) <= set(BAD_RECORDS):
            raise ValueError(f"record_kinds must be some of {', '.join(BAD_RECORDS)}")

    @property
    def active(self) -> bool:
        return self.outage_after is not None or any(
            (self.stall, self.storm, self.bad_body, self.bad_records)
        )


@dataclass(frozen=True)
class PlantedRecord:
    """A record the server added to a page: its marker, its kind, and the `_id` it carried
    (the marker itself, a real job's id for a stale duplicate, or None)."""

    marker: str
    kind: str
    job_id: str | None


@dataclass
class FaultLog:
    """What the injector did: faults by kind, and every record it planted."""

    by_kind: Counter[str] = field(default_factory=Counter)
    planted: list[PlantedRecord] = field(default_factory=list)


def _error(status: int, code: str, message: str, headers: dict[str, str]) -> web.Response:
    body = orjson.dumps({"errors": [{"code": code, "message": message}]})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


class FaultInjector:
    """Decides, request by request, which fault of a FaultPlan strikes, and applies it.

    `refuse` answers before the route runs (outage, 429 storm); `spoil` changes or delays the
    route's answer (stall, bad body, bad records).
    """

    def __init__(self, plan: FaultPlan, seed: int, log: FaultLog) -> None:
        self.plan = plan
        self.log = log
        self.rng = random.Random(f"{seed}:chaos")
        self.seen = 0
        self.storm_until = 0.0
        self.planted = 0

    def refuse(self) -> web.Response | None:
        """An outage's 503, a 429 with Retry-After while a storm blows, or None."""
        self.seen += 1
        plan = self.plan
        if plan.outage_after is not None and self.seen > plan.outage_after:
            self.log.by_kind["outage"] += 1
            return _error(503, "service_unavailable", "The service is down", {})
        now = time.monotonic()
        if now >= self.storm_until and plan.storm and self.rng.random() < plan.storm:
            self.storm_until = now + plan.storm_seconds
        if now < self.storm_until:
            self.log.by_kind["storm"] += 1
            wait = str(max(1, math.ceil(self.storm_until - now)))
            message = f"Too many requests; retry after {wait} s"
            return _error(429, "rate_limited", message, {"Retry-After": wait})
        return None

    def pick(self) -> str | None:
        """The fault that spoils this request's answer: "stall", "bad_body", "bad_records"."""
        plan = self.plan
        draw = self.rng.random()
        for kind, share in (
            ("stall", plan.stall),
            ("bad_body", plan.bad_body),
            ("bad_records", plan.bad_records),
        ):
            if draw < share:
                return kind
            draw -= share
        return None

    async def spoil(
        self, kind: str, request: web.Request, response: web.Response
    ) -> web.StreamResponse:
        """`response` as fault `kind` spoils it (unchanged when the kind does not apply)."""
        body = response.body if isinstance(response.body, bytes) else b""
        if response.status != 200 or not body:
            return response
        if kind == "stall":
            return await self._stall(request, response, body)
        if kind == "bad_body":
            return self._bad_body(response, body)
        if kind == "bad_records" and request.method == "GET" and request.path.endswith("/jobs"):
            page = orjson.loads(body)
            if isinstance(page, list) and page:
                return self._with_bad_records(response, page)
        return response

    async def _stall(
        self, request: web.Request, response: web.Response, body: bytes
    ) -> web.StreamResponse:
        """Say nothing for `stall_seconds`, or send half the body and then fall silent."""
        if self.rng.random() < 0.5:
            self.log.by_kind["stall_before_headers"] += 1
            await asyncio.sleep(self.plan.stall_seconds)
            return response
        self.log.by_kind["stall_mid_body"] += 1
        partial = web.StreamResponse(status=response.status, headers=response.headers)
        partial.content_length = len(body)
        await partial.prepare(request)
        await partial.write(body[: len(body) // 2])
        await asyncio.sleep(self.plan.stall_seconds)
        if request.transport is not None:
            request.transport.close()
        return partial

    def _bad_body(self, response: web.Response, body: bytes) -> web.Response:
        kind = self.rng.choice(BAD_BODIES)
        self.log.by_kind[f"body_{kind}"] += 1
        content_type = "application/json"
        if kind == "html":
            spoiled = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            content_type = "text/html"
        elif kind == "wrong_shape":
            value = orjson.loads(body)
            spoiled = orjson.dumps({"data": value} if isinstance(value, list) else [value])
        elif kind == "cut_json":
            spoiled = body[: max(1, len(body) // 2)]
        elif kind == "nan":
            spoiled = b'[{"_id": "nan-job", "numSuccess": NaN}]'
        else:
            spoiled = b"[\xff\xfe" + body[1:]
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
        return web.Response(body=spoiled, content_type=content_type, headers=headers)

    def _with_bad_records(self, response: web.Response, page: list[Any]) -> web.Response:
        """The page with one to three bad records, each right after the real job it is
        made from."""
        after: dict[int, list[Any]] = {}
        for _ in range(self.rng.randint(1, 3)):
            position = self.rng.randrange(len(page))
            record = self._bad_record(self.rng.choice(self.plan.record_kinds), page[position])
            if record is not None:
                after.setdefault(position, []).append(record)
        spoiled: list[Any] = []
        for position, job in enumerate(page):
            spoiled.append(job)
            spoiled.extend(after.get(position, ()))
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-type"}
        return web.Response(
            body=orjson.dumps(spoiled), content_type=response.content_type, headers=headers
        )

    def _bad_record(self, kind: str, real: Any) -> Any:
        """A record of `kind` made from the real job `real`, logged as planted; None when
        `real` cannot give one (a stale copy needs a `lastModified`)."""
        if not isinstance(real, dict) or (
            kind == "stale_duplicate" and not isinstance(real.get("lastModified"), str)
        ):
            return None
        self.planted += 1
        marker = f"chaos-{self.planted}"
        if kind == "not_object":
            record: Any = f"{marker}: not a job" if self.planted % 2 else [marker, 1, None]
            job_id = None
        else:
            record = copy.deepcopy(real)
            record["chaosMarker"] = marker
            if kind == "stale_duplicate":
                modified = parse_iso_ms(real["lastModified"]) - 60_000
                record.update(lastModified=format_iso_ms(modified), numSuccess=-1)
            else:
                # a job of its own, finished, so that nothing planted is fetched again
                record.update(_id=marker, status="completed")
                _break(record, kind, self.plan.huge_bytes)
            job_id = record.get("_id")
        self.log.by_kind[f"record_{kind}"] += 1
        self.log.planted.append(PlantedRecord(marker, kind, job_id))
        return record


def _break(job: dict[str, Any], kind: str, huge_bytes: int) -> None:
    """Break a copy of a real job the way `kind` says (see BAD_RECORDS)."""
    if kind == "no_id":
        del job["_id"]
    elif kind == "text_count":
        job["numSuccess"] = "a dozen"
    elif kind == "digit_count":
        job["numSuccess"] = "12"
    elif kind == "number_timestamp":
        job["endedAt"] = parse_iso_ms(job["createdAt"]) + 60_000
    elif kind == "bad_timestamp":
        job["startedAt"] = "yesterday at noon"
    elif kind == "naive_timestamp":
        job["createdAt"] = job["createdAt"].removesuffix("Z")
    elif kind == "huge_strings":
        job["chaosNotes"] = "é" * (huge_bytes // 2)
        job["flowExecutionGroupId"] = "g" * 65_536
    elif kind == "unknown_nested":
        nested: Any = {"leaf": ["∅", 1.5, None, {"": "empty key"}]}
        for level in range(40):
            nested = {f'level {level} ü\n\t"quote"': nested, "n": level}
        job["chaosNested"] = nested
    else:
        raise ValueError(f"unknown bad record kind {kind!r}")
