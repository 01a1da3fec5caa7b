"""Restore's landing of checked files (``restore.landing``) and its one-hash check of each
file (``fetch_file(check_chunks=False)``), through ``readback.restore_files`` on a store
kept in memory: every file whole under its name, no temporary name left, a damaged chunk
still named, a file that cannot be made durable failing the restore."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from akoshad.errors import IntegrityError, RestoreError, TransientError
from akoshad.restore import landing
from akoshad.restore.dest_errors import Unrestored
from akoshad.restore.destdir import (
    _PARTIAL_RE,
    TEMP_PREFIX,
    DestError,
    FileSink,
    dest_conflict,
    remove_partials,
)
from akoshad.restore.readback import restore_files
from akoshad.storage.stored import StoredFile
from tests.format2_store import MemTarget, Store


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _temps(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(TEMP_PREFIX)]


async def _stored(tmp_path: Path) -> tuple[MemTarget, list[StoredFile], Path]:
    """A store of nested small files, a large incompressible file and a text file."""
    rng = random.Random(3)
    src = tmp_path / "src"
    for d in range(12):
        for i in range(6):
            f = src / f"d{d}" / "sub" / f"s{i}.json"
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(f'{{"d": {d}, "i": {i}, "n": {rng.random()}}}')
    (src / "big.bin").write_bytes(rng.randbytes(600_000))  # many chunks, stored as they are
    (src / "log.txt").write_text("".join(f"line {n}\n" for n in range(40_000)))
    os.chmod(src / "log.txt", 0o640)
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    target = MemTarget()
    files = await Store(target, "sys", staging).store_tree(src)
    return target, files, src


async def test_every_file_lands_whole_with_its_mode_and_no_temp_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(landing, "MAX_OPEN_DIRS", 3)  # directories closed and reopened
    target, files, src = await _stored(tmp_path)
    big = next(f for f in files if f.path == "big.bin")
    assert len(big.chunks) > 10 and all(c.compression == "none" for c in big.chunks)
    dest = tmp_path / "dest"
    assert await restore_files(target, files, dest) == len(files)
    assert _tree(dest) == _tree(src)
    assert (dest / "log.txt").stat().st_mode & 0o777 == 0o640
    assert _temps(dest) == []


async def test_a_damaged_chunk_of_a_large_file_is_named(tmp_path: Path) -> None:
    target, files, _ = await _stored(tmp_path)
    big = next(f for f in files if f.path == "big.bin")
    ref = big.chunks[len(big.chunks) // 2]
    blob = bytearray(target.objects[ref.key])
    blob[ref.offset + ref.length // 2] ^= 0xFF
    target.objects[ref.key] = bytes(blob)
    dest = tmp_path / "dest"
    with pytest.raises(Unrestored) as caught:
        await restore_files(target, [big], dest)
    n = big.chunks.index(ref) + 1
    [problem] = caught.value.problems
    assert problem.startswith(f"big.bin: chunk {n} of {len(big.chunks)}")
    assert ref.sha256[:12] in problem and "is damaged" in problem
    assert f"{dest} holds 0 of the 1 file(s)" in str(caught.value)
    assert not (dest / "big.bin").exists() and _temps(dest) == []


async def test_damaged_files_are_named_and_every_intact_one_lands(tmp_path: Path) -> None:
    """Two damaged files, one a small file read with its pack's neighbours, one a large
    file (before: the restore stopped at the first, and files after it were never
    fetched): each is named, every other file lands whole, the line says what --dest
    holds."""
    target, files, src = await _stored(tmp_path)
    big = next(f for f in files if f.path == "big.bin")
    small = next(f for f in files if f.path == "d5/sub/s3.json")
    _damage(target, big)
    # the small file's chunk alone: its pack neighbours stay intact
    ref = small.chunks[0]
    blob = bytearray(target.objects[ref.key])
    blob[ref.offset] ^= 0xFF
    target.objects[ref.key] = bytes(blob)
    dest = tmp_path / "dest"
    problems: list[str] = []
    with pytest.raises(Unrestored) as caught:
        await restore_files(target, files, dest, problems=problems)
    assert sorted(p.split(":")[0] for p in problems) == ["big.bin", "d5/sub/s3.json"]
    assert caught.value.problems == problems
    want = {p: b for p, b in _tree(src).items() if p not in ("big.bin", "d5/sub/s3.json")}
    assert _tree(dest) == want and _temps(dest) == []
    total = len(files)
    assert f"2 of the {total} file(s) could not be restored" in str(caught.value)
    assert f"{dest} holds {total - 2} of the {total} file(s)" in str(caught.value)


async def test_a_file_that_cannot_be_synced_fails_the_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, files, _ = await _stored(tmp_path)
    real = FileSink.sync

    def sync(self: FileSink) -> None:
        if self.name == "log.txt":
            raise OSError(5, "Input/output error")
        real(self)

    monkeypatch.setattr(FileSink, "sync", sync)
    dest = tmp_path / "dest"
    with pytest.raises(OSError, match="Input/output error"):
        await restore_files(target, files, dest)
    assert not (dest / "log.txt").exists() and _temps(dest) == []


async def test_a_directory_where_a_file_goes_is_refused(tmp_path: Path) -> None:
    target, files, _ = await _stored(tmp_path)
    dest = tmp_path / "dest"
    (dest / "log.txt").mkdir(parents=True)
    with pytest.raises(RestoreError, match=r"log\.txt in --dest is a directory"):
        await restore_files(target, files, dest, force=True)
    assert (dest / "log.txt").is_dir() and _temps(dest) == []


def test_a_file_ending_in_a_hole_gets_its_size_and_temp_names_are_ours(tmp_path: Path) -> None:
    """Only a hole at the end leaves a file short of its size (the size is then set);
    temporary names are distinct and all of the form a later restore removes."""
    chunk = 1024 * 1024
    cases = {
        "hole-at-end": os.urandom(chunk) + bytes(chunk),
        "hole-inside": bytes(chunk) + os.urandom(chunk),
        "small": b"akoshad",
        "empty": b"",
    }
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        names = set()
        for name, data in cases.items():
            sink = FileSink(fd, name, 0o640)
            names.add(sink.tmp)
            assert _PARTIAL_RE.match(sink.tmp)
            sink.write(data)
            sink.commit(len(data), name)
            assert (tmp_path / name).read_bytes() == data
        more = [FileSink(fd, f"n{i}", None) for i in range(500)]
        names |= {s.tmp for s in more}
        assert len(names) == 504
        for s in more:
            found = _PARTIAL_RE.match(s.tmp)
            assert found is not None and found.group(1) == str(os.getpid())
            s.discard()
        assert remove_partials(fd) == 0 and len(os.listdir(fd)) == len(cases)
    finally:
        os.close(fd)
    assert (tmp_path / "hole-at-end").stat().st_blocks * 512 < 2 * chunk  # a real hole


async def test_a_stale_wal_beside_a_database_restored_without_one_is_removed(
    tmp_path: Path,
) -> None:
    """``--force`` over an earlier restore: a database captured without its WAL (it was
    checkpointed) must not land beside the WAL of an older version, which DuckDB would
    replay or refuse; a WAL the upload holds lands, files not in the upload stay."""
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x.duckdb").write_bytes(b"new database" * 100)
    (src / "y.duckdb").write_bytes(b"other database" * 100)
    (src / "y.duckdb.wal").write_bytes(b"its wal")
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    target = MemTarget()
    files = await Store(target, "sys", staging).store_tree(src)
    dest = tmp_path / "dest"
    (dest / "a").mkdir(parents=True)
    (dest / "a" / "x.duckdb").write_bytes(b"old database")
    (dest / "a" / "x.duckdb.wal").write_bytes(b"old wal")
    (dest / "y.duckdb.wal").write_bytes(b"old wal of y")
    (dest / "mine.txt").write_bytes(b"not the restore's")
    assert await restore_files(target, files, dest, force=True) == len(files)
    assert _tree(dest) == {**_tree(src), "mine.txt": b"not the restore's"}
    assert _temps(dest) == []


async def test_stale_sqlite_side_files_beside_a_restored_database_are_removed(
    tmp_path: Path,
) -> None:
    """SQLite is captured through its backup API (every commit in the main file; no
    ``-wal`` or ``-journal`` is ever uploaded). Restored with ``--force`` over a store that
    still has them (the live store after a crash), SQLite would replay that WAL, or roll
    back that journal, into the restored database: they are removed."""
    import sqlite3

    src = tmp_path / "src"
    src.mkdir()
    db = sqlite3.connect(src / "activity.db")
    db.execute("create table t(x)")
    db.executemany("insert into t values (?)", [(i,) for i in range(100)])
    db.commit()
    db.close()
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    target = MemTarget()
    files = await Store(target, "sys", staging).store_tree(src)
    assert [f.kind for f in files] == ["sqlite"]
    # the live store went on in WAL mode; a crash left its WAL and shared memory
    dest = tmp_path / "dest"
    dest.mkdir()
    live = sqlite3.connect(dest / "activity.db")
    live.execute("pragma journal_mode=wal")
    live.execute("pragma wal_autocheckpoint=0")
    live.execute("create table t(x)")
    live.execute("create table u(y)")
    live.executemany("insert into t values (?)", [(-i,) for i in range(5000)])
    live.commit()
    wal = (dest / "activity.db-wal").read_bytes()
    live.close()
    (dest / "activity.db-wal").write_bytes(wal)
    (dest / "activity.db-journal").write_bytes(b"old journal")
    assert await restore_files(target, files, dest, force=True) == 1
    assert _tree(dest) == _tree(src)
    back = sqlite3.connect(dest / "activity.db")
    assert back.execute("select count(*), min(x) from t").fetchall() == [(100, 0)]
    back.close()


def test_dest_conflicts_are_found_before_a_write(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "a" / "dir").mkdir(parents=True)
    (dest / "file").write_text("x")
    (dest / "link").symlink_to(tmp_path)
    paths = ["new/x", "a/dir/y", "a/z"]
    assert dest_conflict(dest, paths, force=False) is None
    assert dest_conflict(dest, [*paths, "a/dir"], force=True) == "a/dir in --dest is a directory"
    refused = "file in --dest is not a directory (use --force to replace it)"
    assert dest_conflict(dest, ["file/y"], force=False) == refused
    assert dest_conflict(dest, ["file/y"], force=True) is None  # --force replaces it
    # a link is never followed: what lies behind it is not looked at
    assert dest_conflict(dest, ["link/dest"], force=False) == (
        "link in --dest is a symlink (use --force to replace it)"
    )
    assert dest_conflict(dest, ["link/dest"], force=True) is None


async def _database_with_wal(tmp_path: Path) -> tuple[MemTarget, list[StoredFile], Path]:
    """A store of a database and its WAL (DuckDB's names), with other files around."""
    rng = random.Random(5)
    src = tmp_path / "src"
    (src / "sessions").mkdir(parents=True)
    for i in range(8):
        (src / "sessions" / f"s{i}.json").write_text(f'{{"i": {i}, "n": {rng.random()}}}')
    (src / "y.duckdb").write_bytes(rng.randbytes(300_000))
    (src / "y.duckdb.wal").write_bytes(rng.randbytes(20_000))
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    target = MemTarget()
    return target, await Store(target, "sys", staging).store_tree(src), src


def _damage(target: MemTarget, f: StoredFile) -> None:
    ref = f.chunks[0]
    blob = bytearray(target.objects[ref.key])
    blob[ref.offset + ref.length // 2] ^= 0xFF
    target.objects[ref.key] = bytes(blob)


@pytest.mark.parametrize("damaged", ["y.duckdb.wal", "y.duckdb"])
async def test_a_database_and_its_wal_land_together_or_not_at_all(
    tmp_path: Path, damaged: str
) -> None:
    """``--force`` over an earlier restore of the pair, and one of the new pair damaged:
    the restore fails and the earlier pair stays as it was (before: the new database
    landed beside the old WAL, which DuckDB refuses to open, or the new WAL beside the old
    database); the error says what --dest holds."""
    target, files, src = await _database_with_wal(tmp_path)
    _damage(target, next(f for f in files if f.path == damaged))
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "y.duckdb").write_bytes(b"old database")
    (dest / "y.duckdb.wal").write_bytes(b"old wal")
    with pytest.raises(Unrestored) as caught:
        await restore_files(target, files, dest, force=True)
    assert (dest / "y.duckdb").read_bytes() == b"old database"
    assert (dest / "y.duckdb.wal").read_bytes() == b"old wal"
    assert _temps(dest) == []
    landed = _tree(dest)
    assert {p: b for p, b in landed.items() if p.startswith("sessions/")} == {
        p: b for p, b in _tree(src).items() if p.startswith("sessions/")
    }
    first, partner = caught.value.problems
    assert first.startswith(f"{damaged}: chunk 1 of")
    other = "y.duckdb" if damaged.endswith(".wal") else "y.duckdb.wal"
    assert partner.startswith(f"{other}: not restored: {damaged} could not be")
    assert f"{dest} holds 8 of the 10 file(s)" in str(caught.value)


async def test_a_wal_never_lands_without_its_database(tmp_path: Path) -> None:
    """Into a new --dest, the database damaged: neither lands (before: its WAL alone)."""
    target, files, _ = await _database_with_wal(tmp_path)
    _damage(target, next(f for f in files if f.path == "y.duckdb"))
    dest = tmp_path / "dest"
    with pytest.raises(IntegrityError):
        await restore_files(target, files, dest)
    assert not (dest / "y.duckdb").exists() and not (dest / "y.duckdb.wal").exists()
    assert _temps(dest) == []


async def test_the_pair_lands_whole_and_replaces_the_old_one(tmp_path: Path) -> None:
    target, files, src = await _database_with_wal(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "y.duckdb").write_bytes(b"old database")
    (dest / "y.duckdb.wal").write_bytes(b"old wal")
    assert await restore_files(target, files, dest, force=True) == len(files) == 10
    assert _tree(dest) == _tree(src) and _temps(dest) == []


async def test_a_database_handed_after_the_restore_stopped_is_not_left_behind(
    tmp_path: Path,
) -> None:
    """A worker still decoding when the restore failed hands its checked database after
    the committer closed: refused and removed, not kept waiting for a WAL that will never
    come (its temporary file left in --dest)."""
    _, files, _ = await _database_with_wal(tmp_path)
    db = next(f for f in files if f.path == "y.duckdb")
    dest = tmp_path / "dest"
    dest.mkdir()
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        committer = landing.Committer(
            landing.DestTree(fd, force=False), wals={"y.duckdb": "y.duckdb.wal"}
        )
        sink = committer.sink(db)
        sink.write(b"x" * 10)
        sink.finish(10)
        await committer.close()
        with pytest.raises(DestError, match="the restore has stopped"):
            committer.hand(sink, db.path)
    finally:
        os.close(fd)
    assert os.listdir(dest) == []


async def test_a_target_that_stops_answering_says_what_dest_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The target gone after some files landed (before: only "cannot reach ...", the
    user left to guess what --dest held): the line says so; the pair lands whole or not."""
    target, files, _ = await _database_with_wal(tmp_path)
    wal = next(f for f in files if f.path == "y.duckdb.wal")
    real = target.read_range

    async def read_range(key: str, offset: int, length: int) -> bytes:
        if offset + length > wal.chunks[0].offset:
            raise TransientError(f"read {key}: cannot reach the server")
        return await real(key, offset, length)

    monkeypatch.setattr(target, "read_range", read_range)
    dest = tmp_path / "dest"
    with pytest.raises(RestoreError) as caught:
        await restore_files(target, files, dest)
    assert "cannot reach the server" in str(caught.value)
    assert f"{dest} holds 8 of the 10 file(s)" in str(caught.value)
    assert "restore again into it with --force" in str(caught.value)
    assert sorted(_tree(dest)) == [f"sessions/s{i}.json" for i in range(8)]
    assert _temps(dest) == []
