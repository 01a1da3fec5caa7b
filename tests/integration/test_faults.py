"""Fault injection between akoshad and its servers: every change still arrives, once."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.akosha_fixtures import AkoshaServer
from tests.faultproxy import FaultPlan, FaultProxy
from tests.integration.test_chain_http import _add_rows
from tests.integration.test_pipeline_local import SYSTEM, Setup, _assert_restored_equals
from tests.s3server import WeedServer
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


def test_s3_path_under_30_percent_faults(tmp_path: Path, s3: WeedServer, system_id: str) -> None:
    proxy = FaultProxy(
        s3.endpoint, FaultPlan(error=0.15, reset=0.1, stall=0.05, stall_seconds=1.0, seed=5)
    ).start()
    try:
        s = Setup(
            tmp_path,
            cloud_sync=s3.cloud_sync(
                system_id, cloud_endpoint=proxy.url, max_retries=3, retry_backoff_seconds=0.1
            ),
        )
        make_store(s.store)
        (s.store / "big.bin").write_bytes(os.urandom(12 * 1024 * 1024))  # multipart
        runs = 0
        for round_ in range(3):
            if round_:
                (s.store / f"round-{round_}.json").write_text(json.dumps({"r": round_}))
                (s.store / "big.bin").write_bytes(os.urandom(11 * 1024 * 1024))
            for _attempt in range(30):
                res = s.once()
                runs += 1
                assert "Traceback" not in res.stderr
                if res.returncode == 0:
                    break
            else:
                pytest.fail("never converged under faults")
        print(
            f"S3 faults injected: {dict(proxy.stats.faults)}, forwarded: "
            f"{proxy.stats.forwarded}, runs: {runs}"
        )
        assert proxy.stats.injected >= 5
    finally:
        proxy.stop()
    # every object is correct, read straight from the server (no proxy)
    (tmp_path / "direct").mkdir()
    direct = Setup(tmp_path / "direct", cloud_sync=s3.cloud_sync(system_id))
    res = direct.cli("verify", "--all")
    assert res.returncode == 0, res.stdout + res.stderr
    restored = tmp_path / "restored"
    direct.cli("restore", "--latest", "--dest", str(restored), check=True)
    _assert_restored_equals(s.store, restored)
    assert (restored / "big.bin").read_bytes() == (s.store / "big.bin").read_bytes()
    assert (restored / "round-2.json").exists()
    assert s3.multipart_uploads(f"systems/{system_id}/") == []
