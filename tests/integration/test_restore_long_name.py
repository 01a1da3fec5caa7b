"""A store path with a name longer than --dest's file system takes (NAME_MAX: a manifest
made on a file system that took longer names) is that file's problem: named with why,
every other file restored, exit 1. Before, the restore stopped at it ('cannot write the
restore: File name too long; DIR holds only part of the upload'), the files after it
never fetched."""

from __future__ import annotations

import json
from pathlib import Path

from akoshad.restore.marker import MARKER
from tests.helpers import akoshad, daemon_config

SYSTEM = "longname"
LONG = "x" * 300  # over 255 bytes, the limit of every file system the tests run on


def _upload(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, bytes]]:
    config, env = daemon_config(tmp_path, SYSTEM, store=False)
    files = {f"sessions/s{i}/f.json": b'{"n": %d}' % i for i in range(6)}
    files["big.bin"] = bytes(range(256)) * 8000
    for path, data in files.items():
        (tmp_path / "store" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "store" / path).write_bytes(data)
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    uploads = tmp_path / "outbox" / "systems" / SYSTEM / "uploads"
    manifest_path = next(uploads.iterdir()) / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    renamed = {"sessions/s2/f.json": f"sessions/s2/{LONG}", "sessions/s4/f.json": f"{LONG}/f.json"}
    for entry in manifest["metadata"]["files"]:
        entry["path"] = renamed.get(entry["path"], entry["path"])
    manifest_path.write_text(json.dumps(manifest))
    return config, env, {p: b for p, b in files.items() if p not in renamed}


def _tree(root: Path) -> dict[str, bytes]:
    """The files under ``root``, but the mark of a restore that did not restore them all."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != MARKER
    }


def test_a_name_too_long_for_dest_is_one_files_problem(tmp_path: Path) -> None:
    config, env, want = _upload(tmp_path)
    dest = tmp_path / "back"
    proc = akoshad("restore", "--config", str(config), "--latest", "--dest", str(dest), env=env)
    assert proc.returncode == 1, proc.stderr
    *named, last = proc.stderr.strip().splitlines()
    assert len(named) == 2, named
    assert all("not restored: a name in its path is 300 bytes long" in n for n in named), named
    assert all("takes names of at most 255 bytes" in n for n in named), named
    assert "File name too long" not in proc.stderr
    assert "2 of the 7 file(s) could not be restored" in last, last
    assert f"{dest} holds 5 of the 7 file(s)" in last, last
    assert _tree(dest) == want
    assert (dest / MARKER).is_file()


def test_with_force_into_a_dest_holding_the_directories(tmp_path: Path) -> None:
    """--force into a DIR that already holds the directories: the look for what is in
    the way before anything is written does not stop at the long name either."""
    config, env, want = _upload(tmp_path)
    dest = tmp_path / "back"
    for d in ("sessions/s2", "sessions/s4"):
        (dest / d).mkdir(parents=True)
    proc = akoshad(
        "restore", "--config", str(config), "--latest", "--dest", str(dest), "--force", env=env
    )
    assert proc.returncode == 1, proc.stderr
    assert "2 of the 7 file(s) could not be restored" in proc.stderr
    assert _tree(dest) == want
