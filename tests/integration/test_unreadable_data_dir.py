"""A ``data_dir`` the daemon may not read (its permissions flipped, a mount not ready) is
not an empty store: nothing is uploaded for it, status says so, and once it can be read
again the backups go on as before.

Tests run as root, who reads anything: the daemon here runs without the capabilities
that let root ignore permissions (``setpriv``), so ``chmod 000`` stops it as it would
stop the owner of the files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import akoshad, daemon_config, manifests, stop_daemon, wait_for

SYSTEM = "unreadable"
DROP = "-dac_override,-dac_read_search"
SETPRIV = shutil.which("setpriv")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or SETPRIV is None, reason="needs root and setpriv to drop DAC override"
)


def _bound() -> list[str]:
    """Python, run without the capabilities that bypass file permissions."""
    assert SETPRIV is not None
    return [SETPRIV, f"--inh-caps={DROP}", f"--bounding-set={DROP}", sys.executable]


def test_an_unreadable_data_dir_is_not_uploaded_as_an_empty_store(tmp_path: Path) -> None:
    cfg, env = daemon_config(tmp_path, SYSTEM)
    store, outbox = tmp_path / "store", tmp_path / "outbox"
    first = akoshad("run", "--once", "--config", str(cfg), env=env)
    assert first.returncode == 0, first.stderr
    files = sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file())

    os.chmod(store, 0)
    try:
        once = subprocess.run(
            [*_bound(), "-m", "akoshad", "run", "--once", "--config", str(cfg)],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert once.returncode == 1 and "cannot be read" in once.stderr, once.stderr
        log = tmp_path / "d.log"
        proc = subprocess.Popen(
            [*_bound(), "-m", "akoshad", "run", "--config", str(cfg)],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            wait_for((tmp_path / "s.sock").exists, 30)
            st = wait_for(
                lambda: (
                    (s := json.loads(akoshad("status", "--json", "--config", str(cfg)).stdout))[
                        "warnings"
                    ]
                    and s
                ),
                10,
            )
            assert "cannot be read" in st["warnings"][0]
            assert akoshad("status", "--check", "--config", str(cfg), env=env).returncode == 1
            sync = akoshad("sync", "--wait", "--config", str(cfg), env=env)
            # never "done" for a store that could not be read
            assert sync.returncode != 0, (sync.stdout, sync.stderr)
            assert "cannot be read" in sync.stdout + sync.stderr, (sync.stdout, sync.stderr)
            assert len(manifests(outbox, SYSTEM)) == 1  # no upload of an "empty" store
        finally:
            os.chmod(store, 0o755)
        (store / "after.json").write_text('{"after": 1}')
        wait_for(lambda: len(manifests(outbox, SYSTEM)) == 2, 30)
        assert (
            json.loads(akoshad("status", "--json", "--config", str(cfg)).stdout)["warnings"] == []
        )
        assert stop_daemon(proc) == 0
    finally:
        os.chmod(store, 0o755)
    assert "Traceback" not in log.read_text(), sync.stdout
    dest = tmp_path / "restored"
    akoshad("restore", "--latest", "--dest", str(dest), "--config", str(cfg), env=env, check=True)
    got = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert got == sorted([*files, "after.json"])


CAPTURE = """
import sys
from pathlib import Path
from akoshad.pipeline.capture.snapshot import Snapshotter
snap = Snapshotter(Path(sys.argv[1]), Path(sys.argv[2]))
snap.reset_staging()
for rel in sys.argv[3:]:
    print(repr(snap.capture(rel)))
"""


def test_a_file_caught_while_data_dir_is_unreadable_is_retried_not_dropped(
    tmp_path: Path,
) -> None:
    """A change queued just before ``data_dir`` stopped being readable: its capture is
    tried again later (its last upload kept in the snapshot meanwhile), while a file that
    is unreadable on its own is still left out."""
    store = tmp_path / "store"
    (store / "sub").mkdir(parents=True)
    (store / "notes.json").write_text("{}")
    (store / "sub" / "own.json").write_text("{}")
    os.chmod(store / "sub" / "own.json", 0)

    def capture(*rels: str) -> list[str]:
        res = subprocess.run(
            [*_bound(), "-c", CAPTURE, str(store), str(tmp_path / "staging"), *rels],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        return res.stdout.splitlines()

    own = capture("sub/own.json")
    assert own == ["Skipped(group='sub/own.json', reason='permission denied', retry=False)"]
    os.chmod(store, 0)
    try:
        [notes] = capture("notes.json")
    finally:
        os.chmod(store, 0o755)
    assert notes == (
        "Skipped(group='notes.json', reason='data_dir cannot be read (Permission denied)', "
        "retry=True)"
    )
