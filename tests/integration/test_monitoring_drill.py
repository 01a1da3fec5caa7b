"""Drills seen from outside: a daemon that drills by itself shows the result in status,
in /metrics and at a webhook receiver, and a tampered object reaches the receiver as a
``drill`` event with ``ok: false`` without any command."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import start_daemon, stop_daemon, wait_for
from tests.integration.test_drill import _tamper
from tests.integration.test_pipeline_local import SYSTEM, Setup
from tests.s3server import free_port
from tests.storegen import make_store
from tests.webhook_receiver import Receiver

SECRET = "drill-hook-secret-0451"


def _metric(port: int, name: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return None


def _metric_or_none(port: int, name: str) -> float | None:
    """``_metric``, or None while nothing listens yet."""
    try:
        return _metric(port, name)
    except OSError:
        return None


def _status(s: Setup) -> dict[str, Any]:
    res = s.cli("status", "--json")
    return dict(json.loads(res.stdout)) if res.returncode == 0 else {}


def _drill_events(rx: Receiver) -> list[dict[str, Any]]:
    return [e.payload for e in rx.events("drill") if e.signature_ok]


def test_drills_reach_status_metrics_and_webhooks_and_find_tampering(tmp_path: Path) -> None:
    rx = Receiver(secret=SECRET).start()
    port = free_port()
    try:
        s = Setup(
            tmp_path,
            drill_interval_hours=0.0005,  # about every 2 s
            metrics_listen=f"127.0.0.1:{port}",
            webhooks=[{"url": rx.url(), "secret": SECRET, "events": ["drill", "upload"]}],
        )
        make_store(s.store)
        proc = start_daemon(s.config, s.env, tmp_path / "d.log")
        try:
            good = wait_for(lambda: [e for e in _drill_events(rx) if e["ok"]], 90)[0]
            manifest = s.manifests()[-1]
            assert good["upload_id"] == manifest["metadata"]["upload_id"]
            assert good["system_id"] == SYSTEM and good["problems"] == []
            st = wait_for(lambda: (x := _status(s)).get("last_drill") and x, 20)
            assert st["last_drill"]["ok"] is True
            good_at = wait_for(
                lambda: _metric(port, "akoshad_last_good_drill_timestamp_seconds"), 20
            )
            assert good_at > 0

            _tamper(s.outbox, manifest, "activity.db")  # behind the daemon's back
            bad = wait_for(lambda: [e for e in _drill_events(rx) if not e["ok"]], 60)[0]
            assert bad["upload_id"] == manifest["metadata"]["upload_id"]
            assert [p.split(":")[0] for p in bad["problems"]] == ["activity.db"]
            st = wait_for(lambda: (x := _status(s))["last_drill"]["ok"] is False and x, 20)
            assert st["safety"]["safe"] is False
            # the last GOOD drill stays what it was: the gauge does not move forward
            assert _metric(port, "akoshad_last_good_drill_timestamp_seconds") == good_at
        finally:
            assert stop_daemon(proc) == 0
        # a restart after the bad drill: the last good drill is still known (it was
        # absent, so the alert on an old good drill stopped firing while drills failed)
        proc = start_daemon(s.config, s.env, tmp_path / "d2.log")
        try:
            wait_for(lambda: _metric_or_none(port, "akoshad_last_drill_ok") == 0, 30)
            assert _metric(port, "akoshad_last_good_drill_timestamp_seconds") == good_at
        finally:
            assert stop_daemon(proc) == 0
    finally:
        rx.stop()
