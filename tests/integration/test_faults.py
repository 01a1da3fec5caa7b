"""Fault injection between akoshad and its servers: every change still arrives, once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.akosha_fixtures import AkoshaServer
from tests.faultproxy import FaultPlan, FaultProxy
from tests.integration.test_chain_http import _add_rows
from tests.integration.test_pipeline_local import SYSTEM, Setup
from tests.storegen import make_store


@pytest.fixture
def akosha_proxy(akosha_server: AkoshaServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(
        akosha_server.origin,
        FaultPlan(error=0.15, reset=0.1, stall=0.05, stall_seconds=1.0, seed=3),
    ).start()
    yield proxy
    proxy.stop()


def test_http_path_under_30_percent_faults(
    tmp_path: Path, akosha_server: AkoshaServer, akosha_proxy: FaultProxy
) -> None:
    s = Setup(
        tmp_path,
        akosha_url=akosha_proxy.url + "/mcp",
        cloud_sync={"system_id": SYSTEM, "retry_backoff_seconds": 0.1},
    )
    make_store(s.store, conversations=40)
    outcomes = []
    for round_ in range(3):
        if round_:
            _add_rows(s.store / "reflection.duckdb", [f"r{round_}-{i}" for i in range(5)])
        for _attempt in range(30):
            res = s.once()
            outcomes.append(res.returncode)
            assert "Traceback" not in res.stderr
            if res.returncode == 0:
                break
        else:
            pytest.fail("never converged under faults")
    counts = akosha_server.sent_counts()
    assert len(akosha_server.stored()) == 45 + 10
    assert akosha_proxy.stats.injected > 0
    print(
        f"faults injected: {dict(akosha_proxy.stats.faults)}, forwarded: "
        f"{akosha_proxy.stats.forwarded}, runs: {len(outcomes)}"
    )
    # a request cut before reaching the server is resent; one that was stored never is
    stored_twice = [k for k, v in counts.items() if v > 1]
    assert not stored_twice, stored_twice


def test_http_endpoint_down_for_a_while(
    tmp_path: Path, akosha_server: AkoshaServer, akosha_proxy: FaultProxy
) -> None:
    akosha_proxy.set_plan(FaultPlan())
    s = Setup(tmp_path, akosha_url=akosha_proxy.url + "/mcp")
    make_store(s.store, conversations=10)
    akosha_proxy.down()
    assert s.once().returncode == 1
    akosha_proxy.up()
    assert s.once().returncode == 0
    assert len(akosha_server.stored()) == 15
