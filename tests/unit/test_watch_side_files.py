"""A side file's event that changed nothing (a reader opening it; SQLite run as root chowns
each side file it opens) is no change of its database: the capture's own read of a database
held open by its writer must not queue that database again, for ever."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from watchfiles import Change

from akoshad.fileio import LiveStat
from akoshad.pipeline.debounce import Kind
from akoshad.pipeline.storefiles import PathFilter
from akoshad.pipeline.watch import StoreWatcher, reconcile
from tests.unit.test_plan import row


def _watcher(store: Path, seen: list[tuple[str, Kind]]) -> StoreWatcher:
    def on_change(changes: Iterable[tuple[str, Kind]]) -> None:
        seen.extend(changes)

    return StoreWatcher(store, PathFilter(), on_change, lambda: None, asyncio.Event())


def _chown_sides(db: Path) -> None:
    """What a reader run as root does to the side files it opens (same owner: no change)."""
    for side in ("-wal", "-shm"):
        path = db.with_name(db.name + side)
        st = path.stat()
        os.chown(path, st.st_uid, st.st_gid)


def test_a_side_files_event_that_changed_nothing_is_no_change(tmp_path: Path) -> None:
    (tmp_path / "x.db").write_bytes(b"db")
    wal = tmp_path / "x.db-wal"
    wal.write_bytes(b"frame 1")
    watcher = _watcher(tmp_path, [])
    batch = {(Change.modified, str(wal))}
    assert watcher._changes_of(batch) == [("x.db", "modified")]
    os.chown(wal, wal.stat().st_uid, wal.stat().st_gid)  # a reader opened it, as root
    assert watcher._changes_of(batch) == []
    with wal.open("ab") as fh:  # a commit
        fh.write(b"frame 2")
    assert watcher._changes_of(batch) == [("x.db", "modified")]
    # a file of its own (no database beside it) and the database itself always count
    own = tmp_path / "notes-wal"
    own.write_bytes(b"n")
    for _ in range(2):
        assert watcher._changes_of({(Change.modified, str(own))}) == [("notes-wal", "modified")]
        assert watcher._changes_of({(Change.modified, str(tmp_path / "x.db"))}) == [
            ("x.db", "modified")
        ]


async def test_reading_a_database_its_writer_holds_open_queues_nothing(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE t (x)")
    writer.execute("INSERT INTO t VALUES (1)")
    seen: list[tuple[str, Kind]] = []
    watcher = _watcher(tmp_path, seen)
    task = asyncio.create_task(watcher.run(first_reset_done=True))
    try:
        for _ in range(100):  # up once it has answered (a timeout, 1 s at most)
            if watcher.answered:
                break
            await asyncio.sleep(0.05)
        writer.execute("INSERT INTO t VALUES (2)")  # a commit: -wal written
        for _ in range(40):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert ("live.db", "modified") in seen
        for n in range(4):  # captures: each reads the database, its writer still there
            await asyncio.sleep(0.4)
            if n == 1:  # the first read met a -shm not seen before: one capture more
                seen.clear()
            reader = sqlite3.connect(f"file:{db}?mode=rw", uri=True)
            reader.backup(sqlite3.connect(":memory:"))
            reader.close()
            _chown_sides(db)  # what the read does when run as root
        await asyncio.sleep(0.4)
        assert seen == []
        writer.execute("INSERT INTO t VALUES (3)")
        for _ in range(40):
            if seen:
                break
            await asyncio.sleep(0.05)
        assert seen == [("live.db", "modified")]
    finally:
        watcher.stop.set()
        await asyncio.wait_for(task, 10)
        writer.close()


def test_a_persist_mode_journal_left_beside_its_database_is_no_change(tmp_path: Path) -> None:
    """In PERSIST mode the -journal stays after each commit, its header zeroed after the
    database was written (so it is the newer): the database as captured is unchanged, and
    the start-up check (and each run --once) must not capture it again. A -wal newer than
    the capture still is a change (commits live there until a checkpoint)."""
    db = tmp_path / "p.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=PERSIST")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.close()
    journal = tmp_path / "p.db-journal"
    assert journal.stat().st_size > 0
    later = db.stat().st_mtime_ns + 1  # as a clock finer than the kernel's tick shows it
    os.utime(journal, ns=(later, later))
    entry = dataclasses.replace(row("p.db"), live=LiveStat.of(db.stat()), kind="sqlite")
    assert reconcile(tmp_path, PathFilter(), {"p.db": entry}).changes == []
    journal.unlink()
    wal = tmp_path / "p.db-wal"
    wal.write_bytes(b"frames")
    os.utime(wal, ns=(later, later))
    assert reconcile(tmp_path, PathFilter(), {"p.db": entry}).changes == [("p.db", "modified")]


def test_a_side_file_removed_is_forgotten(tmp_path: Path) -> None:
    (tmp_path / "x.db").write_bytes(b"db")
    wal = tmp_path / "x.db-wal"
    wal.write_bytes(b"frame")
    watcher = _watcher(tmp_path, [])
    assert watcher._changes_of({(Change.modified, str(wal))}) == [("x.db", "modified")]
    assert str(wal) in watcher._sides
    wal.unlink()
    assert watcher._changes_of({(Change.deleted, str(wal))}) == [("x.db", "modified")]
    assert watcher._sides == {}
