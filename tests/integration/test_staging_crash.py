"""No plaintext left behind by a killed akoshad: the staged copies of a pass killed with
SIGKILL (and a killed prune's or drill's directories) are removed when the next daemon, or
``run --once``, starts; a killed restore's partial files when the next restore opens
``--dest``. Real subprocesses, real kill -9."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

from tests.helpers import akoshad, daemon_config, manifests, start_daemon, wait_for
from tests.stalled_s3 import StalledServer, stalled_cloud

SID = "crash"


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _staged(staging: Path) -> list[Path]:
    try:
        return [p for p in staging.rglob("*") if p.is_file()]
    except FileNotFoundError:
        return []


def _kill_mid_pass(tmp_path: Path, log: Path) -> list[Path]:
    """A daemon whose upload hangs (so its pass holds the staged copies), killed -9.
    Returns the staged files it left."""
    stalled = StalledServer()
    cfg, env = daemon_config(
        tmp_path,
        SID,
        store=not (tmp_path / "store").exists(),
        cloud_sync=stalled_cloud(stalled, SID, upload_timeout_seconds=600),
    )
    proc = start_daemon(cfg, env, log)
    staging = tmp_path / "state" / "staging"
    try:
        wait_for(lambda: stalled.conns, 60)  # the pass is in hand
        left = wait_for(lambda: _staged(staging), 90)  # after the clean-up attempts time out
        # private while in use: the directory 0700, every copy 0600
        assert _mode(staging) == 0o700
        modes = {}
        for p in left:  # a transient file (a SQLite backup's journal) may be gone already
            with contextlib.suppress(FileNotFoundError):
                modes[p] = _mode(p)
        assert set(modes.values()) == {0o600}, {p: oct(m) for p, m in modes.items()}
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stalled.close()
    left = _staged(staging)
    assert left, "the kill left nothing staged: the test tests nothing"
    return left


def _plant_other_leftovers(state: Path, outside: Path) -> None:
    """What a killed prune and a killed drill leave, and a link that must not be followed
    (``packs`` itself, or in the pack files a killed pass left there)."""
    (state / "prune").mkdir(mode=0o700)
    (state / "prune" / "pack-1.tmp").write_bytes(b"plaintext chunk bodies")
    drill = state / "drill-k1ll3d"
    (drill / "store").mkdir(parents=True, mode=0o700)
    (drill / ".lock").write_bytes(b"")
    (drill / "store" / "activity.db").write_bytes(b"plaintext copy")
    outside.mkdir()
    (outside / "keep.txt").write_text("not ours")
    packs = state / "packs"
    if packs.is_dir() and not packs.is_symlink():  # the killed pass had packed its files
        (packs / "elsewhere").symlink_to(outside)
    else:
        packs.symlink_to(outside)


def _assert_clean(state: Path, outside: Path) -> None:
    assert _staged(state / "staging") == []
    assert _mode(state / "staging") == 0o700
    assert not os.path.lexists(state / "prune") and not os.path.lexists(state / "packs")
    assert not list(state.glob("drill-*"))
    assert (outside / "keep.txt").read_text() == "not ours"
    assert (state / "state.db").exists()  # the state itself is kept


def test_a_killed_pass_leaves_no_copy_after_the_next_start(tmp_path: Path) -> None:
    state = tmp_path / "state"
    _kill_mid_pass(tmp_path, tmp_path / "d1.log")
    _plant_other_leftovers(state, tmp_path / "outside")
    # the next daemon (the bucket gone: the local outbox) cleans up at start
    cfg, env = daemon_config(tmp_path, SID, store=False)
    log = tmp_path / "d2.log"
    proc = start_daemon(cfg, env, log)
    try:
        wait_for(lambda: "removed what an interrupted run left" in log.read_text(), 60)
        wait_for(lambda: manifests(tmp_path / "outbox", SID), 60)
        wait_for(lambda: _staged(state / "staging") == [], 30)
        _assert_clean(state, tmp_path / "outside")
        text = log.read_text()
        assert "staging (" in text and "prune (1)" in text and "drill (1)" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    # and run --once, after another kill -9
    _kill_mid_pass(tmp_path, tmp_path / "d3.log")
    (tmp_path / "outside").rename(tmp_path / "outside-old")
    _plant_other_leftovers(state, tmp_path / "outside")
    (tmp_path / "store" / "new.json").write_text("{}")
    cfg, env = daemon_config(tmp_path, SID, store=False)
    res = akoshad("run", "--once", "--config", str(cfg), env=env, timeout=180)
    assert res.returncode == 0, res.stderr
    assert "removed what an interrupted run left" in res.stderr
    _assert_clean(state, tmp_path / "outside")


def _restore_cmd(cfg: Path, dest: Path, *extra: str) -> list[str]:
    base = [sys.executable, "-m", "akoshad", "restore", "--latest", "--config", str(cfg)]
    return [*base, "--dest", str(dest), *extra]


def test_a_killed_restore_leaves_no_partial_file_after_the_next(tmp_path: Path) -> None:
    cfg, env = daemon_config(tmp_path, SID)
    big = tmp_path / "store" / "big.bin"
    with big.open("wb") as fh:  # incompressible, so the restore takes a while
        for _ in range(48):
            fh.write(os.urandom(1 << 20))
    res = akoshad("run", "--once", "--config", str(cfg), env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    dest = tmp_path / "dest"
    proc = subprocess.Popen(
        _restore_cmd(cfg, dest), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        partials = wait_for(lambda: list(dest.rglob(".akoshad-restore-*")), 60, interval=0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [p for p in partials if p.exists()], "the kill left no partial file"
    assert {_mode(p) for p in partials if p.exists()} == {0o600}
    again = subprocess.run(
        _restore_cmd(cfg, dest, "--force"), env=env, capture_output=True, text=True, timeout=300
    )
    assert again.returncode == 0, again.stderr
    assert list(dest.rglob(".akoshad-restore-*")) == []
    digest = hashlib.sha256((dest / "big.bin").read_bytes()).hexdigest()
    assert digest == hashlib.sha256(big.read_bytes()).hexdigest()
