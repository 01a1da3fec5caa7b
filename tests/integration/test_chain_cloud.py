"""The fallback chain with a real S3 server and a real MCP server: nothing is lost, nothing
is sent twice, and a dead endpoint does not slow the pipeline down."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from tests.akosha_fixtures import AkoshaServer
from tests.helpers import akoshad, start_daemon, stop_daemon, wait_for
from tests.integration.test_chain_http import _add_rows
from tests.integration.test_pipeline_s3 import S3Setup
from tests.s3server import WeedServer
from tests.storegen import make_store


def _setup(tmp_path: Path, s3: WeedServer, system_id: str, akosha: AkoshaServer) -> S3Setup:
    s = S3Setup(tmp_path, s3, system_id)
    s.config.write_text(s.config.read_text() + f"akosha_url: {akosha.url}\n")
    make_store(s.store, conversations=20)
    return s


def _status(s: S3Setup) -> dict:  # type: ignore[type-arg]
    """The daemon's status, or {} while it does not answer yet."""
    res = akoshad("status", "--json", "--config", str(s.config), env=s.env)
    return json.loads(res.stdout) if res.returncode == 0 else {}  # type: ignore[no-any-return]


def test_cloud_down_http_up_then_cloud_back(
    tmp_path: Path, s3: WeedServer, system_id: str, akosha_server: AkoshaServer
) -> None:
    s = _setup(tmp_path, s3, system_id, akosha_server)
    s3.stop()
    proc = start_daemon(s.config, s.env, tmp_path / "d.log")
    try:
        wait_for(lambda: len(akosha_server.stored()) == 25, 30)
        _add_rows(s.store / "reflection.duckdb", ["late-1", "late-2"])
        wait_for(lambda: len(akosha_server.stored()) == 27, 30)
        st = _status(s)
        assert st["state"] == "degraded"
        assert st["targets"]["cloud"]["available"] is False
        assert st["targets"]["cloud"]["last_error"]
        assert st["targets"]["http"]["available"] is True
        assert st["pending"] >= 1  # the file backup waits for the cloud
    finally:
        assert stop_daemon(proc) == 0
    proc = start_daemon(s.config, s.env, tmp_path / "d2.log")  # a restart: nothing resent
    try:
        # the startup check of what Akosha has ran (and sent nothing again)
        wait_for(lambda: (_status(s).get("memories") or {}).get("last_success_at"), 30)
        assert max(akosha_server.sent_counts().values()) == 1
        s3.start()
        wait_for(lambda: s.manifests(), 60)  # lands without any command
        m = s.manifests()[-1]
        assert len(m["metadata"]["files"]) == 8
        assert "memories.json" in m["files"] and m["conversation_count"] == 27
    finally:
        assert stop_daemon(proc) == 0
    assert max(akosha_server.sent_counts().values()) == 1
    assert len(akosha_server.sent_counts()) == 27


def test_both_down_nothing_lost(
    tmp_path: Path, s3: WeedServer, system_id: str, akosha_server: AkoshaServer
) -> None:
    s = _setup(tmp_path, s3, system_id, akosha_server)
    s3.stop()
    akosha_server.stop()
    proc = start_daemon(s.config, s.env, tmp_path / "d.log")
    try:
        wait_for(
            lambda: _status(s).get("targets", {}).get("http", {}).get("available") is False, 30
        )
        st = _status(s)
        assert st["state"] == "degraded" and st["degraded_reason"]
    finally:
        assert stop_daemon(proc) == 0
    res = s.once()  # across a restart the queue is intact; still nothing reachable
    assert res.returncode == 1
    con = sqlite3.connect(s.state / "state.db")
    queued = {r[0] for r in con.execute("SELECT path FROM queue")}
    con.close()
    assert len(queued) == 8 and "reflection.duckdb" in queued
    s3.start()
    akosha_server.start()
    res = s.once()
    assert res.returncode == 0, res.stderr
    assert len(akosha_server.stored()) == 25
    assert len(s.manifests()) == 1


def test_dead_cloud_does_not_slow_the_drain(
    tmp_path: Path, s3: WeedServer, system_id: str, akosha_server: AkoshaServer
) -> None:
    (tmp_path / "up").mkdir()
    up = _setup(tmp_path / "up", s3, system_id, akosha_server)
    t0 = time.monotonic()
    assert up.once().returncode == 0
    reachable = time.monotonic() - t0
    down_dir = tmp_path / "down"
    down_dir.mkdir()
    down = S3Setup(down_dir, s3, system_id + "d", cloud_endpoint="http://127.0.0.1:9")
    down.config.write_text(down.config.read_text() + f"akosha_url: {akosha_server.url}\n")
    make_store(down.store, conversations=20, seed=2)
    t0 = time.monotonic()
    assert down.once().returncode == 1
    unreachable = time.monotonic() - t0
    print(f"drain with the cloud reachable: {reachable:.2f} s; unreachable: {unreachable:.2f} s")
    assert unreachable < reachable + 5
    assert len(akosha_server.stored()) == 50  # memories went over HTTP all the same


def test_requests_the_s3_target_sends_again_are_counted_as_retries(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """A down server: each request the S3 target sends again shows in the status's
    ``retries`` (and so in ``akoshad_retries_total``), which stayed 0 while S3 requests
    were retried for minutes."""
    s = S3Setup(tmp_path, s3, system_id)
    make_store(s.store, conversations=5)
    proc = start_daemon(s.config, s.env, tmp_path / "d.log")
    try:
        wait_for(lambda: s.manifests(), 60)
        assert _status(s)["counters"]["retries"] == 0
        s3.stop()
        (s.store / "notes.md").write_text("written while the server is down")
        # the retries show while the pass still tries (before it is over and the target
        # marked down: each pass first looks for the last upload, a HEAD retried too)
        wait_for(lambda: (_status(s).get("counters") or {}).get("retries", 0) >= 2, 60)
        wait_for(lambda: _status(s)["targets"]["cloud"]["available"] is False, 60)
    finally:
        if s3.proc is None:
            s3.start()
        assert stop_daemon(proc) == 0


def test_an_answered_drill_ends_the_wait_for_the_circuit(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """S3 back after an outage: a drill the server answered (any request of the daemon)
    tells the circuit breaker, so the changes it held back go up at once, not at its next
    probe (here 2 minutes away; up to 5 in a long outage); "target cloud answers again" is
    logged once."""
    # retry_backoff_seconds 30: the circuit's first interval is 120 s; no request is sent
    # again, so a try of the down server fails at once
    s = S3Setup(tmp_path, s3, system_id, retry_backoff_seconds=30, max_retries=0)
    s.config.write_text(
        s.config.read_text() + "min_upload_interval_seconds: 0\ndrill_interval_hours: 0\n"
    )
    make_store(s.store, conversations=5)
    log = tmp_path / "d.log"
    proc = start_daemon(s.config, s.env, log)
    try:
        wait_for(lambda: s.manifests(), 60)
        s3.stop()
        n = 0

        def circuit_open() -> bool:
            nonlocal n
            n += 1  # a change each time: a pass each time, until the circuit opens
            (s.store / "notes.md").write_text(f"written while the server is down ({n})")
            time.sleep(0.5)
            return bool(_status(s).get("targets", {}).get("cloud", {}).get("circuit") == "open")

        wait_for(circuit_open, 60)
        opened = time.monotonic()
        s3.start()
        res = s.cli("drill", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        wait_for(lambda: len(s.manifests()) >= 2, 30)
        assert time.monotonic() - opened < 100, "waited for the circuit's own probe"
        assert _status(s)["targets"]["cloud"]["circuit"] == "closed"
        latest = s.manifests()[-1]
        assert "notes.md" in {f["path"] for f in latest["metadata"]["files"]}
    finally:
        if s3.proc is None:
            s3.start()
        assert stop_daemon(proc) == 0
    text = log.read_text()
    assert text.count("target cloud answers again") == 1, text
    assert "Traceback" not in text
