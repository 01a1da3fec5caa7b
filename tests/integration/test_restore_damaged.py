"""A restore of an upload of which some files are damaged or missing in the target gets
back every file that is intact: before, it stopped at the first such file and never
fetched the files after it. Each file that cannot be restored is named with why, a DuckDB
database and its WAL land together or neither, and the last line says what --dest holds
(exit 1)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb

from akoshad.restore.marker import MARKER
from tests.helpers import akoshad, daemon_config, manifests

SYSTEM = "damaged"


def _tree(root: Path) -> dict[str, bytes]:
    """The files under ``root``, but the mark of a restore that did not restore them all."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name != MARKER
    }


def _entry(tmp_path: Path, path: str) -> dict[str, Any]:
    """``path``'s entry in the newest manifest (the test stores list their files inline)."""
    entries = manifests(tmp_path / "outbox", SYSTEM)[-1]["metadata"]["files"]
    entry: dict[str, Any] = next(e for e in entries if e["path"] == path)
    return entry


def _flip(tmp_path: Path, chunk: dict[str, Any]) -> None:
    """One byte of ``chunk`` flipped in its pack, the pack's size kept."""
    pack = tmp_path / "outbox" / chunk["key"]
    data = bytearray(pack.read_bytes())
    data[chunk["offset"] + chunk["length"] // 2] ^= 0xFF
    pack.write_bytes(bytes(data))


def test_two_damaged_files_are_named_and_every_intact_one_is_restored(tmp_path: Path) -> None:
    """One small file's chunk damaged (read with its pack's neighbours), one file whose
    pack is missing (the only file of the second upload's pack)."""
    config, env = daemon_config(tmp_path, SYSTEM, store=False)
    store = tmp_path / "store"
    files: dict[str, bytes] = {f"sessions/s{i:02d}.json": b'{"n": %d}' % i for i in range(20)}
    files["big.bin"] = os.urandom(3 << 20)
    for path, data in files.items():
        (store / path).parent.mkdir(parents=True, exist_ok=True)
        (store / path).write_bytes(data)
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    files["late.bin"] = os.urandom(300_000)
    (store / "late.bin").write_bytes(files["late.bin"])
    akoshad("run", "--once", "--config", str(config), env=env, check=True)

    _flip(tmp_path, _entry(tmp_path, "sessions/s07.json")["chunks"][0])
    late = {c["key"] for c in _entry(tmp_path, "late.bin")["chunks"]}
    others = {c["key"] for e in files if e != "late.bin" for c in _entry(tmp_path, e)["chunks"]}
    assert not late & others  # its pack holds it alone
    for key in late:
        (tmp_path / "outbox" / key).unlink()

    dest = tmp_path / "back"
    proc = akoshad("restore", "--config", str(config), "--latest", "--dest", str(dest), env=env)
    assert proc.returncode == 1, proc.stderr
    *named, last = proc.stderr.strip().splitlines()
    assert sorted(line.split(":")[1].strip() for line in named) == [
        "late.bin",
        "sessions/s07.json",
    ], named
    assert any("is damaged" in line for line in named)
    assert any("is missing" in line for line in named)
    total = len(files)
    assert f"2 of the {total} file(s) could not be restored" in last
    assert f"{dest} holds {total - 2} of the {total} file(s)" in last
    want = {p: b for p, b in files.items() if p not in ("late.bin", "sessions/s07.json")}
    assert _tree(dest) == want
    assert (dest / MARKER).is_file()  # --dest does not hold the whole upload


def test_a_database_whose_wal_is_damaged_lands_neither(tmp_path: Path) -> None:
    """The WAL damaged: neither the database nor its WAL lands (the database alone would
    open as of its last checkpoint, silently older), both are named, the rest lands."""
    config, env = daemon_config(tmp_path, SYSTEM, store=False)
    store = tmp_path / "store"
    store.mkdir()
    (store / "notes.json").write_bytes(b'{"a": 1}')
    con = duckdb.connect(str(store / "y.duckdb"))
    con.execute("CREATE TABLE t AS SELECT * FROM range(1000)")
    con.execute("CHECKPOINT")
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("INSERT INTO t SELECT * FROM range(10)")
    con.close()
    assert (store / "y.duckdb.wal").stat().st_size > 0
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    _flip(tmp_path, _entry(tmp_path, "y.duckdb.wal")["chunks"][0])

    dest = tmp_path / "back"
    proc = akoshad("restore", "--config", str(config), "--latest", "--dest", str(dest), env=env)
    assert proc.returncode == 1, proc.stderr
    wal, db, last = proc.stderr.strip().splitlines()
    assert wal.startswith("akoshad: y.duckdb.wal: chunk 1 of 1") and "is damaged" in wal
    assert db.startswith("akoshad: y.duckdb: not restored: y.duckdb.wal could not be")
    assert f"{dest} holds 1 of the 3 file(s)" in last
    assert _tree(dest) == {"notes.json": b'{"a": 1}'}
