"""Webhooks end to end: a daemon subprocess (local target) and real aiohttp receivers."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from tests.helpers import akoshad, start_daemon, stop_daemon, wait_for
from tests.integration.test_pipeline_local import Setup
from tests.s3server import free_port
from tests.storegen import make_store
from tests.webhook_receiver import Receiver

SECRET = "whsec-Kx9-very-secret-value"
PASSWORD = "pw-Zq7-url-password"


def _setup(tmp: Path, hooks: list[dict[str, Any]], **extra: Any) -> Setup:
    s = Setup(
        tmp,
        webhooks=hooks,
        cloud_sync={"system_id": "testbox", "retry_backoff_seconds": 0.1},
        **extra,
    )
    make_store(s.store)
    return s


def _status(s: Setup) -> dict[str, Any]:
    res = akoshad("status", "--json", "--config", str(s.config), env=s.env)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def _upload_ids(s: Setup) -> set[str]:
    return {m["metadata"]["upload_id"] for m in s.manifests()}


def _assert_no_secrets(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text
        assert PASSWORD not in text


def test_upload_event_is_signed_and_secrets_stay_hidden(tmp_path: Path) -> None:
    rx = Receiver(secret=SECRET).start()
    try:
        s = _setup(tmp_path, [{"url": rx.url(f"alice:{PASSWORD}"), "secret": SECRET}])
        log = tmp_path / "d.log"
        proc = start_daemon(s.config, s.env, log)
        try:
            first = wait_for(lambda: rx.events("upload"), 30)[0]
            assert first.signature_ok, first.headers
            assert first.headers["Content-Type"] == "application/json"
            assert first.headers["Authorization"].startswith("Basic ")  # userinfo became auth
            p = first.payload
            assert p["system_id"] == "testbox" and p["method"] == "local"
            assert p["upload_id"] in _upload_ids(s)
            assert p["files"] == 8 and p["bytes_sent"] > 0 and isinstance(p["at"], float)
            (s.store / "akosha_sync_state.json").write_text('{"changed": 1}')
            second = wait_for(lambda: rx.events("upload")[1:], 30)[0]
            assert second.signature_ok and second.payload["files"] == 1
            assert second.payload["upload_id"] != p["upload_id"]
            st = wait_for(lambda: (x := _status(s))["webhooks"][0]["delivered"] >= 2 and x, 10)
            (hook,) = st["webhooks"]
            assert hook["url"] == f"http://127.0.0.1:{rx.port}/hook"
            assert hook["pending"] == 0 and hook["dropped"] == 0 and hook["last_error"] is None
            assert hook["last_success_at"] is not None
            status_text = json.dumps(st)
            shown = akoshad("config", "show", "--config", str(s.config), env=s.env)
            assert shown.returncode == 0 and f"127.0.0.1:{rx.port}/hook" in shown.stdout
            config_text = shown.stdout
        finally:
            assert stop_daemon(proc) == 0
        _assert_no_secrets(log.read_text(), status_text, config_text)
        _assert_no_secrets((s.state / "state.db").read_bytes().decode("latin-1"))
    finally:
        rx.stop()


def test_receiver_down_then_up_gets_every_event_across_a_restart(tmp_path: Path) -> None:
    rx = Receiver(secret=SECRET)  # not started: connection refused
    s = _setup(tmp_path, [{"url": rx.url(f"bob:{PASSWORD}"), "secret": SECRET}])
    log = tmp_path / "d.log"
    proc = start_daemon(s.config, s.env, log)
    try:
        wait_for(lambda: len(s.manifests()) == 1, 30)
        st = wait_for(lambda: (x := _status(s))["webhooks"][0]["last_error"] and x, 15)
        assert st["webhooks"][0]["pending"] >= 1
        assert "cannot connect" in st["webhooks"][0]["last_error"]
        # broken alerting shows in the status's warnings (the URL as redacted)
        (warning,) = [w for w in st["warnings"] if w.startswith("webhook ")]
        assert "cannot connect" in warning and "its events are not delivered" in warning
        assert PASSWORD not in warning
    finally:
        assert stop_daemon(proc) == 0
    (s.store / "akosha_sync_state.json").write_text('{"changed": 2}')
    proc = start_daemon(s.config, s.env, log)
    try:
        wait_for(lambda: len(s.manifests()) == 2, 30)
        wait_for(lambda: _status(s)["webhooks"][0]["pending"] >= 2, 15)
        rx.start()
        wanted = _upload_ids(s)
        got = wait_for(
            lambda: (
                (ids := {r.payload["upload_id"] for r in rx.events("upload")}) >= wanted and ids
            ),
            60,
        )
        assert got == wanted
        assert all(r.signature_ok for r in rx.events())
        ordered = [r.payload["upload_id"] for r in rx.events("upload")]
        assert ordered == sorted(ordered)  # one webhook's events arrive in order
        wait_for(lambda: _status(s)["webhooks"][0]["pending"] == 0, 15)
        assert not [w for w in _status(s)["warnings"] if w.startswith("webhook ")]
    finally:
        assert stop_daemon(proc) == 0
        rx.stop()
    text = log.read_text()
    assert "webhook http://127.0.0.1" in text  # the failure was logged, redacted
    _assert_no_secrets(text)


def test_hanging_webhook_delays_neither_uploads_nor_other_webhooks(tmp_path: Path) -> None:
    hang = Receiver(secret=SECRET, mode="hang").start()
    good = Receiver(secret=SECRET).start()
    try:
        s = _setup(
            tmp_path,
            [
                {"url": hang.url(), "secret": SECRET},
                {"url": good.url(), "secret": SECRET, "events": ["upload"]},
            ],
            min_upload_interval_seconds=0,  # each change an upload of its own, timed
        )
        proc = start_daemon(s.config, s.env, tmp_path / "d.log")
        try:
            wait_for(lambda: hang.events("upload"), 30)  # its worker is now stuck
            for i in range(3):
                before = len(s.manifests())
                t0 = time.monotonic()
                (s.store / "akosha_sync_state.json").write_text(json.dumps({"n": i}))
                wait_for(lambda b=before: len(s.manifests()) > b, 15)  # type: ignore[misc]
                assert time.monotonic() - t0 < 8.0  # debounce 0.3 s + a pass, not the 10 s timeout
                wait_for(lambda n=i: len(good.events("upload")) >= n + 2, 6)  # type: ignore[misc]
            st = _status(s)
            assert st["webhooks"][0]["pending"] >= 4
            assert st["webhooks"][1]["pending"] == 0
            assert all(r.signature_ok for r in good.events())
        finally:
            t0 = time.monotonic()
            assert stop_daemon(proc) == 0
            assert time.monotonic() - t0 < 10  # a hanging POST does not hold up the stop
    finally:
        hang.stop()
        good.stop()


def test_run_once_delivers_and_keeps_what_it_could_not_send(tmp_path: Path) -> None:
    rx = Receiver(secret=SECRET)  # down for the first run
    s = _setup(tmp_path, [{"url": rx.url(), "secret": SECRET}])
    t0 = time.monotonic()
    res = s.once()
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - t0 < 30  # a dead webhook costs run --once little
    assert "webhook events stay queued" in res.stderr or "cannot connect" in res.stderr
    rx.start()
    try:
        (s.store / "akosha_sync_state.json").write_text('{"changed": 4}')
        res = s.once()
        assert res.returncode == 0, res.stderr
        got = [r.payload["upload_id"] for r in rx.events("upload")]
        assert got == sorted(_upload_ids(s))  # the queued one first, then the new one
        assert all(r.signature_ok for r in rx.events())
    finally:
        rx.stop()


def test_data_dir_gone_sends_one_failure_across_a_restart_then_recovered(tmp_path: Path) -> None:
    """A data_dir moved away stops backups with no pass failing and no target down: one
    ``failure`` (kind data_dir) once it held 30 s, none again after a restart, and
    ``recovered`` once it is back."""
    rx = Receiver(secret=SECRET).start()
    try:
        s = _setup(tmp_path, [{"url": rx.url(), "secret": SECRET}])
        log = tmp_path / "d.log"
        proc = start_daemon(s.config, s.env, log)
        try:
            wait_for(lambda: rx.events("upload"), 30)
            moved = tmp_path / "moved-away"
            s.store.rename(moved)
            failure = wait_for(lambda: rx.events("failure"), 60)[0].payload
            assert failure["kind"] == "data_dir" and failure["failed"] == 0
            assert str(s.store) in failure["error"]
            assert _status(s)["safety"]["safe"] is False
        finally:
            assert stop_daemon(proc) == 0
        proc = start_daemon(s.config, s.env, log)
        try:
            time.sleep(40)  # longer than the 30 s a problem must hold
            assert len(rx.events("failure")) == 1  # the restart sent no second one
            moved.rename(s.store)
            back = wait_for(lambda: rx.events("recovered"), 60)[0].payload
            assert back["kind"] == "data_dir" and back["after_seconds"] > 30
            assert "target" not in back
        finally:
            assert stop_daemon(proc) == 0
        assert len(rx.events("failure")) == 1 and len(rx.events("recovered")) == 1
        assert all(r.signature_ok for r in rx.events())
    finally:
        rx.stop()


def test_akosha_down_sends_a_failure_for_target_http(tmp_path: Path) -> None:
    """Memories that cannot reach Akosha: a ``failure`` event (target http), as a failed
    upload sends one, beside the target's ``degraded``; before, only ``degraded``."""
    rx = Receiver().start()
    try:
        dead = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
        s = _setup(tmp_path, [{"url": rx.url()}], akosha_url=dead)
        log = tmp_path / "d.log"
        proc = start_daemon(s.config, s.env, log)
        try:
            failure = wait_for(lambda: rx.events("failure"), 60)[0].payload
            assert failure["target"] == "http" and failure["failed"] == 0
            assert failure["error"].startswith("memories not delivered to Akosha: ")
            degraded = wait_for(lambda: rx.events("degraded"), 30)[0].payload
            assert degraded["target"] == "http"
        finally:
            assert stop_daemon(proc) == 0
    finally:
        rx.stop()


def test_an_emptied_target_sends_a_failure_while_running_and_at_a_start(tmp_path: Path) -> None:
    """An outbox emptied by hand (or a bucket by a lifecycle rule): the uploads made before
    are gone. Before, only a log WARNING said so; now a ``failure`` (kind target_emptied),
    found before the next pass and at a start."""
    rx = Receiver().start()
    try:
        s = _setup(tmp_path, [{"url": rx.url()}])
        log = tmp_path / "d.log"

        def empty_outbox() -> None:
            for entry in s.outbox.iterdir():
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()

        proc = start_daemon(s.config, s.env, log)
        try:
            wait_for(lambda: rx.events("upload"), 30)
            empty_outbox()
            (s.store / "akosha_sync_state.json").write_text('{"changed": 1}')
            failure = wait_for(lambda: rx.events("failure"), 30)[0].payload
            assert failure["kind"] == "target_emptied" and failure["target"] == "local"
            assert "no longer holds upload" in failure["error"]
            wait_for(lambda: len(rx.events("upload")) == 2, 30)  # the whole store again
            assert rx.events("upload")[1].payload["files"] == 8
        finally:
            assert stop_daemon(proc) == 0
        empty_outbox()
        proc = start_daemon(s.config, s.env, log)
        try:
            wait_for(lambda: len(rx.events("failure")) == 2, 30)
            assert rx.events("failure")[1].payload["kind"] == "target_emptied"
        finally:
            assert stop_daemon(proc) == 0
    finally:
        rx.stop()
