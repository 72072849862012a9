"""Settings from flags > environment (`JOBSYNC_*`) > `jobsync.toml`, in one frozen dataclass
that every command builds once and passes down; nothing deeper reads `os.environ`."""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobsync.dialect import DEFAULT_DIALECT, DIALECT_NAMES, Dialect, dialect_named
from jobsync.errors import ConfigError
from jobsync.secret import ApiToken
from jobsync.timestamps import parse_duration

REGION_URLS = {
    "us": "https://api.integrator.io/v1",
    "eu": "https://api.eu.integrator.io/v1",
}
DEFAULT_CONFIG_FILE = "jobsync.toml"
MAX_PAGE_SIZE = 1001  # the most jobs either dialect's documentation gives for one page


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know about how it was asked to run."""

    api_url: str = REGION_URLS["us"]
    token: ApiToken | None = None
    dialect: str = DEFAULT_DIALECT
    insecure: bool = False
    db: Path = Path("jobsync.duckdb")
    parquet: str | None = None
    concurrency: int = 8
    max_concurrency: int = 64
    rate_limit: float = 20.0
    max_rate: float = 1000.0
    timeout: float = 60.0
    max_attempts: int = 8
    max_retry_time: float = 600.0
    overlap: timedelta = timedelta(hours=1)
    max_duration: timedelta | None = None
    page_size: int = 1000  # jobs in a full page; load_settings defaults it to the dialect's cap
    retention_days: int = 30

    @property
    def api_dialect(self) -> Dialect:
        return dialect_named(self.dialect)

    def require_token(self) -> ApiToken:
        """The token, or a usage error saying where to put one."""
        if self.token is None:
            raise ConfigError(
                "no API token: set JOBSYNC_API_TOKEN, or pass --token-file PATH "
                "(or token_file in jobsync.toml)"
            )
        return self.token


# name -> (environment variable, converter). The name is also the jobsync.toml key and
# the click parameter name of the flag.
def _positive_int(value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"must be at least 1, got {number}")
    return number


def _positive_float(value: Any) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"must be above 0, got {number}")
    return number


def _duration(value: Any) -> timedelta:
    try:
        duration = value if isinstance(value, timedelta) else parse_duration(str(value))
    except OverflowError:
        raise ValueError(f"duration too long: {value!r}") from None
    if duration <= timedelta(0):
        raise ValueError(f"must be above 0, got {value!r}")
    return duration


def _page_size(value: Any) -> int:
    number = _positive_int(value)
    if number > MAX_PAGE_SIZE:
        raise ValueError(
            f"must not exceed the API's page cap ({MAX_PAGE_SIZE}): a larger value would take "
            f"full pages for last pages and lose jobs; got {number}"
        )
    return number


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a yes/no value: {value!r}")


def _dialect(value: Any) -> str:
    if value not in DIALECT_NAMES:
        raise ValueError(f"must be one of {', '.join(DIALECT_NAMES)}, got {value!r}")
    return str(value)


_FIELDS: dict[str, tuple[str, Any]] = {
    "api_url": ("JOBSYNC_API_URL", str),
    "region": ("JOBSYNC_REGION", str),
    "token_file": ("JOBSYNC_TOKEN_FILE", Path),
    "dialect": ("JOBSYNC_DIALECT", _dialect),
    "insecure": ("JOBSYNC_INSECURE", _flag),
    "db": ("JOBSYNC_DB", Path),
    "parquet": ("JOBSYNC_PARQUET", str),
    "concurrency": ("JOBSYNC_CONCURRENCY", _positive_int),
    "max_concurrency": ("JOBSYNC_MAX_CONCURRENCY", _positive_int),
    "rate_limit": ("JOBSYNC_RATE_LIMIT", _positive_float),
    "timeout": ("JOBSYNC_TIMEOUT", _positive_float),
    "max_attempts": ("JOBSYNC_MAX_ATTEMPTS", _positive_int),
    "overlap": ("JOBSYNC_OVERLAP", _duration),
    "max_duration": ("JOBSYNC_MAX_DURATION", _duration),
    "page_size": ("JOBSYNC_PAGE_SIZE", _page_size),
    "retention_days": ("JOBSYNC_RETENTION_DAYS", _positive_int),
}


def _read_config_file(path: Path | None, env: Mapping[str, str]) -> dict[str, Any]:
    explicit = path or (Path(env["JOBSYNC_CONFIG"]) if env.get("JOBSYNC_CONFIG") else None)
    candidate = explicit or Path(DEFAULT_CONFIG_FILE)
    if not candidate.exists():
        if explicit:
            raise ConfigError(f"config file not found: {candidate}")
        return {}
    try:
        data = tomllib.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {candidate}: {exc}") from None
    if "token" in data:
        raise ConfigError(
            f"{candidate}: a token does not belong in the config file; use token_file "
            "or JOBSYNC_API_TOKEN"
        )
    table = data.get("jobsync", data)
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{candidate}: unknown setting(s): {', '.join(unknown)}")
    return dict(table)


def _read_token(token_file: Path | None, env: Mapping[str, str]) -> ApiToken | None:
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read token file {token_file}: {exc.strerror}") from None
        try:
            return ApiToken(text)
        except ValueError as exc:
            raise ConfigError(f"token file {token_file}: {exc}") from None
    value = env.get("JOBSYNC_API_TOKEN")
    if not value or not value.strip():
        return None
    try:
        return ApiToken(value)
    except ValueError as exc:
        raise ConfigError(f"JOBSYNC_API_TOKEN: {exc}") from None


def load_settings(
    flags: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge flags (None means not given) over the environment over the config file."""
    env = os.environ if env is None else env
    merged: dict[str, Any] = {}
    for source_name, source in (
        ("jobsync.toml", _read_config_file(config_file, env)),
        ("environment", {k: env[v] for k, (v, _) in _FIELDS.items() if env.get(v)}),
        ("flags", {k: v for k, v in flags.items() if k in _FIELDS and v is not None}),
    ):
        if "api_url" in source and "region" in source:
            raise ConfigError(f"give an API URL or a region, not both ({source_name})")
        for name, value in source.items():
            try:
                merged[name] = _FIELDS[name][1](value)
            except (TypeError, ValueError) as exc:
                where = _FIELDS[name][0] if source_name == "environment" else name
                raise ConfigError(f"bad {where} ({source_name}): {exc}") from None
        if "region" in source:  # a region stands for its URL, over any URL from below
            region = merged.pop("region")
            if region not in REGION_URLS:
                raise ConfigError(f"unknown region {region!r}; expected one of us, eu")
            merged["api_url"] = REGION_URLS[region]
    token = _read_token(merged.pop("token_file", None), env)
    dialect = merged.setdefault("dialect", DEFAULT_DIALECT)
    merged.setdefault("page_size", dialect_named(dialect).page_cap)
    return Settings(token=token, **merged)
