"""The simulator in a process of its own (jobsync/simulator/process.py): it serves over real
sockets, its clock moves when the parent says so, and it reports what it served."""

from __future__ import annotations

import urllib.error
import urllib.request
from email.utils import parsedate_to_datetime

import orjson
import pytest

from jobsync.simulator import Account, AccountConfig, ServerOptions
from jobsync.simulator.history import DAY_MS
from jobsync.simulator.process import SimulatorProcess
from jobsync.timestamps import format_iso_ms


def get(sim: SimulatorProcess, target: str) -> tuple[int, str, object]:
    request = urllib.request.Request(
        sim.url + target, headers={"Authorization": f"Bearer {sim.options.token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers["Date"], orjson.loads(response.read())


def test_it_serves_moves_its_clock_and_reports_what_it_served() -> None:
    config = AccountConfig(flows=2, days=3)
    account = Account(config)
    listing = f"/jobs?createdAt_gte={format_iso_ms(config.start_ms - 2 * DAY_MS)}&x=%26"
    with SimulatorProcess(config, ServerOptions("t"), record_requests=True) as sim:
        status, date, flows = get(sim, "/flows")
        assert status == 200 and flows == account.flows(config.start_ms)
        assert parsedate_to_datetime(date).timestamp() * 1000 == config.start_ms
        listed_before = get(sim, listing)[2]
        sim.set_clock(config.start_ms + DAY_MS)
        _, date, listed_after = get(sim, listing)
        assert parsedate_to_datetime(date).timestamp() * 1000 == config.start_ms + DAY_MS
        assert isinstance(listed_before, list) and isinstance(listed_after, list)
        assert len(listed_after) > len(listed_before)
        assert sim.request_count() == 3
        assert sim.requests() == [("GET", "/v1/flows"), *[("GET", f"/v1{listing}")] * 2]
        assert sim.stats().by_status[200] == 3
        url = sim.url
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/flows", timeout=5)
