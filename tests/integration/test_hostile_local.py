"""Hostile and broken input on the local target: each case has a defined outcome, the rest of
the store still lands, and nothing is lost."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crashloop import referenced_keys
from tests.helpers import changed_paths
from tests.integration.test_pipeline_local import SYSTEM, Setup
from tests.storegen import make_store


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    s = Setup(tmp_path)
    make_store(s.store)
    return s


def _paths(manifest: dict) -> set[str]:  # type: ignore[type-arg]
    return {f["path"] for f in manifest["metadata"]["files"]}


def _skipped(manifest: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {s["path"]: s["reason"] for s in manifest["metadata"]["skipped"]}


def test_symlinks_never_followed_out(setup: Setup, tmp_path: Path) -> None:
    secret = tmp_path / "outside-secret.txt"
    secret.write_text("must never leave the machine")
    os.symlink(secret, setup.store / "escape.txt")
    os.symlink(setup.store, setup.store / "loop")
    os.symlink(setup.store / "self", setup.store / "self")
    os.symlink(setup.store / "akosha_sync_state.json", setup.store / "inside-link.json")
    res = setup.once()
    assert res.returncode == 1  # something was skipped
    assert "Traceback" not in res.stderr
    (m,) = setup.manifests()
    assert "escape.txt" not in _paths(m) and "inside-link.json" in _paths(m)
    assert _skipped(m)["escape.txt"] == "symlink points outside data_dir"
    for obj in setup.outbox.rglob("*"):
        if obj.is_file():
            assert b"must never leave" not in obj.read_bytes()


def test_non_utf8_names_skipped_rest_lands(setup: Setup) -> None:
    bad = os.fsencode(str(setup.store)) + b"/caf\xe9-\xff.json"
    with open(bad, "wb") as fh:
        fh.write(b"{}")
    res = setup.once()
    assert res.returncode == 1 and "Traceback" not in res.stderr
    (m,) = setup.manifests()
    assert len(_paths(m)) == 8
    assert any("UTF-8" in r for r in _skipped(m).values())


def test_corrupt_duckdb_skipped_then_recovered(setup: Setup) -> None:
    db = setup.store / "knowledge_graph.duckdb"
    good = db.read_bytes()
    data = bytearray(good)
    data[4096:12288] = os.urandom(8192)
    db.write_bytes(bytes(data))
    res = setup.once()
    assert res.returncode == 1
    (m,) = setup.manifests()
    assert "knowledge_graph.duckdb" not in _paths(m)
    assert "DuckDB" in _skipped(m)["knowledge_graph.duckdb"]
    assert "reflection.duckdb" in _paths(m)
    db.write_bytes(good)
    assert setup.once().returncode == 0
    assert "knowledge_graph.duckdb" in _paths(setup.manifests()[-1])
    assert _skipped(setup.manifests()[-1]) == {}


def test_truncated_duckdb_skipped(setup: Setup) -> None:
    db = setup.store / "reflection.duckdb"
    db.write_bytes(db.read_bytes()[:5000])
    res = setup.once()
    assert res.returncode == 1
    assert "reflection.duckdb" in _skipped(setup.manifests()[-1])


def test_corrupt_state_db_is_kept_aside_and_rebuilt(setup: Setup) -> None:
    assert setup.once().returncode == 0
    db = setup.state / "state.db"
    for side in ("-wal", "-shm"):
        Path(str(db) + side).unlink(missing_ok=True)
    db.write_bytes(b"garbage, not a database" * 1000)
    res = setup.once()
    assert res.returncode == 0, res.stderr
    assert "kept aside" in res.stderr
    assert list(setup.state.glob("state.db.corrupt-*"))
    # the ledger came back from the target's manifest: nothing was uploaded again
    assert len(setup.manifests()) == 1
    (setup.store / "akosha_sync_state.json").write_text('{"after": "rebuild"}')
    assert setup.once().returncode == 0
    assert changed_paths(*setup.manifests()[-2:]) == {"akosha_sync_state.json"}


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        # mode 0700: a new tmpfs is 1777, a state_dir others could plant files in
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_full_disk_for_target_loses_nothing(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "outbox", "256k"):
        s = Setup(tmp_path)
        make_store(s.store)
        (s.store / "bulk.bin").write_bytes(os.urandom(1_000_000))
        res = s.once()
        assert res.returncode == 1 and "Traceback" not in res.stderr
        assert s.manifests() == []
        # nothing but the owner record (written before the upload began)
        assert [p.name for p in s.outbox.rglob("*") if p.is_file()] == ["owner.json"]
        con = sqlite3.connect(s.state / "state.db")
        assert con.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == 9
        con.close()
    # the disk is back (unmounted: plain directory): everything lands
    assert s.once().returncode == 0
    assert len(_paths(s.manifests()[-1])) == 9


def test_full_disk_for_staging_loses_nothing(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    make_store(s.store)
    (s.store / "bulk.bin").write_bytes(os.urandom(3_000_000))
    with tmpfs(s.state, "2m"):
        res = s.once()
        assert res.returncode == 1 and "Traceback" not in res.stderr
        con = sqlite3.connect(s.state / "state.db")
        queued = {r[0] for r in con.execute("SELECT path FROM queue")}
        con.close()
        assert "bulk.bin" in queued
        uploaded = set().union(*(_paths(m) for m in s.manifests()))
        assert "bulk.bin" not in uploaded


@pytest.mark.slow
def test_sparse_5gb_file_round_trips(setup: Setup, tmp_path: Path) -> None:
    big = setup.store / "sparse.img"
    with big.open("wb") as fh:
        fh.truncate(5 * 1024**3)
        fh.seek(3 * 1024**3)
        fh.write(b"needle in a haystack")
    res = setup.once()
    assert res.returncode == 0, res.stderr
    entry = next(f for f in setup.manifests()[-1]["metadata"]["files"] if f["path"] == "sparse.img")
    assert entry["size"] == 5 * 1024**3 and "chunk_list" in entry  # 5,120 chunks
    packs = setup.outbox / "systems" / SYSTEM / "packs"
    assert sum(p.stat().st_size for p in packs.rglob("*") if p.is_file()) < 10 * 1024**2
    assert setup.cli("verify").returncode == 0
    restored = tmp_path / "r"
    setup.cli("restore", "--latest", "--dest", str(restored), check=True)
    with (restored / "sparse.img").open("rb") as fh:
        fh.seek(3 * 1024**3)
        assert fh.read(20) == b"needle in a haystack"
    assert (restored / "sparse.img").stat().st_size == 5 * 1024**3
    digest = hashlib.sha256()
    with (restored / "sparse.img").open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == entry["sha256"]


def test_hostile_names_stay_under_the_system_prefix(setup: Setup, tmp_path: Path) -> None:
    names = [
        "..strange..name..json",
        "spaces and (parens) [1].json",
        "new\nline.json",
        "ünïcödé-ファイル.json",
        "x" * 240 + ".json",
        "manifest.json",
        "memories.json",
        "-leading-dash.json",
        "sessions/../../looks-like-escape.json".replace("/", "_"),
    ]
    deep = setup.store / "a" / ".." / "b"  # a literal path with '..' resolved by the OS
    deep.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (setup.store / name).write_text(f'{{"i": {i}}}')
    res = setup.once()
    assert res.returncode == 0, res.stderr
    m = setup.manifests()[-1]
    for key in referenced_keys(m, setup.outbox):  # packs: named by their content, never by a file
        assert key.startswith(f"systems/{SYSTEM}/packs/") and key.count("/") == 4
    for f in m["metadata"]["files"]:
        assert ".." not in f["name"] and "/" not in f["name"]
    for obj in setup.outbox.rglob("*"):
        assert obj.resolve().is_relative_to(setup.outbox.resolve())
    restored = tmp_path / "r"
    setup.cli("restore", "--latest", "--dest", str(restored), check=True)
    for i, name in enumerate(names):
        assert (restored / name).read_text() == f'{{"i": {i}}}'
