"""`jobsync check` against the simulator in each dialect: what the token can see, exit codes,
and the token never shown."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from jobsync.cli import cli

TOKEN = "test-token"


@pytest.fixture(autouse=True)
def _no_stray_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("JOBSYNC_CONFIG", "JOBSYNC_API_URL", "JOBSYNC_REGION", "JOBSYNC_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)


def check(simulator: Any, *args: str, token: str = TOKEN) -> Result:
    where = ["--api-url", simulator.url, "--dialect", simulator.options.dialect]
    return CliRunner().invoke(cli, ["check", *where, *args], env={"JOBSYNC_API_TOKEN": token})


def test_check_reports_what_the_token_can_see(simulator: Any) -> None:
    result = check(simulator)
    assert result.exit_code == 0, result.output
    flows = len(simulator.account.flows(simulator.clock.now_ms()))
    assert f"flows visible: {flows:,}" in result.stdout
    assert f"dialect {simulator.options.dialect}" in result.stdout
    assert "region custom" in result.stdout
    if simulator.options.dialect == "integrator":
        assert "_userId=" in result.stdout
    assert TOKEN not in result.output


def test_check_json(simulator: Any) -> None:
    result = check(simulator, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["flows"] == len(simulator.account.flows(simulator.clock.now_ms()))
    assert report["dialect"] == simulator.options.dialect
    assert (report["token_info"] is None) == (simulator.options.dialect == "reference")
    assert report["api_time"].startswith("2026-11-01T00:00:00")


def test_a_rejected_token_exits_3_without_showing_it(simulator: Any) -> None:
    result = check(simulator, token="not-the-token-123")
    assert result.exit_code == 3
    assert "rejected" in result.stderr or "invalid bearer token" in result.stderr
    assert "not-the-token-123" not in result.output


def test_plain_http_to_a_remote_host_is_a_usage_error() -> None:
    result = CliRunner().invoke(
        cli, ["check", "--api-url", "http://example.com/v1"], env={"JOBSYNC_API_TOKEN": TOKEN}
    )
    assert result.exit_code == 2
    assert "http://" in result.stderr and TOKEN not in result.output


def test_an_unreachable_api_exits_1() -> None:
    result = CliRunner().invoke(
        cli,
        ["check", "--api-url", "http://127.0.0.1:9/v1"],
        env={"JOBSYNC_API_TOKEN": TOKEN, "JOBSYNC_MAX_ATTEMPTS": "1"},
    )
    assert result.exit_code == 1
    assert "GET /" in result.stderr and TOKEN not in result.output
