"""Consistent captures: DuckDB pairs, SQLite backups, stable copies, vanishing files."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import duckdb
import pytest

from akoshad.errors import SnapshotError
from akoshad.fileio import LiveStat
from akoshad.manifest.facts import Facts
from akoshad.pipeline.capture.files import captured_chunks
from akoshad.pipeline.capture.snapshot import (
    Captured,
    Skipped,
    Snapshotter,
    Vanished,
    classify_open_error,
)
from akoshad.storage.chunker import Chunk
from tests.storegen import LiveWriter, duckdb_rows, make_reflection, make_sqlite, sqlite_rows


@pytest.fixture
def snap(tmp_path: Path) -> Snapshotter:
    (tmp_path / "store").mkdir()
    s = Snapshotter(tmp_path / "store", tmp_path / "staging", sleep=lambda _s: None)
    s.reset_staging()
    return s


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_plain_file(snap: Snapshotter) -> None:
    """A plain file past the in-memory size gets a private copy (0600) in staging."""
    snap.memory_max_file = 0
    (snap.data_dir / "a.json").write_text('{"a": 1}')
    res = snap.capture("a.json")
    assert isinstance(res, Captured)
    (f,) = res.files
    assert f.kind == "file" and f.size == 8 and f.sha256 == _sha(snap.data_dir / "a.json")
    assert f.held is None and f.facts == Facts(json_ok=True)
    assert f.staged.read_text() == '{"a": 1}'
    assert f.staged.stat().st_mode & 0o777 == 0o600


def test_small_plain_file_is_held_in_memory(snap: Snapshotter) -> None:
    """A small plain file is read once into memory: nothing is written to staging, its
    bytes, hash, facts and mode are the live file's, and the pass's end releases them."""
    path = snap.data_dir / "a.json"
    path.write_text('{"a": 1}')
    path.chmod(0o640)
    (snap.data_dir / "torn.json").write_text('{"a": ')
    res = snap.capture("a.json")
    torn = snap.capture("torn.json")
    assert isinstance(res, Captured) and isinstance(torn, Captured)
    (f,) = res.files
    assert f.held is not None and f.held.data == b'{"a": 1}'
    assert f.kind == "file" and f.size == 8 and f.sha256 == _sha(path) and f.mode == 0o640
    assert f.facts == Facts(json_ok=True) and torn.files[0].facts == Facts(json_ok=False)
    assert f.live.same_content_identity(LiveStat.of(os.lstat(path)))
    assert list(snap.staging.iterdir()) == []
    assert list(captured_chunks(f)) == [Chunk(0, 8, _sha(path), b'{"a": 1}')]
    assert snap.memory.used == 8 + 6
    snap.reset_staging()  # the pass is over
    assert f.held.data is None and snap.memory.used == 0
    with pytest.raises(RuntimeError, match="released"):
        list(captured_chunks(f))


def test_memory_budget_spent_falls_back_to_staging(tmp_path: Path) -> None:
    """Past the pass's memory budget, small files are staged as before."""
    store = tmp_path / "store"
    store.mkdir()
    for name in "abc":
        (store / f"{name}.txt").write_bytes(name.encode() * 100)
    snap = Snapshotter(store, tmp_path / "staging", memory_budget=250)
    snap.reset_staging()
    got = [snap.capture(f"{n}.txt") for n in "abc"]
    files = [r.files[0] for r in got if isinstance(r, Captured)]
    assert [f.held is not None for f in files] == [True, True, False]
    assert files[2].staged.read_bytes() == b"c" * 100 and snap.memory.used == 200
    assert [b"".join(c.data for c in captured_chunks(f)) for f in files] == [
        n.encode() * 100 for n in "abc"
    ]


def test_small_sqlite_file_is_not_held(snap: Snapshotter) -> None:
    """A small file whose head says SQLite still goes through the backup API."""
    make_sqlite(snap.data_dir / "tiny.db", rows=1)
    res = snap.capture("tiny.db")
    assert isinstance(res, Captured) and res.files[0].kind == "sqlite"
    assert res.files[0].held is None and snap.memory.used == 0


def test_vanished_is_deletion(snap: Snapshotter) -> None:
    assert snap.capture("gone.json") == Vanished("gone.json")


def test_a_name_found_only_under_another_spelling_is_deletion(
    snap: Snapshotter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Notes.txt`` renamed ``notes.txt`` where names are case-insensitive (APFS, NTFS,
    ext4 casefold): the old name still opens the file, but it is no longer listed, and it
    must leave the snapshot (both were listed, and a restore gave two files). Such a file
    system is played by links that answer for any case (as it does) and a listing that
    leaves the old name out."""
    (snap.data_dir / "notes.txt").write_text("n")
    for name in ("Notes.txt", "nOTES.TXT", "NOTES.TXT"):
        os.link(snap.data_dir / "notes.txt", snap.data_dir / name)
    assert isinstance(snap.capture("Notes.txt"), Captured)  # hard links: listed, kept
    real, hidden = os.listdir, ("Notes.txt", "nOTES.TXT", "NOTES.TXT", "Dir")
    monkeypatch.setattr(os, "listdir", lambda d=".": [n for n in real(d) if n not in hidden])
    assert snap.capture("Notes.txt") == Vanished("Notes.txt")
    assert isinstance(snap.capture("notes.txt"), Captured)
    # a directory renamed ``Dir`` -> ``dir``: ``Dir/a`` still opens, ``Dir`` is not listed
    for d in ("dir", "Dir"):
        (snap.data_dir / d).mkdir()
    (snap.data_dir / "dir" / "a").write_text("a")
    for name in ("Dir/a", "Dir/A"):
        os.link(snap.data_dir / "dir" / "a", snap.data_dir / name)
    assert isinstance(snap.capture("dir/a"), Captured)
    assert snap.capture("Dir/a") == Vanished("Dir/a")


def test_directory_in_place_of_file_is_deletion(snap: Snapshotter) -> None:
    (snap.data_dir / "d").mkdir()
    assert snap.capture("d") == Vanished("d")


def test_file_in_place_of_its_directory_is_deletion(snap: Snapshotter) -> None:
    """``d/a.json`` once ``d`` is a file (a directory replaced by a file): gone, not a file
    that cannot be read (a skip no event would ever clear)."""
    (snap.data_dir / "d").write_text("now a file")
    assert snap.capture("d/a.json") == Vanished("d/a.json")


def test_link_to_a_directory_is_no_file_and_one_out_of_data_dir_is_refused(
    snap: Snapshotter, tmp_path: Path
) -> None:
    """As the walk says: a link to a directory inside is nothing to back up, one to a
    directory outside is refused (never entered)."""
    (snap.data_dir / "real").mkdir()
    os.symlink(snap.data_dir / "real", snap.data_dir / "inside")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", snap.data_dir / "outside")
    assert snap.capture("inside") == Vanished("inside")
    assert snap.capture("outside") == Skipped("outside", "symlink points outside data_dir")


def test_socket_or_fifo_in_place_of_a_file_is_no_store_file(snap: Snapshotter) -> None:
    """What the walk leaves out (sockets, FIFOs) is no store file for the capture either: a
    deletion of what was there, never a skip that fails every run --once while it stays,
    and never opened (a FIFO would block the read)."""
    import socket

    os.mkfifo(snap.data_dir / "pipe.json")
    assert isinstance(snap.capture("pipe.json"), Vanished)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(snap.data_dir / "s.sock"))
        assert isinstance(snap.capture("s.sock"), Vanished)


def test_file_that_keeps_changing_is_retried_later(snap: Snapshotter) -> None:
    """A file written all through every attempt is given up for now. Each write appends a
    byte, so it shows in the size whatever the clock's granularity (a rewrite in place in
    the same timer tick can leave mtime and ctime as they were), and the file is large
    enough that every copy overlaps many writes."""
    path = snap.data_dir / "busy.json"
    path.write_bytes(b"x" * 16_000_000)
    stop = threading.Event()
    started = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            with path.open("ab") as fh:
                fh.write(b"y")
            started.set()
            time.sleep(0.0002)

    t = threading.Thread(target=churn)
    t.start()
    try:
        assert started.wait(5)
        snap.attempts = 3
        res = snap.capture("busy.json")
    finally:
        stop.set()
        t.join()
    assert isinstance(res, Skipped) and res.retry and "kept changing" in res.reason


def test_unreadable_file_skipped(snap: Snapshotter, monkeypatch: pytest.MonkeyPatch) -> None:
    # tests run as root, where chmod 000 does not stop reads: fail the open instead
    import akoshad.fileio

    path = snap.data_dir / "locked.json"
    path.write_text("{}")
    real_open = os.open

    def deny(file, *a, **k):  # type: ignore[no-untyped-def]
        if str(file).endswith("locked.json"):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *a, **k)

    monkeypatch.setattr(akoshad.fileio.os, "open", deny)
    res = snap.capture("locked.json")
    assert isinstance(res, Skipped) and not res.retry and res.reason == "permission denied"


def test_duckdb_pair_with_wal_restores_rows(snap: Snapshotter, tmp_path: Path) -> None:
    db = snap.data_dir / "reflection.duckdb"
    make_reflection(db, conversations=5)
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO conversations_v2 (id, content, category) VALUES ('w1', 'in wal', 'c')")
    assert (snap.data_dir / "reflection.duckdb.wal").stat().st_size > 0
    size = db.stat().st_size
    res = snap.capture("reflection.duckdb", hash_if_size=size)  # it may be a duplicate
    assert isinstance(res, Captured)
    kinds = {f.path: f.kind for f in res.files}
    assert kinds == {"reflection.duckdb": "duckdb", "reflection.duckdb.wal": "duckdb-wal"}
    for f in res.files:
        assert _sha(f.staged) == f.sha256
    # a first upload, or one of another size: the database's copy is hashed by its upload
    for last in (None, size + 4096):
        res = snap.capture("reflection.duckdb", hash_if_size=last)
        assert isinstance(res, Captured)
        db_copy, wal_copy = res.files
        assert db_copy.sha256 is None and db_copy.staged.stat().st_size == size
        assert wal_copy.sha256 == _sha(wal_copy.staged)
    con.close()
    restore = tmp_path / "restore"
    restore.mkdir()
    for f in res.files:
        shutil.copy(f.staged, restore / f.path)
    ids = [r[0] for r in duckdb_rows(restore / "reflection.duckdb", "conversations_v2")]
    assert "w1" in ids and len(ids) == 6


def test_duckdb_copy_never_locks_live_writer(snap: Snapshotter, tmp_path: Path) -> None:
    db = snap.data_dir / "reflection.duckdb"
    make_reflection(db, conversations=3)
    writer = LiveWriter(db, interval=0.01, log=tmp_path / "w.log")
    try:
        time.sleep(0.3)
        results = []
        for _ in range(10):
            before = set(writer.committed())
            res = snap.capture("reflection.duckdb")
            if isinstance(res, Captured):
                results.append((before, res))
    finally:
        writer.stop()
    assert writer.errors() == []
    assert results, "no capture succeeded while the writer ran"
    before, res = results[-1]
    out = tmp_path / "out"
    out.mkdir()
    for f in res.files:
        shutil.copy(f.staged, out / f.path)
    got = {r[0] for r in duckdb_rows(out / "reflection.duckdb", "live_rows")}
    assert before <= got  # everything committed before the snapshot began is in it


def test_corrupt_duckdb_is_skipped(snap: Snapshotter) -> None:
    db = snap.data_dir / "bad.duckdb"
    make_reflection(db, conversations=2)
    data = bytearray(db.read_bytes())
    data[4096:8192] = b"\x00garbage" * 512
    db.write_bytes(bytes(data[: len(data) // 2]))
    res = snap.capture("bad.duckdb")
    assert isinstance(res, Skipped) and "DuckDB" in res.reason and not res.retry


def test_newer_storage_version_is_cannot_validate() -> None:
    msg = (
        "IO Error: Trying to read a database file with version number 69, but we can only "
        "read version 65."
    )
    assert classify_open_error(RuntimeError(msg)).startswith("cannot validate")
    with pytest.raises(SnapshotError):
        classify_open_error(RuntimeError("Corrupt database file: checksum mismatch"))


def test_sqlite_backup_consistent_during_writes(snap: Snapshotter, tmp_path: Path) -> None:
    db = snap.data_dir / "activity.db"
    make_sqlite(db, rows=100)
    stop = threading.Event()

    def write() -> None:
        con = sqlite3.connect(db, timeout=10)
        while not stop.is_set():
            con.execute("INSERT INTO events (what, at) VALUES ('more', 0)")
            con.commit()
        con.close()

    t = threading.Thread(target=write)
    t.start()
    try:
        res = snap.capture("activity.db")
    finally:
        stop.set()
        t.join()
    assert isinstance(res, Captured)
    (f,) = res.files
    assert f.kind == "sqlite"
    copy = tmp_path / "copy.db"
    shutil.copy(f.staged, copy)
    assert len(sqlite_rows(copy, "events")) >= 100


def test_reset_staging_removes_leftovers(snap: Snapshotter) -> None:
    (snap.staging / "leftover").write_text("x")
    snap.reset_staging()
    assert list(snap.staging.iterdir()) == []


def test_held_file_vanishing_mid_read_is_deletion(
    snap: Snapshotter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import akoshad.pipeline.capture.plain as mod  # where small files are read

    path = snap.data_dir / "brief.json"
    path.write_text("{}" * 1000)
    real = mod.read_resolved

    def read_then_delete(src: str | Path, limit: int) -> bytes:
        data = real(src, limit)
        Path(src).unlink()
        return data

    monkeypatch.setattr(mod, "read_resolved", read_then_delete)
    assert snap.capture("brief.json") == Vanished("brief.json")
    assert snap.memory.used == 0


def test_held_file_changing_mid_read_is_read_again(
    snap: Snapshotter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stat identity is compared before and after the read into memory: a file
    rewritten meanwhile (even to the same size) is read again, never kept torn."""
    import akoshad.pipeline.capture.plain as mod

    path = snap.data_dir / "log.txt"
    path.write_bytes(b"x" * 1000)
    real = mod.read_resolved
    calls = []

    def read_rewritten(src: str | Path, limit: int) -> bytes:
        calls.append(1)
        data = real(src, limit)
        if len(calls) == 1:  # the writer replaces the file while it is read
            tmp = path.with_name("log.txt.tmp")
            tmp.write_bytes(b"y" * 1000)
            os.replace(tmp, path)
        return data

    monkeypatch.setattr(mod, "read_resolved", read_rewritten)
    res = snap.capture("log.txt")
    assert isinstance(res, Captured) and len(calls) == 2
    (f,) = res.files
    assert f.held is not None and f.held.data == b"y" * 1000 and f.sha256 == _sha(path)
    assert snap.memory.used == 1000


def test_file_vanishing_mid_read_is_deletion(
    snap: Snapshotter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import akoshad.pipeline.capture.plain as mod  # where plain files are copied

    snap.memory_max_file = 0  # staged, not held

    path = snap.data_dir / "brief.json"
    path.write_text("{}" * 1000)
    real = mod.copy_hashing

    def copy_then_delete(src: Path, dst: Path) -> tuple[int, str]:
        out = real(src, dst)
        src.unlink()
        return out

    monkeypatch.setattr(mod, "copy_hashing", copy_then_delete)
    assert snap.capture("brief.json") == Vanished("brief.json")
    assert list(snap.staging.iterdir()) == []


def test_file_shrinking_mid_read_is_copied_again(
    snap: Snapshotter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import akoshad.pipeline.capture.plain as mod  # where plain files are copied

    snap.memory_max_file = 0  # staged, not held
    path = snap.data_dir / "log.txt"
    path.write_bytes(b"x" * 100_000)
    real = mod.copy_hashing
    calls: list[int] = []

    def copy_then_truncate(src: Path, dst: Path) -> tuple[int, str]:
        out = real(src, dst)
        if not calls:
            with src.open("r+b") as fh:
                fh.truncate(10)
            time.sleep(0.01)
        calls.append(1)
        return out

    monkeypatch.setattr(mod, "copy_hashing", copy_then_truncate)
    res = snap.capture("log.txt")
    assert isinstance(res, Captured) and len(calls) == 2
    assert res.files[0].size == 10 and res.files[0].staged.read_bytes() == b"x" * 10


def test_sparse_copy_keeps_holes(snap: Snapshotter) -> None:
    path = snap.data_dir / "sparse.img"
    with path.open("wb") as fh:
        fh.truncate(48 * 1024 * 1024)  # below IN_PLACE_MIN_BYTES: copied to staging
        fh.seek(10 * 1024 * 1024)
        fh.write(b"data")
    res = snap.capture("sparse.img")
    assert isinstance(res, Captured)
    (f,) = res.files
    assert not f.in_place and f.staged != path
    assert f.size == 48 * 1024 * 1024 and f.sha256 == _sha(path)
    assert f.staged.stat().st_blocks * 512 < 4 * 1024 * 1024


@pytest.mark.parametrize("held", [True, False])
def test_link_swapped_in_after_the_check_is_not_followed(
    held: bool, snap: Snapshotter, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A file replaced by a symlink out of data_dir between the resolve check and the open
    is refused by the open itself (O_NOFOLLOW), not read."""
    snap.memory_max_file = snap.memory_max_file if held else 0  # read into memory, or copied
    secret = tmp_path / "secret.txt"
    secret.write_text("outside marker")
    path = snap.data_dir / "swap.json"
    path.write_text("{}")
    real = snap._resolve

    def resolve_then_swap(live: str, plain: bool = False) -> str:
        out = real(live, plain)
        path.unlink()
        os.symlink(secret, path)
        return out

    monkeypatch.setattr(snap, "_resolve", resolve_then_swap)
    res = snap.capture("swap.json")
    assert isinstance(res, Skipped) and res.retry and "symlink" in res.reason
    for staged in snap.staging.iterdir():
        assert b"outside marker" not in staged.read_bytes()


@pytest.mark.parametrize("held", [True, False])
def test_directory_swapped_for_link_after_the_check_is_refused(
    held: bool, snap: Snapshotter, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A directory on the way replaced by a symlink after the check: the descriptor's own
    path gives it away."""
    snap.memory_max_file = snap.memory_max_file if held else 0  # read into memory, or copied
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f.json").write_text("outside marker")
    sub = snap.data_dir / "sub"
    sub.mkdir()
    (sub / "f.json").write_text("{}")
    real = snap._resolve

    def resolve_then_swap(live: str, plain: bool = False) -> str:
        out = real(live, plain)
        (sub / "f.json").unlink()
        sub.rmdir()
        os.symlink(outside, sub)
        return out

    monkeypatch.setattr(snap, "_resolve", resolve_then_swap)
    res = snap.capture("sub/f.json")
    assert isinstance(res, Skipped) and res.retry
    for staged in snap.staging.iterdir():
        assert b"outside marker" not in staged.read_bytes()


def test_duckdb_wal_linked_out_is_never_read(snap: Snapshotter, tmp_path: Path) -> None:
    import duckdb

    db = snap.data_dir / "kg.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE t(x INT)")
    con.close()
    secret = tmp_path / "secret.wal"
    secret.write_bytes(b"outside marker" * 10)
    os.symlink(secret, snap.data_dir / "kg.duckdb.wal")
    res = snap.capture("kg.duckdb")
    assert isinstance(res, Captured)
    assert [f.path for f in res.files] == ["kg.duckdb"]
    assert res.refused == (("kg.duckdb.wal", "symlink points outside data_dir"),)
    for staged in snap.staging.iterdir():
        assert b"outside marker" not in staged.read_bytes()


def test_capture_records_the_file_mode(snap: Snapshotter) -> None:
    path = snap.data_dir / "private.json"
    path.write_text("{}")
    path.chmod(0o640)
    res = snap.capture("private.json")
    assert isinstance(res, Captured) and res.files[0].mode == 0o640


def test_directory_swapped_after_an_earlier_capture_of_the_pass_is_refused(
    snap: Snapshotter, tmp_path: Path
) -> None:
    """Store directories are resolved once per pass; one swapped for a link out of data_dir
    after that is still refused (the opened descriptor's path is checked), not read."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.json").write_text('"outside marker"')
    sub = snap.data_dir / "sub"
    sub.mkdir()
    (sub / "a.json").write_text("{}")
    (sub / "b.json").write_text("{}")
    assert isinstance(snap.capture("sub/a.json"), Captured)
    shutil.rmtree(sub)
    os.symlink(outside, sub)
    res = snap.capture("sub/b.json")
    assert isinstance(res, Skipped) and res.retry and snap.memory.used == 2
    snap.reset_staging()  # a new pass resolves again: the link leads out of data_dir, so
    # what is below it is no store file (the link itself is refused, under its own name)
    assert snap.capture("sub/b.json") == Vanished("sub/b.json")
    assert snap.capture("sub") == Skipped("sub", "symlink points outside data_dir")


def test_links_inside_data_dir_are_followed(snap: Snapshotter) -> None:
    """A file link that stays inside data_dir is captured through; a path through a
    directory link is no store file (the walk never enters one): its file is captured
    under its own path, and the linked name is a deletion (an upload that held it, from
    an event named through the link, leaves it)."""
    real_dir = snap.data_dir / "real"
    real_dir.mkdir()
    (real_dir / "f.json").write_text('{"in": 1}')
    os.symlink(real_dir, snap.data_dir / "alias")
    os.symlink(real_dir / "f.json", snap.data_dir / "link.json")
    for rel in ("link.json", "real/f.json"):
        res = snap.capture(rel)
        assert isinstance(res, Captured), rel
        held = res.files[0].held
        assert held is not None and held.data == b'{"in": 1}'
    assert snap.capture("alias/f.json") == Vanished("alias/f.json")
    os.symlink(".", real_dir / "here")  # a link on the way, below a real directory
    assert snap.capture("real/here/f.json") == Vanished("real/here/f.json")


def test_links_are_judged_by_what_they_lead_to(snap: Snapshotter) -> None:
    """The capture's first look is the entry's own ``lstat``; a link is then followed as
    before: a dangling one is a deletion, a loop is refused, a link to a directory is no
    file."""
    os.symlink(snap.data_dir / "missing.json", snap.data_dir / "dangling.json")
    os.symlink(snap.data_dir / "loop.json", snap.data_dir / "loop.json")
    (snap.data_dir / "d").mkdir()
    os.symlink(snap.data_dir / "d", snap.data_dir / "dir-link.json")
    assert snap.capture("dangling.json") == Vanished("dangling.json")
    assert snap.capture("loop.json") == Skipped("loop.json", "symlink loop")
    assert snap.capture("dir-link.json") == Vanished("dir-link.json")
    assert snap.capture("d") == Vanished("d")
    assert snap.memory.used == 0


def test_file_rewritten_after_the_first_look_is_read_again(
    snap: Snapshotter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first stat of a held file is the capture's first look: a file rewritten after it
    (before the read) is read again, and its capture holds the new bytes and stat."""
    path = snap.data_dir / "s.json"
    path.write_text('{"v": 1}')
    resolve = snap._resolve
    rewrites: list[str] = []

    def resolve_then_rewrite(live: str, plain: bool = False) -> str:
        if not rewrites:
            rewrites.append(live)
            path.write_text('{"v": 22222}')
        return resolve(live, plain)

    monkeypatch.setattr(snap, "_resolve", resolve_then_rewrite)
    res = snap.capture("s.json")
    assert isinstance(res, Captured) and rewrites
    (f,) = res.files
    assert f.held is not None and f.held.data == b'{"v": 22222}'
    assert f.size == 12 and f.live.size == 12 and f.live.inode == path.stat().st_ino
    assert f.sha256 == _sha(path)
    assert snap.memory.used == 12


def test_idle_wal_sqlite_capture_leaves_the_store_untouched(
    snap: Snapshotter, tmp_path: Path
) -> None:
    """A WAL-mode SQLite database nobody has open has no ``-wal``/``-shm``: reading it must
    not create and delete them in data_dir (the watcher would see its side files change and
    queue the database again after every capture, forever)."""
    db = snap.data_dir / "wal.db"
    make_sqlite(db, rows=10)
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("INSERT INTO events (what, at) VALUES ('wal', 1)")
    con.commit()
    con.close()
    assert sorted(p.name for p in snap.data_dir.iterdir()) == ["wal.db"]
    before = os.stat(snap.data_dir).st_mtime_ns
    res = snap.capture("wal.db")
    assert isinstance(res, Captured)
    assert os.stat(snap.data_dir).st_mtime_ns == before  # no entry created nor removed
    assert sorted(p.name for p in snap.data_dir.iterdir()) == ["wal.db"]
    (f,) = res.files
    copy = tmp_path / "copy.db"
    shutil.copy(f.staged, copy)
    assert len(sqlite_rows(copy, "events")) == 11
    assert sqlite3.connect(copy).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_wal_sqlite_with_a_live_writer_is_read_through_its_wal(
    snap: Snapshotter, tmp_path: Path
) -> None:
    """With a connection open (its ``-wal`` holds commits), the capture sees them."""
    db = snap.data_dir / "wal.db"
    make_sqlite(db, rows=10)
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("INSERT INTO events (what, at) VALUES ('wal', 1)")
    con.commit()
    try:
        assert (snap.data_dir / "wal.db-wal").stat().st_size > 0
        res = snap.capture("wal.db")
    finally:
        con.close()
    assert isinstance(res, Captured)
    (f,) = res.files
    copy = tmp_path / "copy.db"
    shutil.copy(f.staged, copy)
    assert len(sqlite_rows(copy, "events")) == 11
