"""Trust boundaries: a hostile outbox, a leaky URL, a neighbour at the socket's directory.

- The local target never follows a symlink under its root (crash clean-up included).
- The outbox and the log file are private (0700 / 0600) whatever the umask.
- Credentials inside URLs never reach a log, a reply, the state or the screen.
- The control socket cannot be squatted, and the client trusts only its own user's server.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from akoshad.cli.mcp import do_status
from akoshad.config import load_settings
from akoshad.errors import ConfigError, PermanentError
from akoshad.runtime.control import ControlServer
from akoshad.targets.local import LocalTarget
from tests.helpers import (
    akoshad,
    base_env,
    printed_by_every_command,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)
from tests.integration.test_pipeline_local import SYSTEM, Setup
from tests.storegen import make_store
from tests.tmpdirs import short_dir

MiB = 1024 * 1024
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _victim(tmp_path: Path) -> Path:
    """A directory outside the outbox, with files and a subfolder, that must survive."""
    victim = tmp_path / "victim"
    (victim / "sub").mkdir(parents=True)
    (victim / "keep.txt").write_text("not akoshad's")
    (victim / "sub" / "deep.txt").write_text("not akoshad's either")
    return victim


# ---- 16.2: the local target never follows a link under its root --------------------------


def _pending_upload(outbox: Path, state: Path) -> Path | None:
    """The folder of an upload in progress once one of its packs landed (its id from the
    state's attempt record: a format-2 upload's folder holds only its manifest)."""
    packs = outbox / "systems" / SYSTEM / "packs"
    if not packs.is_dir() or not any(p.is_file() for p in packs.rglob("*")):
        return None
    try:
        con = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True, timeout=0.1)
        try:
            row = con.execute(
                "SELECT upload_id FROM uploads WHERE outcome = 'in_progress'"
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return None if row is None else outbox / "systems" / SYSTEM / "uploads" / row[0]


def test_crash_clean_up_never_deletes_through_a_symlinked_upload(tmp_path: Path) -> None:
    """kill -9 `run --once` once uploads/<U>/ exists, swap that folder for a link to
    another directory, restart: the other directory keeps every file and subfolder."""
    s = Setup(tmp_path)
    make_store(s.store)
    with (s.store / "huge.bin").open("wb") as fh:  # keeps the upload busy for a while
        for _ in range(40):
            fh.write(os.urandom(4 * MiB))
    proc = subprocess.Popen(
        [sys.executable, "-m", "akoshad", "run", "--once", "--config", str(s.config)],
        env=s.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        upload = wait_for(lambda: _pending_upload(s.outbox, s.state), 60, interval=0.005)
    finally:
        proc.kill()
        proc.wait()
    assert not (upload / "manifest.json").exists(), "the upload finished before the kill"
    victim = _victim(tmp_path)
    before = _tree(victim)
    if upload.exists():
        for p in sorted(upload.rglob("*"), reverse=True):
            p.rmdir() if p.is_dir() else p.unlink()
        upload.rmdir()
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.symlink_to(victim, target_is_directory=True)

    res = s.once()
    assert "Traceback" not in res.stderr
    assert _tree(victim) == before
    assert "is a symlink" in res.stderr  # named, not followed
    assert upload.is_symlink()
    (m,) = s.manifests()
    assert "huge.bin" in {f["path"] for f in m["metadata"]["files"]}  # the retry landed
    upload.unlink()
    shutil.rmtree(s.outbox)  # 160 MiB twice: not kept among pytest's last runs
    shutil.rmtree(s.store)


async def test_local_target_refuses_links_everywhere(tmp_path: Path) -> None:
    """List, read, head, write and delete: none goes through a link, of a directory or
    of a file, planted in the outbox."""
    victim = _victim(tmp_path)
    outside = tmp_path / "outside.txt"
    outside.write_text("private bytes outside the outbox")
    root = tmp_path / "outbox"
    target = LocalTarget(root)
    await target.start()
    up = "systems/s/uploads"
    await target.put_bytes(f"{up}/u1/real.json", b"{}", "application/json")
    (root / "systems" / "s" / "uploads" / "linked").symlink_to(victim)
    (root / "systems" / "s" / "uploads" / "u1" / "obj").symlink_to(outside)
    before = _tree(victim)

    assert [k async for k in target.list_keys(f"{up}/linked/")] == []
    assert [k async for k in target.list_keys(f"{up}/")] == [f"{up}/u1/real.json"]
    for key in (f"{up}/linked/keep.txt", f"{up}/u1/obj"):
        assert await target.head(key) is None
        with pytest.raises(KeyError):
            _ = [c async for c in target.read(key)]
    with pytest.raises(PermanentError, match="symlink"):
        await target.put_bytes(f"{up}/linked/new.json", b"x", "application/json")
    await target.delete_keys([f"{up}/linked/keep.txt", f"{up}/linked/sub/deep.txt"])
    await target.delete_keys([f"{up}/u1/obj"])  # removes the link itself, not its target

    assert _tree(victim) == before and not (victim / "new.json").exists()
    assert outside.read_text() == "private bytes outside the outbox"
    assert not (root / "systems" / "s" / "uploads" / "u1" / "obj").is_symlink()
    assert (root / "systems" / "s" / "uploads" / "linked").is_symlink()


def test_verify_does_not_read_an_object_that_is_a_link(tmp_path: Path) -> None:
    """A manifest key that is a symlink in the outbox is a missing object: verify names
    it and says nothing of what the link points at."""
    s = Setup(tmp_path)
    make_store(s.store)
    assert s.once().returncode == 0
    (m,) = s.manifests()
    entry = next(f for f in m["metadata"]["files"] if f["path"] == "akosha_sync_state.json")
    obj = s.outbox / entry["chunks"][0]["key"]  # its pack
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"P" * 12345)
    obj.unlink()
    obj.symlink_to(outside)
    res = s.cli("verify")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    line = next(x for x in res.stdout.splitlines() if "akosha_sync_state.json" in x)
    assert "missing" in line
    assert "12345" not in res.stdout + res.stderr
    assert outside.read_bytes() == b"P" * 12345


# ---- 16.6: the outbox and the log are private -------------------------------------------


def test_outbox_and_log_are_private_whatever_the_umask(tmp_path: Path) -> None:
    s = Setup(tmp_path, log_file=str(tmp_path / "logs" / "deep" / "akoshad.log"))
    make_store(s.store)
    res = subprocess.run(
        [sys.executable, "-m", "akoshad", "run", "--once", "--config", str(s.config)],
        env=s.env,
        capture_output=True,
        text=True,
        umask=0,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    entries = [s.outbox, *s.outbox.rglob("*")]
    files = {p.relative_to(s.outbox).parts[2] for p in entries if p.is_file()}
    assert files == {"owner.json", "uploads", "packs"}  # the 8 files are in a pack
    modes = {p: stat.S_IMODE(p.lstat().st_mode) for p in entries}
    assert {m for p, m in modes.items() if p.is_dir()} == {0o700}
    assert {m for p, m in modes.items() if p.is_file()} == {0o600}
    log = tmp_path / "logs" / "deep" / "akoshad.log"
    assert log.read_text()
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(log.parent.parent.stat().st_mode) == 0o700


def test_an_existing_log_file_and_open_outbox_are_made_private(tmp_path: Path) -> None:
    log = tmp_path / "akoshad.log"
    log.write_text("older lines\n")
    log.chmod(0o644)
    s = Setup(tmp_path, log_file=str(log))
    make_store(s.store)
    s.outbox.mkdir(mode=0o755)
    s.outbox.chmod(0o755)
    assert s.once().returncode == 0
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert log.read_text().startswith("older lines\n")
    assert stat.S_IMODE(s.outbox.stat().st_mode) == 0o700


# ---- 16.5: credentials inside URLs ------------------------------------------------------

URL_PASS = "Url-Pass-4k7Q9z"
URL_TOKEN = "Tok-8c2e55aa19"
HOOK_SECRET = "Hook-Secret-66f0d1"
HOOK_TOKEN = "Hook-Tok-0b9e7a"
LEAKS = (URL_PASS, URL_TOKEN, HOOK_SECRET, HOOK_TOKEN)


def _state_dump(state_dir: Path) -> str:
    con = sqlite3.connect(state_dir / "state.db")
    try:
        return "\n".join(con.iterdump())
    finally:
        con.close()


def test_url_credentials_never_appear(tmp_path: Path) -> None:
    make_store(tmp_path / "store")
    sock = short_dir() / "a.sock"
    log_file = tmp_path / "logs" / "akoshad.log"
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(sock),
        log_file=str(log_file),
        log_level="DEBUG",
        # nothing listens on port 9: every attempt fails and is logged, stored, reported
        akosha_url=f"http://akuser:{URL_PASS}@127.0.0.1:9/mcp?token={URL_TOKEN}&v=1",
        webhooks=[
            {"url": f"http://127.0.0.1:9/hook?X-Amz-Signature={HOOK_TOKEN}", "secret": HOOK_SECRET}
        ],
        cloud_sync={
            "system_id": "urls",
            "cloud_bucket": "nope",
            "cloud_endpoint": "http://127.0.0.1:9",
            "access_key_id": "AKIAEXAMPLEKEY",
            "secret_access_key": "Secret-Key-For-The-Endpoint-1",
            "retry_backoff_seconds": 0.1,
            "max_retries": 1,
        },
    )
    env = base_env(tmp_path)
    outputs = printed_by_every_command(
        cfg,
        env,
        tmp_path,
        [("sync", "--wait", "--json"), ("status", "--json"), ("queue", "--json")],
        lambda: json.dumps(asyncio.run(do_status(load_settings(cfg, environ=env)))),
    )
    outputs.append(log_file.read_text())
    outputs.append(_state_dump(tmp_path / "state"))
    everything = "\n".join(outputs)
    assert "127.0.0.1:9" in everything  # the URLs were really printed, logged and stored
    assert "akuser:**********@127.0.0.1:9" in everything
    assert "token=**********" in everything
    for leak in LEAKS:
        assert leak not in everything, leak


# ---- 16.7: the control socket and its directory -----------------------------------------

IMPOSTOR = """
import os, socket, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chown(path, {uid}, {uid})
os.setgid({uid})
os.setuid({uid})
s.listen(8)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.recv(65536)
        c.sendall(b'{{"ok": true, "result": {{"pid": 1, "state": "idle", "impostor": true}}}}\\n')
    except OSError:
        pass
    c.close()
"""


@pytest.fixture
def impostor_dir(tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "shared"
    d.mkdir()
    yield d


def _impostor(path: Path) -> subprocess.Popen[str]:
    """A server of another user (nobody) listening on ``path``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", IMPOSTOR.format(uid=NOBODY), str(path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _socket_config(tmp_path: Path, sock: Path) -> tuple[Path, dict[str, str]]:
    make_store(tmp_path / "store")
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(sock),
        cloud_sync={"system_id": "sock"},
    )
    return cfg, base_env(tmp_path)


@as_root
def test_client_refuses_another_users_server(tmp_path: Path, impostor_dir: Path) -> None:
    impostor_dir.chmod(0o777)
    sock = impostor_dir / "a.sock"
    cfg, env = _socket_config(tmp_path, sock)
    proc = _impostor(sock)
    try:
        for args in (("status",), ("status", "--json"), ("pause",)):
            res = akoshad(*args, "--config", str(cfg), env=env)
            assert res.returncode == 1, res.stdout + res.stderr
            lines = res.stderr.strip().splitlines()
            # nothing of the impostor's reply: with --json the error object alone
            said = {"ok": False, "error": lines[0].removeprefix("akoshad: ")}
            assert json.loads(res.stdout) == said if "--json" in args else res.stdout == ""
            assert len(lines) == 1 and "Traceback" not in res.stderr
            assert "nobody" in lines[0] and f"uid {NOBODY}" in lines[0]
            assert "refusing" in lines[0]
    finally:
        proc.kill()
        proc.wait()


def test_daemon_refuses_a_socket_directory_others_can_write(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    cfg, env = _socket_config(tmp_path, shared / "a.sock")
    proc = start_daemon(cfg, env, tmp_path / "d.log")
    try:
        code = proc.wait(60)
    finally:
        stop_daemon(proc)
    out = (tmp_path / "d.log").read_text()
    assert code == 78, out
    (line,) = [x for x in out.splitlines() if x.startswith("akoshad: ")]
    assert f"chmod 700 {shared}" in line and "other users" in line
    assert "Traceback" not in out
    assert not (shared / "a.sock").exists()


@as_root
def test_daemon_refuses_a_squatted_socket_path(tmp_path: Path, impostor_dir: Path) -> None:
    """A sticky directory of ours is allowed, but a socket another user put there first is
    refused with exit 78 and its owner, not taken for "another akoshad (pid 1)"."""
    impostor_dir.chmod(0o1777)
    sock = impostor_dir / "a.sock"
    cfg, env = _socket_config(tmp_path, sock)
    proc = _impostor(sock)
    try:
        daemon = start_daemon(cfg, env, tmp_path / "d.log")
        code = daemon.wait(60)
    finally:
        proc.kill()
        proc.wait()
    out = (tmp_path / "d.log").read_text()
    assert code == 78, out
    assert "already running" not in out
    (line,) = [x for x in out.splitlines() if x.startswith("akoshad: ")]
    assert "user nobody" in line and "socket_path" in line


async def test_socket_directory_rules(tmp_path: Path) -> None:
    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {}

    cases: list[tuple[int, int | None, bool]] = [
        (0o700, None, True),
        (0o1777, None, True),  # sticky and ours
        (0o777, None, False),
        (0o770, None, False),  # a group may hold other users
    ]
    if os.geteuid() == 0:
        cases += [(0o1777, NOBODY, False), (0o755, NOBODY, False)]  # someone else's
    for i, (mode, owner, ok) in enumerate(cases):
        d = tmp_path / f"d{i}"
        d.mkdir()
        d.chmod(mode)
        if owner is not None:
            os.chown(d, owner, owner)
        server = ControlServer(d / "s.sock", handler)
        if ok:
            await server.start()
            await server.close()
        else:
            with pytest.raises(ConfigError, match="can be written by other users"):
                await server.start()
            assert not (d / "s.sock").exists()


async def test_blank_lines_do_not_extend_the_idle_timeout(tmp_path: Path) -> None:
    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        return {"ok": 1}

    async with ControlServer(tmp_path / "s.sock", handler, idle_timeout=0.5) as server:
        reader, writer = await asyncio.open_unix_connection(str(server.path))
        t0 = time.monotonic()
        closed_after = None
        try:
            while time.monotonic() - t0 < 4:
                writer.write(b"\n")
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                        closed_after = time.monotonic() - t0
                        break
                except TimeoutError:
                    continue
        except ConnectionError:
            closed_after = time.monotonic() - t0
        finally:
            writer.close()
        assert closed_after is not None, "blank lines kept the connection open"
        assert closed_after < 1.5
