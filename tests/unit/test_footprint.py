"""The daemon's resident footprint: what it leaves unimported when a feature is off.

A fresh interpreter imports the daemon and wires its parts exactly as ``akoshad run`` does
(S3 and Akosha configured); ``sys.modules`` then tells what was loaded. The idle figure
itself is measured by ``bench/soak.py --idle-rss`` (README, "Resident memory").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from akoshad.pipeline.report import PassReport
from akoshad.runtime.pass_metrics import NoMetrics, make_metrics
from akoshad.targets.local import LocalTarget

WIRE = """
import asyncio, json, sys
from contextlib import AsyncExitStack
import akoshad.runtime.daemon
from akoshad.config import load_settings
from akoshad.runtime.wiring import wire
overrides = json.loads(sys.argv[1])

async def main():
    settings = load_settings(environ={"HOME": overrides.pop("home")}, overrides=overrides)
    async with AsyncExitStack() as stack:
        parts = await wire(settings, stack, stop_event=asyncio.Event(), wake=asyncio.Event())
        return sorted(parts.targets), type(parts.metrics).__name__

targets, metrics = asyncio.run(main())
watched = ("aiohttp.web", "prometheus_client", "akoshad.runtime.metrics", "akoshad.restore.drill",
           "duckdb", "boto3", "aioboto3")
print(json.dumps({"targets": targets, "metrics": metrics,
                  "loaded": [m for m in watched if m in sys.modules]}))
"""


def wired(tmp_path: Path, **extra: object) -> dict[str, object]:
    overrides = {
        "home": str(tmp_path),
        "data_dir": str(tmp_path / "data"),
        "state_dir": str(tmp_path / "state"),
        "local_target_dir": str(tmp_path / "outbox"),
        "akosha_url": "http://127.0.0.1:9/mcp",
        "cloud_sync": {
            "cloud_bucket": "bucket",
            "cloud_endpoint": "http://127.0.0.1:9",
            "cloud_region": "us-east-1",
            "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": "not-a-secret-0123456789",
        },
        **extra,
    }
    (tmp_path / "data").mkdir()
    out = subprocess.run(
        [sys.executable, "-c", WIRE, json.dumps(overrides)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_idle_daemon_loads_no_metrics_nor_drill_code(tmp_path: Path) -> None:
    result = wired(tmp_path)  # drills on (every 24 h): their code loads at the first drill
    # nor boto3's layer: the S3 client is aiobotocore's own
    assert result["targets"] == ["cloud", "local"]
    assert result["metrics"] == "NoMetrics"
    assert result["loaded"] == []


def test_daemon_with_metrics_listen_imports_prometheus(tmp_path: Path) -> None:
    # the counterpart: the check above would see the modules if they were loaded
    result = wired(tmp_path, metrics_listen="127.0.0.1:9464")
    assert result["metrics"] == "Metrics"
    assert result["loaded"] == ["prometheus_client", "akoshad.runtime.metrics"]


def test_no_metrics_keeps_the_pass_duration_status_reads(tmp_path: Path) -> None:
    metrics = make_metrics(None)
    assert isinstance(metrics, NoMetrics)
    assert metrics.last_pass_seconds is None
    metrics.targets_known(["local", "cloud"])
    metrics.pass_done(PassReport(target="local"), 2.5)
    assert metrics.last_pass_seconds == 2.5
    target = LocalTarget(tmp_path / "outbox")
    assert metrics.counted(target) is target
    metrics.count("http", "tools/call")  # counts nothing, raises nothing
    assert metrics.last_pass_seconds == 2.5
