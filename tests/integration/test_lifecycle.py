"""Signals and shutdown: finish or persist the work in hand, a second signal exits at once."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.helpers import akoshad, daemon_config, manifests, start_daemon, wait_for
from tests.stalled_s3 import StalledServer, stalled_cloud


def _setup(tmp_path: Path, **extra: Any) -> tuple[Path, dict[str, str]]:
    return daemon_config(tmp_path, "life", **extra)


def _warnings(cfg: Path, env: dict[str, str]) -> list[str]:
    res = akoshad("status", "--json", "--config", str(cfg), env=env)
    assert res.returncode == 0, res.stderr
    return list(json.loads(res.stdout)["warnings"])


def test_sigterm_exits_zero_and_keeps_queue(tmp_path: Path) -> None:
    cfg, env = _setup(tmp_path, drain_deadline_seconds=5)
    proc = start_daemon(cfg, env, tmp_path / "d.log")
    wait_for(lambda: manifests(tmp_path / "outbox", "life"), 20)
    # a change still inside the debounce window when SIGTERM arrives
    (tmp_path / "store" / "late.json").write_text("{}")
    time.sleep(0.15)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    con = sqlite3.connect(tmp_path / "state" / "state.db")
    queued = {r[0] for r in con.execute("SELECT path FROM queue")}
    con.close()
    uploaded = {
        f["path"] for m in manifests(tmp_path / "outbox", "life") for f in m["metadata"]["files"]
    }
    # the change was either uploaded before exit or persisted on the queue: never lost
    assert "late.json" in queued | uploaded


def test_sigint_is_like_sigterm(tmp_path: Path) -> None:
    cfg, env = _setup(tmp_path)
    proc = start_daemon(cfg, env, tmp_path / "d.log")
    wait_for(lambda: manifests(tmp_path / "outbox", "life"), 20)
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(40) == 0  # as stop_daemon: a loaded 2-core CI machine is slow
    except BaseException:
        proc.kill()
        print((tmp_path / "d.log").read_text())  # shown by pytest with the failure
        raise


def test_second_signal_forces_exit_during_a_long_upload(tmp_path: Path) -> None:
    stalled = StalledServer()  # every upload hangs: the pass in hand cannot finish
    cfg, env = _setup(
        tmp_path,
        drain_deadline_seconds=600,
        cloud_sync=stalled_cloud(stalled, "life", upload_timeout_seconds=600),
    )
    log = tmp_path / "d.log"
    proc = start_daemon(cfg, env, log)
    try:
        wait_for(lambda: stalled.conns, 60)  # the first upload is in hand
        proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "SIGTERM received: shutting down" in log.read_text(), 20)
        assert proc.poll() is None  # the shutdown waits for the pass (deadline 600 s)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(5)  # the second signal: out at once, not after the deadline
        assert code != 0
        assert "second SIGTERM: exiting now" in log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stalled.close()
    # whatever the forced exit left, the next run (the bucket gone) converges
    cfg, env = _setup(tmp_path, store=False)
    proc = start_daemon(cfg, env, tmp_path / "d2.log")
    try:
        wait_for(lambda: manifests(tmp_path / "outbox", "life"), 120)
        files = {f["path"] for f in manifests(tmp_path / "outbox", "life")[-1]["metadata"]["files"]}
        assert "reflection.duckdb" in files
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def test_sighup_reload_refuses_garbage_and_applies_valid(tmp_path: Path) -> None:
    cfg, env = _setup(tmp_path)
    good = cfg.read_text()
    log = tmp_path / "d.log"
    proc = start_daemon(cfg, env, log)
    try:
        wait_for(lambda: manifests(tmp_path / "outbox", "life"), 20)
        cfg.write_text("debounce_seconds: [this is: not valid\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in log.read_text(), 10)
        assert proc.poll() is None
        readable = tmp_path / "readable.yaml"  # where the CLI finds the daemon's socket
        readable.write_text(good)
        assert any(w.startswith("reload refused") for w in _warnings(readable, env))  # shown
        check = akoshad("status", "--check", "--config", str(readable), env=env)
        assert check.returncode == 1 and "UNHEALTHY: reload refused" in check.stdout
        assert "exit 78" in check.stdout
        # still working on the old configuration
        (tmp_path / "store" / "after-garbage.json").write_text("{}")
        wait_for(
            lambda: any(
                "after-garbage.json" in {f["path"] for f in m["metadata"]["files"]}
                for m in manifests(tmp_path / "outbox", "life")
            ),
            10,
        )
        cfg.write_text(good + "exclude: ['ignored/**']\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in log.read_text(), 10)
        (tmp_path / "store" / "ignored").mkdir()
        (tmp_path / "store" / "ignored" / "x.json").write_text("{}")
        (tmp_path / "store" / "kept.json").write_text("{}")
        wait_for(
            lambda: any(
                "kept.json" in {f["path"] for f in m["metadata"]["files"]}
                for m in manifests(tmp_path / "outbox", "life")
            ),
            10,
        )
        last = manifests(tmp_path / "outbox", "life")[-1]
        assert "ignored/x.json" not in {f["path"] for f in last["metadata"]["files"]}
        assert not any(w.startswith("reload refused") for w in _warnings(cfg, env))
        check = akoshad("status", "--json", "--config", str(cfg), env=env)
        assert json.loads(check.stdout)["reload_refused"] is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


def test_a_file_edited_and_not_reloaded_fails_status_check(tmp_path: Path) -> None:
    """The running configuration is not the file's until a reload: ``status --check`` says
    which settings wait, or that the file would be refused (the next start exits 78)."""
    cfg, env = _setup(tmp_path)
    good = cfg.read_text()
    proc = start_daemon(cfg, env, tmp_path / "d.log")
    try:
        wait_for(lambda: manifests(tmp_path / "outbox", "life"), 20)
        cfg.write_text(good + "# a comment changes no setting\n")
        check = akoshad("status", "--check", "--config", str(cfg), env=env)
        assert check.returncode == 0, check.stdout + check.stderr
        cfg.write_text(good + "exclude: ['ignored/**']\n")
        check = akoshad("status", "--check", "--config", str(cfg), env=env)
        assert check.returncode == 1, check.stdout
        assert "changed since akoshad read it (exclude)" in check.stdout
        assert "until a reload" in check.stdout
        cfg.write_text(good + "exclud: ['ignored/**']\n")  # invalid: the next start is 78
        check = akoshad("status", "--check", "--config", str(cfg), env=env)
        assert check.returncode == 1 and "unknown key" in check.stdout
        assert "the next start would refuse it too (exit 78)" in check.stdout
        cfg.write_text(good + "exclude: ['ignored/**']\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in (tmp_path / "d.log").read_text(), 10)
        check = akoshad("status", "--check", "--config", str(cfg), env=env)
        assert check.returncode == 0, check.stdout
        assert not any("changed since" in w for w in _warnings(cfg, env))
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0


@contextmanager
def _once_while_its_upload_hangs(
    tmp_path: Path, deadline: float
) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """``run --once`` (``drain_deadline_seconds``: ``deadline``) against a bucket where
    every upload hangs, once its upload is in hand: the process and its log; killed (if it
    still runs) and the server closed afterwards."""
    stalled = StalledServer()
    cfg, env = _setup(
        tmp_path,
        drain_deadline_seconds=deadline,
        cloud_sync=stalled_cloud(stalled, "life", upload_timeout_seconds=600),
    )
    log = tmp_path / "once.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "akoshad", "run", "--once", "--config", str(cfg)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        wait_for(lambda: stalled.conns, 60)  # the upload is in hand
        yield proc, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stalled.close()


def test_sigterm_stops_run_once_within_the_deadline(tmp_path: Path) -> None:
    """run --once while its upload hangs: SIGTERM lets the pass in hand run for the drain
    deadline, then the changes stay queued and the exit code says nothing landed."""
    with _once_while_its_upload_hangs(tmp_path, deadline=1) as (proc, log):
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    text = log.read_text()
    assert code == 1, text
    assert "SIGTERM received: stopping" in text
    assert "drain deadline (1.0s) reached" in text or "drain deadline (1s) reached" in text
    assert "run --once: stopped by SIGTERM" in text and "stay queued" in text
    assert "Traceback" not in text
    con = sqlite3.connect(tmp_path / "state" / "state.db")
    queued = con.execute("SELECT count(*) FROM queue").fetchone()[0]
    con.close()
    assert queued > 0  # nothing lost: the changes wait for the next run


def test_sighup_does_not_kill_run_once(tmp_path: Path) -> None:
    """A SIGHUP meant to reload the daemon (``pkill -HUP akoshad``) killed a ``run --once``
    mid-upload (exit 129, no line). It is ignored with a warning; SIGTERM still stops it."""
    with _once_while_its_upload_hangs(tmp_path, deadline=1) as (proc, log):
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP received: run --once" in log.read_text(), 20)
        time.sleep(0.5)
        assert proc.poll() is None, log.read_text()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    text = log.read_text()
    assert code == 1 and "run --once: stopped by SIGTERM" in text, text


def test_second_signal_ends_run_once_at_once(tmp_path: Path) -> None:
    with _once_while_its_upload_hangs(tmp_path, deadline=600) as (proc, log):
        proc.send_signal(signal.SIGINT)
        wait_for(lambda: "SIGINT received: stopping" in log.read_text(), 20)
        assert proc.poll() is None  # the pass in hand may take the deadline (600 s)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(5) == 1
        assert "second SIGINT: exiting now" in log.read_text()


def test_sighup_keeps_the_command_lines_settings(tmp_path: Path) -> None:
    """``run --data-dir X``: a reload builds the configuration with the same command line,
    so X stays (no false "data_dir changed" warning, nothing reverts to the file's value)."""
    cfg, env = _setup(tmp_path)
    other = tmp_path / "other-store"
    other.mkdir()
    (other / "o.json").write_text("{}")
    log = tmp_path / "d.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "akoshad", "run", "--data-dir", str(other), "--config", str(cfg)],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        wait_for(lambda: manifests(tmp_path / "outbox", "life"), 20)
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in log.read_text(), 10)
        assert "data_dir changed" not in log.read_text()
        files = {f["path"] for f in manifests(tmp_path / "outbox", "life")[-1]["metadata"]["files"]}
        assert files == {"o.json"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
