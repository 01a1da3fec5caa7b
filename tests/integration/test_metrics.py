"""``metrics_listen``: a real daemon serves Prometheus text at /metrics, and its alert
rules reference only metrics it exports."""

from __future__ import annotations

import json
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from akoshad.runtime.health import check_problems
from tests.helpers import (
    akoshad,
    daemon_config,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)
from tests.s3server import free_port
from tests.storegen import make_store

SYSTEM = "metricsbox"
ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "config" / "akoshad.rules.yml"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Daemon:
    """A daemon subprocess with metrics on a free port."""

    def __init__(self, tmp: Path, **extra: Any) -> None:
        self.tmp = tmp
        self.store = tmp / "store"
        self.port = free_port()
        self.log = tmp / "daemon.log"
        settings: dict[str, Any] = {
            "debounce_seconds": 0.3,
            "max_delay_seconds": 5,
            "min_upload_interval_seconds": 30,  # the default (daemon_config turns pacing off)
            "metrics_listen": f"127.0.0.1:{self.port}",
            **extra,
        }
        self.config, self.env = daemon_config(
            tmp, SYSTEM, store=False, socket_path=tmp / "akoshad.sock", **settings
        )
        self.env["HOME"] = str(tmp / "home")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_daemon(self.config, self.env, self.log)
        wait_for(self._answers, 30)

    def stop(self) -> None:
        if self.proc is not None:
            assert stop_daemon(self.proc) == 0, self.log.read_text()

    def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log.read_text()
        try:
            self.scrape()
        except OSError:
            return False
        return True

    def scrape_text(self) -> str:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            return str(resp.read().decode())

    def scrape(self) -> Samples:
        out: Samples = {}
        for family in text_string_to_metric_families(self.scrape_text()):
            for s in family.samples:
                out[(s.name, frozenset(s.labels.items()))] = s.value
        return out

    def status(self) -> dict[str, Any]:
        """The daemon's status result ({} while it does not answer yet)."""
        proc = akoshad("status", "--json", "--config", str(self.config), env=self.env)
        if proc.returncode != 0:
            return {}
        result: dict[str, Any] = json.loads(proc.stdout)
        return result

    def status_text(self) -> str:
        return akoshad("status", "--config", str(self.config), env=self.env).stdout


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def daemon(tmp_path: Path) -> Any:
    d = Daemon(tmp_path)
    make_store(d.store)
    yield d
    d.stop()


def test_metrics_after_a_change(daemon: Daemon) -> None:
    t0 = time.time()
    daemon.start()
    wait_for(
        lambda: (
            (value(daemon.scrape(), "akoshad_uploads_total", target="local", outcome="ok") or 0)
            >= 1
        ),
        60,
    )
    first = daemon.scrape()
    before = value(first, "akoshad_uploads_total", target="local", outcome="ok") or 0
    sent_before = value(first, "akoshad_bytes_sent_total", target="local") or 0

    (daemon.store / "notes.md").write_text("a change after the first upload\n" * 100)

    def uploaded() -> Samples | None:
        m = daemon.scrape()
        done = (value(m, "akoshad_uploads_total", target="local", outcome="ok") or 0) > before
        return m if done and value(m, "akoshad_pending_files") == 0 else None

    m = wait_for(uploaded, 60)
    assert (value(m, "akoshad_bytes_sent_total", target="local") or 0) > sent_before > 0
    assert value(m, "akoshad_uploads_total", target="local", outcome="failed") == 0
    last = value(m, "akoshad_last_upload_timestamp_seconds")
    assert last is not None and t0 < last <= time.time()
    assert value(m, "akoshad_target_up", target="local") == 1
    # one value for the daemon's life: changes(akoshad_start_time_seconds[...]) means a restart
    started = value(m, "akoshad_start_time_seconds")
    assert started is not None and t0 - 1 < started <= last
    assert value(first, "akoshad_start_time_seconds") == started
    assert value(m, "akoshad_pending_files") == 0
    assert value(m, "akoshad_oldest_pending_seconds") == 0
    assert value(m, "akoshad_degraded") == 0
    assert value(m, "akoshad_info", version=daemon.status()["version"], system_id=SYSTEM) == 1
    packs = value(m, "akoshad_requests_total", target="local", method="put_object_file")
    assert (packs or 0) >= 2  # a pack per upload
    assert (value(m, "akoshad_requests_total", target="local", method="put_bytes") or 0) >= 2
    assert (value(m, "akoshad_pass_duration_seconds_count", target="local") or 0) >= 2
    assert value(m, "akoshad_redactions_total") == 0
    # no drill has run: nothing claims a good one
    assert not [k for k in m if k[0] == "akoshad_last_good_drill_timestamp_seconds"]
    assert value(m, "akoshad_safe") == 1

    st = daemon.status()
    assert st["safety"]["safe"] is True and st["safety"]["reasons"] == []
    assert st["safety"]["notes"] == ["no drill yet"]
    first_line = daemon.status_text().splitlines()[0]
    assert first_line.startswith("safe since ") and first_line.endswith("(no drill yet)")


def test_a_dead_cloud_target_is_down_and_its_breaker_not_closed(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    d = Daemon(
        tmp_path,
        cloud_sync={
            "system_id": SYSTEM,
            "cloud_bucket": "akoshad",
            "cloud_endpoint": dead,
            "cloud_region": "us-east-1",
            "access_key_id": "test",
            "secret_access_key": "test-secret-never-shown",
            "max_retries": 0,
            "retry_backoff_seconds": 0.1,
        },
    )
    make_store(d.store)
    d.start()
    try:

        def open_breaker() -> Samples | None:
            m = d.scrape()
            breaker = value(m, "akoshad_breaker_state", target="cloud")
            return m if breaker is not None and breaker > 0 else None

        m = wait_for(open_breaker, 60)
        text = d.scrape_text()
        assert value(m, "akoshad_target_up", target="cloud") == 0
        assert value(m, "akoshad_degraded") == 1
        assert value(m, "akoshad_safe") == 0
        assert (
            value(m, "akoshad_requests_total", target="cloud", method="ListObjectsV2") or 0
        ) >= 1
        assert (value(m, "akoshad_pending_files") or 0) > 0
        assert "test-secret-never-shown" not in text
        st = d.status()
        assert st["safety"]["safe"] is False
        assert any(r.startswith("degraded: cloud") for r in st["safety"]["reasons"])
        assert d.status_text().splitlines()[0].startswith("UNSAFE since ")
    finally:
        d.stop()


def _rule_metrics() -> set[str]:
    doc = yaml.safe_load(RULES.read_text())
    names: set[str] = set()
    assert isinstance(doc["groups"], list) and doc["groups"]
    for group in doc["groups"]:
        assert set(group) <= {"name", "interval", "rules"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert rule["alert"] and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            assert rule["labels"]["severity"] in {"warning", "critical"}
            assert rule["annotations"]["summary"]
            assert re.fullmatch(r"\d+[smhd]", rule["for"])
            names |= set(re.findall(r"\bakoshad_[a-z_]+\b", rule["expr"]))
    return names


def test_alert_rules_reference_only_exported_metrics(daemon: Daemon) -> None:
    """Every metric the example rules use is in a real scrape (the good-drill timestamp
    only once a drill passed: the collector's unit tests show it then)."""
    referenced = _rule_metrics()
    assert {"akoshad_degraded", "akoshad_oldest_pending_seconds"} <= referenced
    assert "akoshad_last_good_drill_timestamp_seconds" in referenced
    daemon.start()
    exported = {name for name, _ in daemon.scrape()}
    missing = referenced - exported - {"akoshad_last_good_drill_timestamp_seconds"}
    assert not missing, f"rules use metrics akoshad does not export: {missing}"


def test_promtool_checks_and_tests_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not found (Debian package 'prometheus'; scripts/test.sh fetches it)")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    cases = ROOT / "tests" / "alert_rules_test.yml"
    run = subprocess.run([promtool, "test", "rules", str(cases)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_metrics_off_by_default(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    make_store(d.store)
    cfg = yaml.safe_load(d.config.read_text())
    del cfg["metrics_listen"]
    write_config(d.config, **cfg)
    d.proc = start_daemon(d.config, d.env, d.log)
    try:
        wait_for(lambda: d.status().get("last_upload"), 60)
        with pytest.raises(urllib.error.URLError):
            d.scrape_text()
    finally:
        d.stop()


def test_cloud_uploads_and_s3_requests_by_operation(
    tmp_path: Path, s3: Any, system_id: str
) -> None:
    d = Daemon(tmp_path, **s3.config_dict(system_id))
    make_store(d.store)
    d.start()
    try:

        def uploaded() -> Samples | None:
            m = d.scrape()
            ok = value(m, "akoshad_uploads_total", target="cloud", outcome="ok") or 0
            return m if ok >= 1 and value(m, "akoshad_pending_files") == 0 else None

        m = wait_for(uploaded, 60)
        assert (value(m, "akoshad_bytes_sent_total", target="cloud") or 0) > 0
        assert value(m, "akoshad_target_up", target="cloud") == 1
        assert value(m, "akoshad_breaker_state", target="cloud") == 0
        puts = value(m, "akoshad_requests_total", target="cloud", method="PutObject") or 0
        # the store's files went out packed together, then the manifest: PutObject requests,
        # fewer than one per file
        assert 2 <= puts < len([p for p in d.store.rglob("*") if p.is_file()]) + 1
        assert (
            value(m, "akoshad_requests_total", target="cloud", method="ListObjectsV2") or 0
        ) >= 1
        # the outbox beside a bucket receives nothing: no series of it (status lists it not)
        assert value(m, "akoshad_uploads_total", target="local", outcome="ok") is None
        assert value(m, "akoshad_target_up", target="local") is None
    finally:
        d.stop()


def test_a_taken_port_is_logged_and_backups_go_on(tmp_path: Path) -> None:
    d = Daemon(tmp_path)
    make_store(d.store)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", d.port))
        squatter.listen()
        d.proc = start_daemon(d.config, d.env, d.log)
        try:
            status = wait_for(lambda: (s := d.status()).get("last_upload") and s, 60)
            log = d.log.read_text()
            said = f"metrics_listen 127.0.0.1:{d.port} cannot be served"
            assert said in log
            assert "Traceback" not in log
            # shown where an operator looks, and a failed health check
            assert said in (status.get("metrics_error") or "")
            assert any(said in w for w in status["warnings"])
            assert any(said in p for p in check_problems(status))
        finally:
            d.stop()


def test_reload_keeps_the_metrics_address_until_a_restart(daemon: Daemon) -> None:
    daemon.start()
    cfg = yaml.safe_load(daemon.config.read_text())
    cfg["metrics_listen"] = f"127.0.0.1:{free_port()}"
    write_config(daemon.config, **cfg)
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "metrics_listen changed" in daemon.log.read_text(), 30)
    assert (
        value(daemon.scrape(), "akoshad_info", version=daemon.status()["version"], system_id=SYSTEM)
        == 1
    )


def test_memories_delivered_to_akosha_are_counted(tmp_path: Path, akosha_server: Any) -> None:
    d = Daemon(tmp_path, akosha_url=akosha_server.url)
    make_store(d.store)
    d.start()
    try:

        def delivered() -> Samples | None:
            m = d.scrape()
            return (
                m
                if (value(m, "akoshad_uploads_total", target="http", outcome="ok") or 0) >= 1
                else None
            )

        m = wait_for(delivered, 60)
        assert akosha_server.state()["stored"]  # it really holds them
        assert value(m, "akoshad_uploads_total", target="http", outcome="failed") == 0
        assert (value(m, "akoshad_requests_total", target="http", method="initialize") or 0) >= 1
        assert (value(m, "akoshad_requests_total", target="http", method="tools/call") or 0) >= 1
        assert value(m, "akoshad_target_up", target="http") == 1
        assert value(m, "akoshad_breaker_state", target="http") == 0
    finally:
        d.stop()


def test_idle_connections_to_metrics_cannot_starve_the_daemon_of_files(tmp_path: Path) -> None:
    """/metrics has no authentication: any local process can connect to it. Every
    connection held a file descriptor for an hour (aiohttp's idle timeout) and there was no
    cap, so a few hundred idle connections used up the daemon's descriptors: its watcher
    said the store had vanished, changes waited, and asyncio logged a traceback for every
    refused accept (thousands a second). The server now refuses connections beyond a small
    cap; backing up goes on."""
    d = Daemon(tmp_path, min_upload_interval_seconds=0)
    make_store(d.store)
    d.proc = subprocess.Popen(
        [sys.executable, "-m", "akoshad", "run", "--config", str(d.config)],
        stdout=d.log.open("ab"),
        stderr=subprocess.STDOUT,
        env=d.env,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256)),
    )
    conns: list[socket.socket] = []
    try:
        wait_for(d._answers, 30)
        wait_for(lambda: d.status().get("last_upload"), 60)
        first = d.status()["last_upload"]["upload_id"]
        for _ in range(300):
            conns.append(socket.create_connection(("127.0.0.1", d.port), timeout=5))
        time.sleep(1)
        assert len(list(Path(f"/proc/{d.proc.pid}/fd").iterdir())) < 200
        (d.store / "after_the_flood.json").write_text('{"a": 1}')
        wait_for(lambda: d.status().get("last_upload", {}).get("upload_id") != first, 30)
        for c in conns:
            c.close()
        conns.clear()
        # the daemon frees a slot when it sees the close, a moment after it: serves again
        wait_for(d._answers, 10)
        assert value(d.scrape(), "akoshad_pending_files") is not None
    finally:
        for c in conns:
            c.close()
        d.stop()
    log = d.log.read_text()
    assert "Too many open files" not in log and "Traceback" not in log
    assert "waiting for" not in log


def test_healthy_follows_status_check_through_a_missing_data_dir(daemon: Daemon) -> None:
    """A store gone away (unmounted) fails ``status --check``; the shipped rules see it in
    ``akoshad_healthy`` (no other metric moves: nothing pending, no target down), and it
    is 1 again once the store is back."""
    daemon.start()

    def settled() -> bool:
        m = daemon.scrape()
        done = value(m, "akoshad_uploads_total", target="local", outcome="ok") or 0
        return done >= 1 and value(m, "akoshad_pending_files") == 0

    wait_for(settled, 60)
    assert value(daemon.scrape(), "akoshad_healthy") == 1
    away = daemon.tmp / "store.away"
    daemon.store.rename(away)

    def unhealthy() -> Samples | None:
        m = daemon.scrape()
        return m if value(m, "akoshad_healthy") == 0 else None

    m = wait_for(unhealthy, 30)
    assert value(m, "akoshad_degraded") == 0 and value(m, "akoshad_pending_files") == 0
    assert check_problems(daemon.status())  # what `status --check` says, word for word
    away.rename(daemon.store)
    wait_for(lambda: value(daemon.scrape(), "akoshad_healthy") == 1, 60)
    assert check_problems(daemon.status()) == []
