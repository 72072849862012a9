"""Settings: flags over environment over jobsync.toml, and clear errors for bad values."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from jobsync.config import REGION_URLS, load_settings
from jobsync.errors import ConfigError


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray jobsync.toml


def test_defaults() -> None:
    settings = load_settings({}, env={})
    assert settings.api_url == REGION_URLS["us"]
    assert settings.token is None and settings.db == Path("jobsync.duckdb")
    assert settings.overlap == timedelta(hours=1)


def test_the_dialect_defaults_to_integrator_with_its_page_cap(tmp_path: Path) -> None:
    settings = load_settings({}, env={})
    assert (settings.dialect, settings.page_size) == ("integrator", 1000)
    assert load_settings({"dialect": "reference"}, env={}).page_size == 1001
    env = {"JOBSYNC_DIALECT": "reference", "JOBSYNC_PAGE_SIZE": "500"}
    assert (load_settings({}, env=env).dialect, load_settings({}, env=env).page_size) == (
        "reference",
        500,
    )
    (tmp_path / "jobsync.toml").write_text('dialect = "reference"\n')
    assert load_settings({}, env={}).dialect == "reference"
    assert load_settings({"dialect": "integrator"}, env={}).dialect == "integrator"


def test_flags_beat_environment_beat_file(tmp_path: Path) -> None:
    (tmp_path / "jobsync.toml").write_text('concurrency = 3\noverlap = "2h"\ndb = "file.duckdb"\n')
    env = {"JOBSYNC_CONCURRENCY": "5", "JOBSYNC_DB": "env.duckdb", "JOBSYNC_MAX_CONCURRENCY": "40"}
    settings = load_settings({"concurrency": 9}, env=env)
    assert (settings.concurrency, settings.max_concurrency) == (9, 40)
    assert settings.db == Path("env.duckdb")
    assert settings.overlap == timedelta(hours=2)


def test_a_region_flag_beats_a_url_from_the_environment() -> None:
    env = {"JOBSYNC_API_URL": "https://proxy.example/v1"}
    assert load_settings({"region": "eu"}, env=env).api_url == REGION_URLS["eu"]
    assert load_settings({}, env=env).api_url == "https://proxy.example/v1"
    url = load_settings({"api_url": "http://127.0.0.1:1/v1"}, env={"JOBSYNC_REGION": "eu"})
    assert url.api_url == "http://127.0.0.1:1/v1"


def test_url_and_region_together_are_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="not both"):
        load_settings({"region": "eu", "api_url": "https://x/v1"}, env={})


def test_token_from_environment_or_file_never_shown(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-from-file\n")
    settings = load_settings({"token_file": token_file}, env={"JOBSYNC_API_TOKEN": "other"})
    assert settings.token is not None and settings.token.reveal() == "s3cret-from-file"
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)


def test_a_token_in_the_config_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "jobsync.toml").write_text('token = "abc"\n')
    with pytest.raises(ConfigError, match="token_file"):
        load_settings({}, env={})


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        ({"concurrency": 0}, {}, "concurrency"),
        ({}, {"JOBSYNC_MAX_CONCURRENCY": "0"}, "JOBSYNC_MAX_CONCURRENCY"),
        ({}, {"JOBSYNC_OVERLAP": "soon"}, "JOBSYNC_OVERLAP"),
        ({"region": "mars"}, {}, "region"),
        ({"page_size": 2000}, {}, "page cap"),
        ({}, {"JOBSYNC_DIALECT": "graphql"}, "JOBSYNC_DIALECT"),
        ({"rate_limit": float("nan")}, {}, "rate_limit"),
        ({"max_duration": "0s"}, {}, "above 0"),
        ({}, {"JOBSYNC_OVERLAP": "99999999999d"}, "too long"),
        ({}, {"JOBSYNC_API_TOKEN": "abc\ndef"}, "line breaks"),
        ({"token_file": Path("/nonexistent/token")}, {}, "cannot read token file"),
        ({}, {"JOBSYNC_CONFIG": "/nonexistent.toml"}, "not found"),
    ],
)
def test_bad_values_are_usage_errors(flags: dict, env: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(flags, env=env)


def test_unknown_file_settings_are_named(tmp_path: Path) -> None:
    (tmp_path / "jobsync.toml").write_text("concurrancy = 3\n")
    with pytest.raises(ConfigError, match="concurrancy"):
        load_settings({}, env={})
