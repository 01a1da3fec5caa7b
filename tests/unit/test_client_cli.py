"""The client commands: the human views (pure functions) and exit 3 with no daemon."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from akoshad.cli import client as client_cli
from akoshad.cli.client import (
    check_line,
    cmd_pause,
    cmd_queue,
    cmd_resume,
    cmd_status,
    cmd_sync,
    render_queue,
    render_status,
    render_sync,
)
from akoshad.cli.status_view import human_age, human_bytes
from akoshad.config import Settings, load_settings
from akoshad.errors import DaemonNotRunning
from akoshad.runtime.control import ControlServer
from akoshad.store.places import place_fields
from tests.tmpdirs import short_dir

NOW = 1_700_000_000.0

SAMPLE: dict[str, Any] = {
    "state": "degraded",
    "pid": 4242,
    "version": "0.3.1",
    "uptime_seconds": 3725.5,
    "data_dir": "/home/me/.claude/data",
    "pending": 7,
    "in_flight": 2,
    "paused": False,
    "degraded_reason": "cloud: NoSuchBucket",
    "last_upload": {
        "upload_id": "20231114T221320Z-ab12",
        "method": "local",
        "finished_at": NOW - 90,
        "files": 3,
        "bytes_sent": 5 * 1024 * 1024,
    },
    "counters": {
        "files_uploaded": 12,
        "bytes_uploaded": 2048,
        "bytes_sent": 1536,
        "deduplicated": 4,
        "failures": 1,
        "retries": 2,
    },
    "targets": {
        "local": {"available": True, "last_error": None, "last_success_at": NOW - 90},
        "cloud": {
            "available": False,
            "last_error": "bucket akosha-x does not exist",
            "last_success_at": None,
            "circuit": "open",
            "primary": True,
        },
    },
    "memories": {"delivered": 120, "skipped": 1, "last_error": "HTTP 503"},
    "skipped": {"sessions/huge.db": "larger than max_file_bytes"},
    "system_id": "laptop",
}


def test_render_status() -> None:
    text = render_status(SAMPLE, now=NOW)
    first = text.splitlines()[0]
    assert "0.3.1" in first and "4242" in first and "DEGRADED" in first and "1h02m" in first
    for needle in (
        "/home/me/.claude/data",
        "pending    7",
        "in flight 2",
        "cloud: NoSuchBucket",
        "20231114T221320Z-ab12 via local, 1m30s ago, 3 file(s), 5.0 MiB sent",
        "bucket akosha-x does not exist",
        "circuit open",
        "primary",
        "12 files uploaded, 2.0 KiB file bytes captured, 1.5 KiB bytes sent, 4 deduplicated, "
        "1 failures, 2 retries",
        "120 delivered to Akosha, 1 skipped (last error: HTTP 503)",
        "sessions/huge.db: larger than max_file_bytes",
    ):
        assert needle in text, needle
    lines = text.splitlines()
    cloud = next(line for line in lines if line.strip().startswith("cloud"))
    local = next(line for line in lines if line.strip().startswith("local"))
    assert "DOWN" in cloud and "ok" in local and "last ok 1m30s ago" in local
    # a target's error is the line after it, not joined to it by an escaped "\n"
    assert lines[lines.index(cloud) + 1] == "         error: bucket akosha-x does not exist"
    assert "\\n" not in text


def test_render_status_says_the_last_drill_and_prune() -> None:
    """The last drill and prune are lines of the human view (before, only --json had
    them): how each went and when, the first problem of a failed one; none before the
    first."""
    assert not any(
        line.startswith(("last drill", "last prune"))
        for line in render_status({"state": "idle"}, now=NOW).splitlines()
    )
    good = {"at": NOW - 3 * 3600, "ok": True, "upload_id": "U1", "files": 8, "problems": []}
    pruned = {
        "at": NOW - 90,
        "ok": True,
        "uploads_kept": 14,
        "uploads_removed": 3,
        "bytes_freed": 3 * 1024 * 1024,
        "problems": [],
    }
    text = render_status({"state": "idle", "last_drill": good, "last_prune": pruned}, now=NOW)
    assert "last drill U1 ok, 3h00m ago, 8 file(s) checked" in text.splitlines()
    assert "last prune ok, 1m30s ago: 3 upload(s) removed, 14 kept, 3.0 MiB freed" in text
    bad_drill = {**good, "ok": False, "problems": ["a.db: chunk missing", "b.json: damaged"]}
    bad_prune = {"at": NOW - 60, "ok": False, "uploads_kept": None, "problems": ["denied"]}
    lines = render_status(
        {"state": "idle", "last_drill": bad_drill, "last_prune": bad_prune}, now=NOW
    ).splitlines()
    assert "last drill U1 FAILED, 3h00m ago: a.db: chunk missing (and 1 more)" in lines
    assert "last prune FAILED, 1m00s ago: denied" in lines


def test_render_status_says_a_drill_that_lacked_the_identity_was_skipped() -> None:
    """A daemon keeping no identity (encrypted uploads, identity_file unset on purpose):
    its drill checks nothing and is no failure (safe line, --check, README), yet the human
    status said `last drill U FAILED, 0s ago: this upload is encrypted: ...`."""
    problem = "this upload is encrypted: pass --identity or set encryption.identity_file"
    drill = {"at": NOW - 60, "ok": False, "upload_id": "U1", "files": 0, "problems": [problem]}
    lines = render_status(
        {"state": "idle", "last_drill": {**drill, "needs_identity": True}}, now=NOW
    ).splitlines()
    assert f"last drill U1 skipped, 1m00s ago: {problem}" in lines
    assert not any("FAILED" in line for line in lines)
    # an identity that is configured but unusable fails the drill: still FAILED
    lines = render_status({"state": "idle", "last_drill": drill}, now=NOW).splitlines()
    assert f"last drill U1 FAILED, 1m00s ago: {problem}" in lines


def test_render_status_counts_the_secrets_redacted() -> None:
    """counters.redactions is on the counters line once a secret was masked."""
    counters = {"files_uploaded": 1, "failures": 0, "retries": 0}
    line = next(
        x
        for x in render_status({"counters": {**counters, "redactions": 4}}, now=NOW).splitlines()
        if x.startswith("counters")
    )
    assert line.endswith("0 failures, 0 retries, 4 secrets redacted")
    none = render_status({"counters": {**counters, "redactions": 0}}, now=NOW)
    assert "redacted" not in none


def test_render_status_memories_circuit_as_the_daemon_sends_it() -> None:
    """``memories.circuit`` is the breaker's ``snapshot()``: its state is shown, only when
    not closed, never the dict itself."""
    from akoshad.pipeline.chain import CircuitBreaker

    clock = [0.0]
    breaker = CircuitBreaker("http", failure_threshold=1, clock=lambda: clock[0])
    memories = {"delivered": 3, "skipped": 0, "last_error": None}
    st = {"state": "idle", "memories": {**memories, "circuit": breaker.snapshot()}}
    line = next(x for x in render_status(st, now=NOW).splitlines() if x.startswith("memories"))
    assert line == "memories   3 delivered to Akosha, 0 skipped"
    breaker.record_failure("connection refused")
    st["memories"] = {**memories, "circuit": json.loads(json.dumps(breaker.snapshot()))}
    line = next(x for x in render_status(st, now=NOW).splitlines() if x.startswith("memories"))
    assert line == "memories   3 delivered to Akosha, 0 skipped, circuit open"


def test_render_status_shows_the_lease() -> None:
    """The owner of the system id is shown whoever it is, not only once it is refused."""
    lease = {"host": "laptop", "since": "2026-11-30T10:00:00+00:00", "ours": True, "how": "claim"}
    owner = [x for x in render_status({"state": "idle", "lease": lease}, NOW).splitlines()]
    assert "owner      this machine: host laptop, since 2026-11-30T10:00:00+00:00" in owner
    other = render_status({"state": "degraded", "lease": {**lease, "ours": False}}, NOW)
    assert "owner      ANOTHER machine (nothing is uploaded): host laptop" in other
    assert "owner" not in render_status({"state": "idle", "lease": None}, NOW)


def test_render_status_minimal() -> None:
    text = render_status({"state": "idle", "pid": 1, "version": "x", "last_upload": None}, now=NOW)
    assert "IDLE" in text and "last upload none yet" in text
    assert "memories" not in text and "skipped" not in text and "targets" not in text


def test_render_sync_and_queue() -> None:
    result = {
        "ok_drain": False,
        "pending": 1,
        "passes": [
            {"target": "local", "upload_id": "u1", "files_uploaded": 2, "bytes_sent": 2048},
            {"target": "cloud", "upload_id": None, "error": "timed out", "retrying": {"a": "x"}},
        ],
    }
    text = render_sync(result)
    assert text.startswith("sync FAILED: 2 pass(es), 1 upload(s) (u1), 2 file(s), 2.0 KiB sent")
    assert "error (cloud): timed out" in text and "retrying a: x" in text


def test_a_pass_sent_again_after_a_store_file_changed_is_no_error() -> None:
    from akoshad.pipeline.report import PassReport

    moved = PassReport("local", error="big.bin changed while it was being uploaded")
    moved.source_changed = True
    sent = PassReport("local", upload_id="u1", files_uploaded=["big.bin"])
    result = {"ok_drain": True, "pending": 0, "passes": [moved.as_dict(), sent.as_dict()]}
    text = render_sync(json.loads(json.dumps(result)))
    assert text.startswith("sync done: 2 pass(es), 1 upload(s) (u1)")
    assert "  sent again (local): big.bin changed while it was being uploaded" in text
    assert "error (" not in text
    alone = render_sync({"ok_drain": False, "passes": [moved.as_dict()]})  # nothing after it
    assert "error (local): big.bin changed" in alone


def test_a_sync_that_delivered_memories_says_so() -> None:
    """A sync whose pass delivered memories to Akosha and uploaded no file said only
    "1 pass(es), 0 upload(s), 0 file(s), 0 B sent": nothing told that they landed."""
    memories = {"delivered": 3200, "skipped": 0}
    text = render_sync({"ok_drain": True, "pending": 0, "passes": [{"memories": memories}]})
    assert text.splitlines()[1] == "  memories: 3200 delivered to Akosha"
    none = render_sync({"ok_drain": True, "passes": [{"memories": {"delivered": 0}}]})
    assert "delivered" not in none


def test_a_sync_with_nothing_left_to_send_says_so() -> None:
    """The README's try-out runs ``sync --wait`` right after the daemon's first upload: it
    said "0 pass(es), 0 upload(s), 0 file(s)", which reads as nothing backed up."""
    text = render_sync({"ok_drain": True, "pending": 0, "passes": []})
    assert text == (
        "sync done: nothing to upload (every change seen is in an upload already), 0 pending"
    )
    failed = render_sync({"ok_drain": False, "pending": 1, "passes": [], "error": "x"})
    assert failed.startswith("sync FAILED: 0 pass(es)") and "error: x" in failed


def test_render_sync_of_the_passes_the_daemon_sends() -> None:
    """``sync --wait`` renders what the daemon's reply holds: each pass as
    ``PassReport.as_dict()``, whose ``files_uploaded`` lists the paths sent."""
    from akoshad.pipeline.report import PassReport

    sent = PassReport("local", upload_id="u1", files_uploaded=["a.json", "b/c.db"])
    sent.bytes_sent = 2048
    result = {"ok_drain": True, "pending": 0, "passes": [sent.as_dict()]}
    text = render_sync(json.loads(json.dumps(result)))  # as it comes over the socket
    assert text == "sync done: 1 pass(es), 1 upload(s) (u1), 2 file(s), 2.0 KiB sent, 0 pending"
    assert render_queue({"queue": [], "debouncing": []}) == "queue empty"
    table = render_queue(
        {
            "queue": [
                {
                    "path": "p.db",
                    "age_seconds": 61,
                    "attempts": 3,
                    "state": "retry",
                    "last_error": "503",
                }
            ],
            "debouncing": ["q.db"],
        }
    )
    assert "1m01s" in table and "p.db  (503)" in table and "settling  q.db" in table


@pytest.mark.parametrize(
    ("n", "text"),
    [(None, "-"), (0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (3 * 1024**3, "3.0 GiB")],
)
def test_human_bytes(n: int | None, text: str) -> None:
    assert human_bytes(n) == text


@pytest.mark.parametrize(
    ("s", "text"),
    [(None, "-"), (-5, "0s"), (59.9, "59s"), (61, "1m01s"), (7260, "2h01m"), (90000, "1d01h")],
)
def test_human_age(s: float | None, text: str) -> None:
    assert human_age(s) == text


def no_daemon_config(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A config whose socket_path (short, in /tmp) nobody listens on, and a clean env."""
    sock = short_dir() / "akoshad.sock"
    (tmp_path / "store").mkdir()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(tmp_path / "store"),
                "state_dir": str(tmp_path / "state"),
                "socket_path": str(sock),
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AKOSHAD_", "XDG_"))}
    env.update({"HOME": str(tmp_path), "PYTHONUNBUFFERED": "1"})
    return cfg, sock, env


@pytest.mark.parametrize("command", ["status", "sync", "pause", "resume", "queue"])
def test_no_daemon_exits_3(tmp_path: Path, command: str) -> None:
    cfg, sock, env = no_daemon_config(tmp_path)
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "akoshad", command, "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    elapsed = time.monotonic() - t0
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "not running" in lines[0] and str(sock) in lines[0]
    assert elapsed < 10  # no wait for a daemon that is not there (a slow machine: 1-2 s)


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["status", "--json"], 3),
        (["status", "--json", "--check"], 3),
        (["sync", "--json"], 3),
        (["queue", "--json"], 3),
        (["uploads", "--json"], 1),
    ],
)
def test_a_failure_with_json_is_an_object_on_stdout(
    tmp_path: Path, argv: list[str], code: int
) -> None:
    """A script reading --json gets ``{"ok": false, "error": LINE}``, not empty stdout."""
    cfg, _sock, env = no_daemon_config(tmp_path)
    conf = yaml.safe_load(cfg.read_text())
    cfg.write_text(yaml.safe_dump({**conf, "local_target_dir": str(tmp_path / "gone" / "out")}))
    proc = subprocess.run(
        [sys.executable, "-m", "akoshad", *argv, "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert proc.returncode == code, proc.stderr
    line = proc.stderr.strip()
    assert json.loads(proc.stdout) == {"ok": False, "error": line.removeprefix("akoshad: ")}
    assert ("not running" if code == 3 else "does not exist") in line


@pytest.mark.parametrize("command", ["status", "sync"])
def test_a_daemon_still_starting_is_not_called_not_running(tmp_path: Path, command: str) -> None:
    """A daemon whose bucket did not answer served its socket only after about 12 s (its
    targets' start, a crash's settle): meanwhile 'akoshad status' and 'sync --wait' said
    'akoshad is not running ...; start it with `akoshad run`' of a daemon that was. With
    the state's lock held and no answer, they say an akoshad holds the state (still exit
    3: nothing answers yet)."""
    import fcntl

    cfg, sock, env = no_daemon_config(tmp_path)
    (tmp_path / "state").mkdir()
    fd = os.open(tmp_path / "state" / "akoshad.lock", os.O_RDWR | os.O_CREAT, 0o600)
    cmd = [sys.executable, "-m", "akoshad", command, "--config", str(cfg)]
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "akoshad"])
    try:  # what a starting daemon holds (runtime.wiring.StateLock): the lock, its pid
        deadline = time.monotonic() + 10  # its own command line, not its parent's (a fork)
        while b"akoshad" not in Path(f"/proc/{holder.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, "the holder did not start"
            time.sleep(0.01)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, f"{holder.pid}\n".encode())
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
    finally:
        os.close(fd)
        holder.kill()
        holder.wait()
    assert proc.returncode == 3, proc.stderr
    line = proc.stderr.strip()
    assert "not running" not in line and "start it with" not in line, line
    assert f"does not answer on {sock} yet, but an akoshad holds its state" in line, line
    assert "a daemon still starting" in line, line
    # the holder gone (its pid left in the file): not running, as before
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30)
    assert proc.returncode == 3 and "akoshad is not running" in proc.stderr, proc.stderr


def _watch_until(
    cfg: Path, env: dict[str, str], args: list[str], enough: Callable[[bytes], bool]
) -> tuple[int, bytes]:
    """Run ``status --watch ARGS`` into a pipe until ``enough(output)`` (a loaded machine
    takes seconds to start Python: no sleep), stop it with Ctrl-C; its exit code, output."""
    cmd = [sys.executable, "-m", "akoshad", "status", "--watch", *args, "--config", str(cfg)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while not enough(seen) and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.5)
            if ready:
                seen += os.read(proc.stdout.fileno(), 65536)
            assert proc.poll() is None, seen  # keeps going without a daemon
        proc.send_signal(signal.SIGINT)
        rest, _err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, seen + rest


def test_watch_survives_no_daemon_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    cfg, _sock, env = no_daemon_config(tmp_path)
    code, out = _watch_until(
        cfg, env, ["--interval", "0.2"], lambda seen: seen.count(b"not running") >= 2
    )
    assert code == 0
    assert out.count(b"not running") >= 2
    assert b"\x1b" not in out  # a pipe gets plain blocks, no terminal escapes


def test_watch_json_into_a_pipe_is_one_object_per_line(tmp_path: Path) -> None:
    """``status --watch --json | program`` got a clock header and pretty-printed blocks
    between blank lines (no JSON reader takes that); no daemon was a bare text line."""
    cfg, sock, env = no_daemon_config(tmp_path)
    _code, out = _watch_until(
        cfg, env, ["--json", "--interval", "0.2"], lambda seen: seen.count(b"\n") >= 2
    )
    lines = out.decode().splitlines()
    assert len(lines) >= 2
    for line in lines:
        assert json.loads(line) == {"error": f"akoshad is not running (no answer on {sock})"}


def test_watch_redraws_in_place_on_a_terminal(tmp_path: Path) -> None:
    cfg, _sock, env = no_daemon_config(tmp_path)
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "akoshad", "status", "--watch", "--interval", "0.2"]
    proc = subprocess.Popen(
        [*cmd, "--config", str(cfg)], stdout=slave, stderr=subprocess.PIPE, env=env
    )
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 10
        while out.count(b"not running") < 3 and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                out += os.read(master, 65536)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
        with contextlib.suppress(OSError):  # EIO once the child closed the terminal
            while select.select([master], [], [], 0.5)[0]:
                chunk = os.read(master, 65536)
                if not chunk:
                    break
                out += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert out.count(b"not running") >= 3
    assert out.count(b"\x1b[2J") == 1  # cleared once, then redrawn from the top
    assert out.count(b"\x1b[H") >= 3 and out.count(b"\x1b[J") >= 3
    assert out.rstrip().endswith(b"\x1b[?25h")  # the cursor is given back after Ctrl-C


# ---- against a real control server ------------------------------------------------------


def _settings(sock: Path) -> Settings:
    return load_settings(environ={"HOME": "/nonexistent"}, overrides={"socket_path": str(sock)})


def _ns(**kw: Any) -> argparse.Namespace:
    base: dict[str, Any] = {"json": False, "watch": False, "interval": 1.0, "wait": False}
    base["method"] = None
    base.update(kw)
    return argparse.Namespace(**base)


async def _serve(handler: Any) -> tuple[ControlServer, Settings]:
    sock = short_dir() / "a.sock"
    srv = ControlServer(sock, handler)
    await srv.start()
    return srv, _settings(sock)


async def test_commands_against_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[dict[str, Any]] = []

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req)
        if req["cmd"] == "status":
            return SAMPLE
        if req["cmd"] == "queue":
            return {"queue": [], "debouncing": []}
        if req["cmd"] == "sync":
            if req.get("wait"):
                await asyncio.sleep(0.3)
                return {"ok_drain": req.get("method") != "cloud", "passes": [], "pending": 0}
            return {"ok_drain": True, "started": True}
        return {"paused": req["cmd"] == "pause"}

    srv, settings = await _serve(handler)
    try:
        assert await asyncio.to_thread(cmd_status, _ns(json=True), settings) == 0
        assert json.loads(capsys.readouterr().out) == SAMPLE  # the result object alone
        assert await asyncio.to_thread(cmd_status, _ns(), settings) == 0
        assert "DEGRADED" in capsys.readouterr().out
        assert await asyncio.to_thread(cmd_pause, _ns(), settings) == 0
        assert await asyncio.to_thread(cmd_resume, _ns(), settings) == 0
        assert await asyncio.to_thread(cmd_queue, _ns(), settings) == 0
        assert "queue empty" in capsys.readouterr().out
        assert await asyncio.to_thread(cmd_sync, _ns(), settings) == 0
        assert "sync started" in capsys.readouterr().out
        ok, failed = await asyncio.gather(
            asyncio.to_thread(cmd_sync, _ns(wait=True, method="http", json=True), settings),
            asyncio.to_thread(cmd_sync, _ns(wait=True, method="cloud"), settings),
        )
        assert (ok, failed) == (0, 1)  # exit 1 when the drain reports failures
        assert "sync FAILED" in capsys.readouterr().out
    finally:
        await srv.close()
    cmds = [r["cmd"] for r in seen]
    assert cmds[:6] == ["status", "status", "pause", "resume", "queue", "sync"]
    # a sync names its place: a daemon for another configuration refuses it
    place = place_fields(settings)
    assert {"cmd": "sync", "method": None, "wait": False, **place} in seen
    assert {"cmd": "sync", "method": "cloud", "wait": True, **place} in seen


async def test_pause_says_when_the_pass_in_hand_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    """``akoshad pause`` while a pass uploads: the upload goes on, and pause says so."""
    finishing = [True, False]

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"paused": True, "finishing": finishing.pop(0)}

    srv, settings = await _serve(handler)
    try:
        assert await asyncio.to_thread(cmd_pause, _ns(), settings) == 0
        out = capsys.readouterr().out
        assert "the pass in hand is not stopped: it finishes its upload first" in out
        assert await asyncio.to_thread(cmd_pause, _ns(), settings) == 0
        assert "not stopped" not in capsys.readouterr().out
    finally:
        await srv.close()


def test_sync_wait_has_no_reply_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first upload can take hours: --wait waits as long as the daemon holds the line."""
    calls: list[tuple[dict[str, Any], float | None]] = []

    def fake(path: Path, payload: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        calls.append((payload, timeout))
        return {"ok_drain": True, "passes": [], "pending": 0}

    monkeypatch.setattr(client_cli, "request_sync", fake)
    settings = _settings(Path("/nonexistent/a.sock"))
    assert cmd_sync(_ns(wait=True), settings) == 0
    assert cmd_sync(_ns(), settings) == 0
    assert [t for _, t in calls] == [None, 10.0]


async def test_daemon_stopping_during_sync_wait_is_exit_3() -> None:
    started = asyncio.Event()

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await asyncio.Event().wait()  # never answers: the daemon shuts down meanwhile
        return {}

    srv, settings = await _serve(handler)
    waiting = asyncio.create_task(asyncio.to_thread(cmd_sync, _ns(wait=True), settings))
    await asyncio.wait_for(started.wait(), 5)
    await srv.close()
    with pytest.raises(DaemonNotRunning):
        await asyncio.wait_for(waiting, 5)


def test_watch_stops_on_ctrl_c_even_when_started_ignoring_it(tmp_path: Path) -> None:
    cfg, _sock, env = no_daemon_config(tmp_path)
    cmd = [sys.executable, "-m", "akoshad", "status", "--watch", "--interval", "0.2"]

    def ignore_and_block_sigint() -> None:  # what a parent may hand down
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    proc = subprocess.Popen(
        [*cmd, "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=ignore_and_block_sigint,
    )
    try:
        out = b""
        while out.count(b"not running") < 1:
            out += proc.stdout.read1(4096) if proc.stdout else b""  # type: ignore[attr-defined]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("reply", [{}, {"passes": []}, {"ok_drain": "yes"}, {"ok_drain": 1}])
@pytest.mark.parametrize("wait", [True, False])
def test_sync_of_a_reply_without_ok_drain_fails(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    reply: dict[str, Any],
    wait: bool,
) -> None:
    """A foreign or incompatible server's ``{"ok": true}``: the text and the exit code
    agree that nothing says the sync went well."""
    monkeypatch.setattr(client_cli, "request_sync", lambda *_: reply)
    assert cmd_sync(_ns(wait=wait), _settings(Path("/nonexistent/a.sock"))) == 1
    out = capsys.readouterr().out
    assert out.startswith("sync FAILED") and "no ok_drain" in out


def test_status_check_of_a_reply_that_is_not_a_status_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for reply in ({}, {"pending": 0}, {"state": None}):
        monkeypatch.setattr(client_cli, "request_sync", lambda *_, r=reply: r)
        args = argparse.Namespace(check=True, json=False, watch=False)
        assert cmd_status(args, _settings(Path("/nonexistent/a.sock"))) == 1
        assert capsys.readouterr().out.startswith("akoshad UNHEALTHY: ")


ODD = "evil\nakoshad OK: idle, 0 pending\x1b[31m.json"


def test_a_file_name_with_control_characters_is_shown_on_its_own_line(tmp_path: Path) -> None:
    """A skipped name holding a newline or a terminal escape: written escaped, so that
    ``--check`` stays one line (no forged "OK" line) and nothing reaches the terminal."""
    st = {"state": "idle", "pending": 0, "skipped": {ODD: "permission denied"}}
    settings = load_settings(None, environ={"HOME": str(tmp_path)})
    code, line = check_line(st, settings)
    assert code == 1 and "\n" not in line and "\x1b" not in line
    assert line.startswith("akoshad UNHEALTHY:") and "evil\\nakoshad OK" in line
    text = render_status(st, now=NOW)
    assert "\x1b" not in text and not any(x.startswith("akoshad OK") for x in text.splitlines())
    assert "evil\\nakoshad OK: idle, 0 pending\\x1b[31m.json" in text
    queue = render_queue({"queue": [{"path": ODD, "age_seconds": 1, "attempts": 0}]})
    assert len(queue.splitlines()) == 2 and "\x1b" not in queue
    sync = render_sync({"passes": [{"skipped": {ODD: "permission denied"}}]})
    assert "\x1b" not in sync and not any(x.startswith("akoshad OK") for x in sync.splitlines())


def test_a_stand_in_for_a_configuration_that_did_not_load_names_no_place(
    tmp_path: Path,
) -> None:
    """A client whose configuration is invalid asks the daemon with defaults and the socket
    found: those defaults are not where it uploads, so its requests name no place (the
    daemon would refuse a sync for the defaults' place); a loaded configuration names one."""
    from akoshad.config import client_settings

    stand_in = client_settings(tmp_path / "d.sock", {"HOME": str(tmp_path)})
    assert place_fields(stand_in) == {}
    loaded = load_settings(environ={"HOME": str(tmp_path)})
    assert set(place_fields(loaded)) == {"place", "system_id"}
