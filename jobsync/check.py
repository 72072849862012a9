"""`jobsync check`: does the configured URL answer, in the configured dialect, to this token,
and what can the token see? A short report, never the token itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobsync.api import JobsClient
from jobsync.config import REGION_URLS
from jobsync.timestamps import format_iso_ms


@dataclass(frozen=True)
class CheckReport:
    """What the API said about the token and the account it opens."""

    api_url: str
    region: str  # us, eu, or "custom" for any other URL (a proxy, the simulator)
    dialect: str
    token_info: dict[str, Any] | None  # None: the dialect has no token endpoint
    flows: int
    api_time: str | None

    def lines(self) -> list[str]:
        info = self.token_info
        if info is None:
            described = f"no token endpoint in the {self.dialect} dialect; the token was accepted"
        else:
            described = ", ".join(f"{k}={v}" for k, v in info.items() if _printable(v)) or "{}"
        return [
            f"API: {self.api_url} (region {self.region}, dialect {self.dialect})",
            f"token: accepted; {described}",
            f"flows visible: {self.flows:,}",
            f"API clock: {self.api_time or 'unknown (no Date header)'}",
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "region": self.region,
            "dialect": self.dialect,
            "token_info": self.token_info,
            "flows": self.flows,
            "api_time": self.api_time,
        }


async def check_api(client: JobsClient) -> CheckReport:
    """Ask the token endpoint (where the dialect has one) and `GET /flows`; the client's
    errors (Unauthorized for a rejected token) propagate."""
    info = await client.token_info()
    flows = await client.list_flows()
    redact = client.settings.token.redact
    url = client.settings.base_url.rstrip("/")
    region = next((name for name, known in REGION_URLS.items() if known == url), "custom")
    now = client.server_now_ms()
    return CheckReport(
        api_url=redact(url),
        region=region,
        dialect=client.dialect.name,
        token_info=None if info is None else _redacted(info, redact),
        flows=len(flows),
        api_time=None if now is None else format_iso_ms(now),
    )


def _printable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def _redacted(value: Any, redact: Any) -> Any:
    """`value` with the token cut out of every string in it, however deep."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _redacted(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v, redact) for v in value]
    return value
