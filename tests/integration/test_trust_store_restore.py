"""Trust boundaries of the snapshot, restore and verify: a hostile store, target or
destination must not make akoshad leak a file, write outside ``--dest`` or lie."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from akoshad.manifest.layout import MAX_MANIFEST_BYTES
from akoshad.storage.codec import compress
from tests.integration.test_pipeline_local import SYSTEM, Setup
from tests.integration.test_pipeline_s3 import S3Setup
from tests.s3server import WeedServer
from tests.storegen import make_store

MARKER = b"OUTSIDE-MARKER-must-never-leave"


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    s = Setup(tmp_path)
    (s.store / "sessions").mkdir(parents=True)
    (s.store / "sessions" / "x.json").write_text('{"session": "x"}' * 50)
    (s.store / "a.json").write_text('{"a": 1}' * 50)
    return s


def _upload_dirs(setup: Setup) -> list[Path]:
    base = setup.outbox / "systems" / SYSTEM / "uploads"
    return sorted(d for d in base.iterdir() if (d / "manifest.json").exists())


def _rewrite_manifest(setup: Setup, change: Any, upload: Path | None = None) -> dict[str, Any]:
    path = (upload or _upload_dirs(setup)[-1]) / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))
    return dict(manifest)


def _entry(manifest: dict[str, Any], path: str) -> dict[str, Any]:
    return next(e for e in manifest["metadata"]["files"] if e["path"] == path)


def _everything_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink())


# ---- 16.1: side files are opened by the same rule as every other store file ----------


def _store_with_wal_linked_out(tmp_path: Path) -> tuple[Setup, Path]:
    """A store whose ``knowledge_graph.duckdb.wal`` is a link to a file of MARKERs outside
    it; the setup and the link's path."""
    setup = Setup(tmp_path)
    make_store(setup.store)
    secret = tmp_path / "secret.wal"
    secret.write_bytes(MARKER * 100)
    wal = setup.store / "knowledge_graph.duckdb.wal"
    wal.unlink(missing_ok=True)
    os.symlink(secret, wal)
    return setup, wal


def test_duckdb_wal_linked_out_of_the_store_is_never_uploaded(tmp_path: Path) -> None:
    setup, _wal = _store_with_wal_linked_out(tmp_path)
    res = setup.once()
    assert "Traceback" not in res.stderr
    (manifest,) = setup.manifests()
    paths = {e["path"] for e in manifest["metadata"]["files"]}
    skipped = {s["path"]: s["reason"] for s in manifest["metadata"]["skipped"]}
    assert "knowledge_graph.duckdb.wal" not in paths
    assert skipped["knowledge_graph.duckdb.wal"] == "symlink points outside data_dir"
    assert "knowledge_graph.duckdb" in paths  # the database itself is still backed up
    stored = _everything_under(setup.outbox)
    assert MARKER not in stored
    assert MARKER not in gzip_members(setup.outbox)


def test_a_duckdb_wal_that_is_a_directory_leaves_the_database_backed_up(tmp_path: Path) -> None:
    """A ``.wal`` that is no regular file (a directory) is named as skipped, the database is
    backed up without it: no capture retried for ever, no run that fails for it."""
    setup = Setup(tmp_path)
    make_store(setup.store)
    wal = setup.store / "knowledge_graph.duckdb.wal"
    wal.unlink(missing_ok=True)
    wal.mkdir()
    res = setup.once()
    assert "Traceback" not in res.stderr
    (manifest,) = setup.manifests()
    paths = {e["path"] for e in manifest["metadata"]["files"]}
    skipped = {s["path"]: s["reason"] for s in manifest["metadata"]["skipped"]}
    assert "knowledge_graph.duckdb" in paths and "knowledge_graph.duckdb.wal" not in paths
    assert skipped["knowledge_graph.duckdb.wal"] == "not a regular file"


def gzip_members(root: Path) -> bytes:
    """The decoded content of every gzip object under ``root``."""
    out = b""
    for p in root.rglob("*.gz"):
        out += gzip.decompress(p.read_bytes())
    return out


# ---- 16.3: restore never writes through a symlink in --dest ---------------------------


def test_restore_force_replaces_symlinked_directory_and_file(setup: Setup, tmp_path: Path) -> None:
    assert setup.once().returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = tmp_path / "victim.json"
    victim.write_text("untouched")
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(elsewhere, dest / "sessions")
    os.symlink(victim, dest / "a.json")
    res = setup.cli("restore", "--latest", "--dest", str(dest), "--force")
    assert res.returncode == 0, res.stderr
    assert list(elsewhere.iterdir()) == []
    assert victim.read_text() == "untouched"
    assert not (dest / "sessions").is_symlink() and (dest / "sessions").is_dir()
    assert (dest / "sessions" / "x.json").read_text() == '{"session": "x"}' * 50
    assert not (dest / "a.json").is_symlink()
    assert (dest / "a.json").read_text() == '{"a": 1}' * 50


def test_restore_refuses_a_symlink_in_the_way_without_force(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --force a non-empty --dest is refused before anything; a link appearing
    under an empty one is refused by the no-follow open itself (library level)."""
    import asyncio

    from akoshad.restore.readback import RestoreError, restore_upload
    from akoshad.targets.local import LocalTarget

    assert setup.once().returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    upload_id = _upload_dirs(setup)[-1].name

    import akoshad.restore.readback as mod

    real_check = mod.check_dest

    def check_then_link(d: Path, force: bool) -> None:
        real_check(d, force)
        os.symlink(elsewhere, d / "sessions")  # swapped in after the emptiness check

    monkeypatch.setattr(mod, "check_dest", check_then_link)

    async def go() -> None:
        target = LocalTarget(setup.outbox)
        await target.start(clean_up=False)
        try:
            await restore_upload(target, SYSTEM, upload_id, dest)
        finally:
            await target.close()

    with pytest.raises(RestoreError, match="sessions in --dest is a symlink"):
        asyncio.run(go())
    assert list(elsewhere.iterdir()) == []


# ---- 16.4: decompression bombs and oversized objects/manifests -----------------------


def _chunk_of(manifest: dict[str, Any], path: str) -> dict[str, Any]:
    chunk: dict[str, Any] = _entry(manifest, path)["chunks"][0]
    return chunk


def _zstd_bomb(plain: int) -> bytes:
    compression, bomb = compress(b"\0" * plain)
    assert compression == "zstd"
    return bomb


def _point_at(manifest: dict[str, Any], path: str, key: str, stored: bytes) -> None:
    """``path``'s chunk now lives in ``key`` (all of it, zstd); its declared size stays."""
    _chunk_of(manifest, path).update(key=key, offset=0, length=len(stored), compression="zstd")


def _bomb(setup: Setup, path: str, plain: int) -> dict[str, Any]:
    """Point ``path``'s chunk at a stored zstd bomb of ``plain`` zero bytes; the manifest
    keeps the declared size of the chunk and file (as a forger would)."""
    bomb = _zstd_bomb(plain)
    key = f"systems/{SYSTEM}/packs/00/{'0' * 64}"
    (setup.outbox / key).parent.mkdir(parents=True, exist_ok=True)
    (setup.outbox / key).write_bytes(bomb)
    return _rewrite_manifest(setup, lambda m: _point_at(m, path, key, bomb))


def test_decompression_bomb_stops_at_the_declared_size(setup: Setup, tmp_path: Path) -> None:
    assert setup.once().returncode == 0
    _bomb(setup, "a.json", 64 * 1024 * 1024)
    dest = tmp_path / "dest"
    res = setup.cli("restore", "--latest", "--dest", str(dest))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "a.json: chunk 1 of 1 " in res.stderr
    assert "inflates beyond its declared 400 bytes" in res.stderr + res.stdout
    assert not [p for p in dest.rglob("*") if p.name.startswith(".akoshad-restore-")]
    res = setup.cli("verify")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "a.json" in res.stdout and "inflates beyond its declared" in res.stdout


def test_a_pack_shorter_than_its_chunks_is_damaged(setup: Setup, tmp_path: Path) -> None:
    assert setup.once().returncode == 0
    chunk = _chunk_of(setup.manifests()[-1], "a.json")
    pack = setup.outbox / chunk["key"]
    pack.write_bytes(pack.read_bytes()[: chunk["offset"] + chunk["length"] // 2])
    res = setup.cli("restore", "--latest", "--dest", str(tmp_path / "dest"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "is damaged: object " in res.stderr and " ends at " in res.stderr


def test_a_chunk_past_the_end_of_its_pack_names_where_the_pack_ends(
    setup: Setup, tmp_path: Path
) -> None:
    """Before: "object KEY ends at 1000000000000, a read needs ..1000000000400" (the
    chunk's offset given as the object's end)."""
    assert setup.once().returncode == 0
    chunk = _chunk_of(setup.manifests()[-1], "a.json")
    size = (setup.outbox / chunk["key"]).stat().st_size
    far = 10**12
    _rewrite_manifest(setup, lambda m: _chunk_of(m, "a.json").update(offset=far))
    res = setup.cli("restore", "--latest", "--dest", str(tmp_path / "dest"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    end = far + chunk["length"]
    assert f"object {chunk['key']} ends at {size}, a read needs {far}..{end}" in res.stderr


def test_oversized_manifest_is_refused_before_parsing(setup: Setup, tmp_path: Path) -> None:
    assert setup.once().returncode == 0
    path = _upload_dirs(setup)[-1] / "manifest.json"
    text = path.read_bytes()
    # still valid JSON (trailing whitespace), just over the limit
    path.write_bytes(text + b" " * (MAX_MANIFEST_BYTES + 1 - len(text) + 10))
    res = setup.cli("verify")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "over the" in res.stdout and "limit" in res.stdout
    res = setup.cli("restore", "--latest", "--dest", str(tmp_path / "dest"))
    assert res.returncode == 1 and "limit" in res.stderr + res.stdout


# ---- 16.6: restored modes ----------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def test_restore_gives_recorded_modes_and_private_dirs(setup: Setup, tmp_path: Path) -> None:
    (setup.store / "a.json").chmod(0o640)
    (setup.store / "sessions" / "x.json").chmod(0o600)
    assert setup.once().returncode == 0
    manifest = setup.manifests()[-1]
    assert _entry(manifest, "a.json")["mode"] == 0o640
    dest = tmp_path / "dest"
    setup.cli("restore", "--latest", "--dest", str(dest), check=True)
    assert _mode(dest / "a.json") == 0o640
    assert _mode(dest / "sessions" / "x.json") == 0o600
    assert _mode(dest / "sessions") == 0o700


def test_restore_of_a_manifest_without_modes_is_private(setup: Setup, tmp_path: Path) -> None:
    (setup.store / "a.json").chmod(0o644)
    assert setup.once().returncode == 0

    def strip(m: dict[str, Any]) -> None:
        for e in m["metadata"]["files"]:
            e.pop("mode", None)

    _rewrite_manifest(setup, strip)
    dest = tmp_path / "dest"
    setup.cli("restore", "--latest", "--dest", str(dest), check=True)
    assert _mode(dest / "a.json") == 0o600
    assert _mode(dest / "sessions" / "x.json") == 0o600
    assert _mode(dest / "sessions") == 0o700


# ---- 16.8: a damaged object is a problem of its file -------------------------------------


def test_verify_names_a_damaged_object_and_carries_on(setup: Setup) -> None:
    assert setup.once().returncode == 0
    chunk = _chunk_of(setup.manifests()[-1], "a.json")
    pack = setup.outbox / chunk["key"]
    data = bytearray(pack.read_bytes())
    for i in range(chunk["offset"], chunk["offset"] + chunk["length"]):  # its bytes only
        data[i] ^= 0x5A
    pack.write_bytes(bytes(data))
    res = setup.cli("verify")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    named = f"a.json: chunk 1 of 1 (sha256 {chunk['sha256'][:12]}, {chunk['key']} at "
    assert named in res.stdout and ") is damaged" in res.stdout
    assert "1 file(s) verified, 1 problem(s)" in res.stdout  # sessions/x.json still checked


# ---- Low: manifests validated once, whole ------------------------------------------------


def _add_entry(setup: Setup, path: str) -> None:
    def change(m: dict[str, Any]) -> None:
        extra = dict(_entry(m, "a.json"))
        extra["path"] = path
        m["metadata"]["files"].append(extra)

    _rewrite_manifest(setup, change)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("bad\0name.json", "unsafe path"),
        ("a.json/b", "listed as a file and as a directory"),
        ("a.json", "listed twice"),
    ],
)
def test_restore_refuses_a_malformed_manifest_before_writing(
    setup: Setup, tmp_path: Path, path: str, reason: str
) -> None:
    assert setup.once().returncode == 0
    _add_entry(setup, path)
    dest = tmp_path / "dest"
    res = setup.cli("restore", "--latest", "--dest", str(dest))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert reason in res.stderr + res.stdout
    assert not dest.exists() or list(dest.rglob("*")) == []


@pytest.mark.parametrize("path", ["../escape.json", "/etc/escape.json"])
def test_verify_reports_unsafe_paths(setup: Setup, path: str) -> None:
    assert setup.once().returncode == 0
    _add_entry(setup, path)
    res = setup.cli("verify")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "unsafe path" in res.stdout


def test_malformed_newest_manifest_is_skipped_when_rebuilding(setup: Setup) -> None:
    assert setup.once().returncode == 0
    (setup.store / "a.json").write_text('{"a": 2}')
    assert setup.once().returncode == 0

    def break_it(m: dict[str, Any]) -> None:
        del m["metadata"]["files"][0]["name"]

    _rewrite_manifest(setup, break_it)
    db = setup.state / "state.db"
    for side in ("-wal", "-shm"):
        Path(str(db) + side).unlink(missing_ok=True)
    db.write_bytes(b"garbage, not a database" * 1000)
    res = setup.once()
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    newest = _upload_dirs(setup)[1].name
    assert f"ignoring upload {newest}" in res.stderr
    assert "ledger rebuilt from local: 2 file(s) known" in res.stderr


def test_upload_dated_in_the_future_is_not_latest(setup: Setup, tmp_path: Path) -> None:
    (setup.store / "a.json").write_text('{"old": 1}')
    assert setup.once().returncode == 0
    first = _upload_dirs(setup)[0]
    (setup.store / "a.json").write_text('{"new": 2}')
    assert setup.once().returncode == 0
    future = first.with_name("29991231T000000000000Z-abcdef")
    shutil.copytree(first, future)
    dest = tmp_path / "dest"
    res = setup.cli("restore", "--latest", "--dest", str(dest))
    assert res.returncode == 0, res.stderr
    assert (dest / "a.json").read_text() == '{"new": 2}'
    res = setup.cli("verify")
    assert res.returncode == 1
    assert "29991231T000000000000Z-abcdef: dated in the future" in res.stdout


def test_only_uploads_dated_in_the_future_point_at_them_not_at_other_systems(
    setup: Setup, tmp_path: Path
) -> None:
    """Every upload of the system dated in the future (this clock is behind): --latest
    named the other system ids of the target as if this one had no upload ("no uploads not
    dated in the future for system X in local; it holds system id(s) Y: name one with
    --system-id ..."). Now it says they are all in the future and how to take one."""
    assert setup.once().returncode == 0
    (upload,) = _upload_dirs(setup)
    systems = setup.outbox / "systems"
    shutil.copytree(systems / SYSTEM, systems / "othersys")
    upload.rename(upload.with_name("29991231T000000000000Z-abcdef"))
    res = setup.cli("restore", "--latest", "--dest", str(tmp_path / "dest"))
    assert res.returncode == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last == (
        f"akoshad: every upload of system {SYSTEM} in local is dated in the future (see the "
        "warning above): restore one with --upload-id"
    ), res.stderr
    assert not (tmp_path / "dest").exists()


# ---- the same on S3 ------------------------------------------------------------------------


def test_s3_damaged_object_and_bomb_are_named_and_bounded(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """On S3: a flipped object is named with its key while the other files are verified;
    a bomb under its declared size stops restore before it writes more than that."""
    s = S3Setup(tmp_path, s3, system_id)
    (s.store / "sessions").mkdir(parents=True)
    (s.store / "sessions" / "x.json").write_text('{"session": "x"}' * 50)
    (s.store / "a.json").write_text('{"a": 1}' * 50)
    assert s.once().returncode == 0
    (manifest,) = s.manifests()
    chunk = _chunk_of(manifest, "a.json")
    client = s3.client()
    data = bytearray(client.get_object(Bucket=s3.bucket, Key=chunk["key"])["Body"].read())
    for i in range(chunk["offset"], chunk["offset"] + chunk["length"]):
        data[i] ^= 0x5A
    client.put_object(Bucket=s3.bucket, Key=chunk["key"], Body=bytes(data))
    res = s.cli("verify")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"a.json: chunk 1 of 1 (sha256 {chunk['sha256'][:12]}, {chunk['key']} at " in res.stdout
    assert "1 file(s) verified, 1 problem(s)" in res.stdout

    bomb = _zstd_bomb(64 * 1024 * 1024)
    bomb_key = f"systems/{system_id}/packs/00/{'0' * 64}"
    client.put_object(Bucket=s3.bucket, Key=bomb_key, Body=bomb)
    _point_at(manifest, "a.json", bomb_key, bomb)
    key = f"systems/{system_id}/uploads/{manifest['metadata']['upload_id']}/manifest.json"
    client.put_object(Bucket=s3.bucket, Key=key, Body=json.dumps(manifest).encode())
    dest = tmp_path / "dest"
    res = s.cli("restore", "--latest", "--dest", str(dest))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "inflates beyond its declared 400 bytes" in res.stderr + res.stdout
    assert not [p for p in dest.rglob("*") if p.name.startswith(".akoshad-restore-")]


def test_a_linked_wal_made_a_regular_file_again_is_no_longer_a_skip(tmp_path: Path) -> None:
    """The WAL linked out of the store is a skip; once it is a regular file again, it is
    captured with its database and the skip goes: ``run --once`` succeeds again."""
    import duckdb

    setup, wal = _store_with_wal_linked_out(tmp_path)
    assert setup.once().returncode == 1  # the skip fails the run
    wal.unlink()
    con = duckdb.connect(str(setup.store / "knowledge_graph.duckdb"))
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("CREATE TABLE later (a INTEGER)")
    con.execute("INSERT INTO later SELECT * FROM range(5)")
    con.close()
    assert wal.is_file() and not wal.is_symlink()
    res = setup.once()
    manifest = setup.manifests()[-1]
    assert "knowledge_graph.duckdb.wal" in {e["path"] for e in manifest["metadata"]["files"]}
    assert "knowledge_graph.duckdb.wal" not in {s["path"] for s in manifest["metadata"]["skipped"]}
    assert res.returncode == 0, res.stderr
