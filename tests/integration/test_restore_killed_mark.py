"""A restore killed on the way (SIGKILL, a power loss) leaves a mark in --dest
(``.akoshad-incomplete-restore``, made and fsynced before the first file, removed once
every file has landed): a later look at --dest, and a restore run into it again, tell
that it does not hold the whole upload. Before, nothing in --dest said so: only the
killed restore's exit code did, and a restore run again said '--dest DIR is not empty'."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import akoshad, daemon_config, manifests

MARKER = ".akoshad-incomplete-restore"

# the restore in a child, killed (SIGKILL) once some files have landed, while big.bin's
# temporary file is being made
CHILD = """
import os, signal, sys, time
from akoshad.restore import landing
made = landing.Committer.sink
def sink(self, f):
    got = made(self, f)
    if f.path == "big.bin":
        end = time.monotonic() + 30
        while self.landed < 3 and time.monotonic() < end:
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)
    return got
landing.Committer.sink = sink
from akoshad.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_killed_restore_leaves_a_mark_that_the_next_restore_tells_and_removes(
    tmp_path: Path,
) -> None:
    config, env = daemon_config(tmp_path, "killed", store=False)
    store = tmp_path / "store"
    (store / "sub").mkdir(parents=True)
    for i in range(12):
        (store / "sub" / f"n{i}.json").write_text(f'{{"n": {i}}}')
    (store / "big.bin").write_bytes(bytes(range(256)) * 20_000)
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    upload_id = manifests(tmp_path / "outbox", "killed")[-1]["metadata"]["upload_id"]
    dest = tmp_path / "back"
    restore = ["restore", "--config", str(config), "--latest", "--dest", str(dest)]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, *restore],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == -9, proc.stderr
    landed = _tree(dest)
    mark = landed.pop(MARKER).decode()
    restored = [p for p in landed if not p.startswith(".akoshad-restore-")]  # not its temp
    assert 3 <= len(restored) <= 12 and "big.bin" not in restored, sorted(landed)
    assert f"the restore of upload {upload_id} started " in mark
    assert "has not restored every file here" in mark

    again = akoshad(*restore, env=env)
    assert again.returncode == 1
    assert f"--dest {dest} holds a restore that did not restore every file ({MARKER}: " in (
        again.stderr
    )
    assert "restore again into it with --force" in again.stderr

    chosen = akoshad(*restore, "--force", "--path", "sub/n0.json", env=env)
    assert chosen.returncode == 0, chosen.stderr
    assert "this restore of chosen files (--path) leaves that mark" in chosen.stderr
    assert (dest / MARKER).read_text() == mark  # a few files do not make --dest whole

    forced = akoshad(*restore, "--force", env=env)
    assert forced.returncode == 0, forced.stderr
    assert f"warning: --dest {dest} holds a restore that did not restore every file" in (
        forced.stderr
    )
    assert _tree(dest) == _tree(store)  # every file, and no mark left


def test_a_restore_that_could_not_restore_a_file_keeps_the_mark(tmp_path: Path) -> None:
    """Some files could not be restored (a pack missing): the restore ran to its end, but
    --dest does not hold the whole upload, so the mark stays; a complete restore never
    leaves one."""
    config, env = daemon_config(tmp_path, "marked", store=False)
    store = tmp_path / "store"
    store.mkdir(parents=True)
    (store / "a.json").write_text('{"a": 1}')
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    dest = tmp_path / "whole"
    restore = ["restore", "--config", str(config), "--latest"]
    assert akoshad(*restore, "--dest", str(dest), env=env).returncode == 0
    assert not (dest / MARKER).exists()
    for pack in (tmp_path / "outbox").rglob("packs/*/*"):
        pack.unlink()
    dest = tmp_path / "part"
    proc = akoshad(*restore, "--dest", str(dest), env=env)
    assert proc.returncode == 1
    assert (dest / MARKER).is_file()
