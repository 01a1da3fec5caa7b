"""Side files, temp files, include/exclude and the disk walk."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from akoshad import fastpath
from akoshad.fastpath import stat_map
from akoshad.pipeline.capture.files import detect_kind
from akoshad.pipeline.store_walk import walk_store
from akoshad.pipeline.storefiles import (
    DUCKDB_MAGIC,
    SQLITE_MAGIC,
    PathFilter,
    change_of,
    is_side_file,
    owner_of,
    to_change,
)

ALL = PathFilter()


@pytest.mark.parametrize(
    ("changed", "queued"),
    [
        ("reflection.duckdb", "reflection.duckdb"),
        ("reflection.duckdb.wal", "reflection.duckdb"),
        ("workflow_metrics.db.wal", "workflow_metrics.db"),
        ("activity.db-journal", "activity.db"),
        ("activity.db-wal", "activity.db"),
        ("activity.db-shm", "activity.db"),
        ("sessions/a/state.json", "sessions/a/state.json"),
        ("reflection.duckdb.tmp/spill.bin", None),
        ("x.tmp", None),
        (".write_test", None),
        ("sub/.write_test", None),
        ("state.json.akoshad-tmp-1234", None),
    ],
)
def test_to_change(changed: str, queued: str | None) -> None:
    assert to_change(changed, ALL) == queued


def test_owner_of_plain_file_is_itself() -> None:
    assert owner_of("notes.txt") == "notes.txt"


def test_include_exclude() -> None:
    flt = PathFilter.of(["*.duckdb", "sessions/**"], ["sessions/old/**"])
    assert flt.allows("reflection.duckdb")
    assert flt.allows("sessions/a/state.json")
    assert not flt.allows("activity.db")
    assert not flt.allows("sessions/old/state.json")
    assert to_change("reflection.duckdb.wal", flt) == "reflection.duckdb"
    assert to_change("activity.db-journal", flt) is None


def test_detect_kind_by_content(tmp_path: Path) -> None:
    import sqlite3

    import duckdb

    duckdb.connect(str(tmp_path / "a.db")).close()  # DuckDB despite .db
    sqlite3.connect(tmp_path / "b.duckdb").execute("CREATE TABLE t(x)").connection.commit()
    (tmp_path / "c.json").write_text("{}")
    assert detect_kind(tmp_path / "a.db") == "duckdb"
    assert detect_kind(tmp_path / "b.duckdb") == "sqlite"
    assert detect_kind(tmp_path / "c.json") == "file"


def _tricky_store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    (root / "sessions" / "s1").mkdir(parents=True)
    (root / "a.duckdb").write_bytes(b"x")
    (root / "a.duckdb.wal").write_bytes(b"x")
    (root / "b.db").write_bytes(b"x")
    (root / "b.db-journal").write_bytes(b"x")
    (root / "sessions" / "s1" / "state.json").write_text("{}")
    (root / "x.duckdb.tmp").mkdir()
    (root / "x.duckdb.tmp" / "spill").write_bytes(b"x")
    outside = tmp_path / "secret.txt"
    outside.write_text("do not sync")
    os.symlink(outside, root / "link-out.txt")
    os.symlink(root / "b.db", root / "link-in.db")
    os.symlink(root, root / "loop")  # a directory loop
    os.symlink(root / "loop2", root / "loop2")  # a self-referencing link
    bad = os.fsencode(str(root)) + b"/bad-\xff.json"
    with open(bad, "wb") as fh:
        fh.write(b"{}")
    return root


def test_walk_skips_side_files_and_unsafe_links(tmp_path: Path) -> None:
    root = _tricky_store(tmp_path)
    walk = walk_store(root, ALL)
    assert walk.files == ["a.duckdb", "b.db", "link-in.db", "sessions/s1/state.json"]
    assert walk.refused["link-out.txt"] == "symlink points outside data_dir"
    assert walk.refused["loop2"] == "symlink loop"  # as the capture calls it
    assert any("UTF-8" in r for r in walk.refused.values())
    assert walk.not_files == {}


def test_walk_names_the_entries_that_are_no_file(tmp_path: Path) -> None:
    """A FIFO, a socket and a link to nothing are not backed up, but named (said once by
    the feed), not dropped without a word; left out by include/exclude, not named."""
    root = tmp_path / "store"
    root.mkdir()
    (root / "a.json").write_text("{}")
    os.mkfifo(root / "pipe")
    os.mkfifo(root / "excluded.fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "s.sock"))
    os.symlink(root / "missing.json", root / "dangling.json")
    os.symlink(root / "pipe", root / "to-pipe")
    try:
        walk = walk_store(root, PathFilter.of([], ["*.fifo"]))
    finally:
        sock.close()
    assert walk.files == ["a.json"] and walk.refused == {}
    assert walk.not_files == {
        "pipe": "a FIFO",
        "s.sock": "a socket",
        "dangling.json": "a symlink to nothing",
        "to-pipe": "a symlink to a FIFO, socket or device",
    }


def test_walk_reads_the_stats_the_quick_check_compares(tmp_path: Path) -> None:
    """One walk serves the reconcile and the ``run --once`` record: its stats are exactly
    ``fastpath.stat_map``'s, also below temp and non-UTF-8 directories, and the store files
    it lists are the same as without them."""
    root = _tricky_store(tmp_path)
    (root / "x.duckdb.tmp" / "deep").mkdir()
    (root / "x.duckdb.tmp" / "deep" / "more").write_bytes(b"y")
    bad_dir = os.fsencode(str(root)) + b"/dir-\xfe"
    os.mkdir(bad_dir)
    with open(bad_dir + b"/inside.json", "wb") as fh:
        fh.write(b"{}")
    flt = PathFilter.of([], ["b.db"])
    stats: dict[str, list[int]] = {}
    walk = walk_store(root, flt, stats)
    assert walk == walk_store(root, flt)
    assert stats == stat_map(root)
    assert "x.duckdb.tmp/deep/more" in stats and "b.db" in stats and "." in stats
    assert fastpath.store_digest(stats) == fastpath.store_digest(stat_map(root))
    (root / "x.duckdb.tmp" / "deep" / "more").write_bytes(b"yy")  # any entry at all
    assert fastpath.store_digest(stats) != fastpath.store_digest(stat_map(root))


def test_walk_missing_root(tmp_path: Path) -> None:
    assert walk_store(tmp_path / "nope", ALL).files == []


def test_walk_reports_a_directory_it_cannot_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory that cannot be listed (no read permission; simulated: tests run as
    root) hides its files: it is refused with the reason, not silently left out."""
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "state.json").write_text("{}")
    (tmp_path / "gone").mkdir()
    (tmp_path / "a.json").write_text("{}")
    real = os.scandir

    def scandir(path: str | Path) -> object:
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied")
        if Path(path).name == "gone":
            raise FileNotFoundError(2, "No such file or directory")
        return real(path)

    monkeypatch.setattr("akoshad.pipeline.store_walk.os.scandir", scandir)
    walk = walk_store(tmp_path, ALL)
    assert walk.files == ["a.json"]
    assert walk.refused == {"locked": "cannot list the directory: Permission denied"}


def test_a_file_named_like_a_side_file_of_no_database_is_a_store_file(tmp_path: Path) -> None:
    """``x.wal``, ``x-journal``, ``x-wal``, ``x-shm`` with no file ``x`` beside them (a
    directory ``x`` is none) are files of their own, not left out unsaid."""
    for name in ("notes.wal", "daily-journal", "tool-shm", "my-wal", "d-journal", "db", "db.wal"):
        (tmp_path / name).write_text("x")
    (tmp_path / "d").mkdir()
    assert walk_store(tmp_path, ALL).files == [
        "d-journal",
        "daily-journal",
        "db",
        "my-wal",
        "notes.wal",
        "tool-shm",
    ]
    assert walk_store(tmp_path, PathFilter.of([], ["*-journal"])).excluded == 2
    assert change_of("notes.wal", ALL, tmp_path) == "notes.wal"
    assert change_of("db.wal", ALL, tmp_path) == "db"
    assert change_of("d-journal", ALL, tmp_path) == "d-journal"
    assert change_of("d-journal", PathFilter.of([], ["d-*"]), tmp_path) is None


def test_a_side_file_name_beside_a_file_of_another_kind_is_a_store_file(tmp_path: Path) -> None:
    """``plain.txt.wal`` beside a text file, a DuckDB ``x-wal``, a SQLite ``s.db.wal``: the
    file by the owner's name is no database of that kind, so nothing captures them with it
    (they were left out, unsaid). A database's own side files, and one whose owner's head
    is not written yet or is a link (not read), still belong to it."""
    duck = bytes(8) + DUCKDB_MAGIC + bytes(4)
    (tmp_path / "plain.txt").write_text("a text file of more than sixteen bytes")
    (tmp_path / "s.db").write_bytes(SQLITE_MAGIC + bytes(100))
    (tmp_path / "x.duckdb").write_bytes(duck + bytes(100))
    (tmp_path / "new.duckdb").write_bytes(b"")
    os.symlink("plain.txt", tmp_path / "link.txt")
    sides = ("plain.txt.wal", "s.db.wal", "s.db-wal", "x.duckdb-wal", "x.duckdb.wal")
    for name in (*sides, "s.db-journal", "new.duckdb.wal", "link.txt.wal"):
        (tmp_path / name).write_text("side")
    files = walk_store(tmp_path, ALL).files
    assert [f for f in files if is_side_file(f)] == [
        "plain.txt.wal",
        "s.db.wal",
        "x.duckdb-wal",
    ]
    for name, owner in (
        ("plain.txt.wal", "plain.txt.wal"),
        ("s.db.wal", "s.db.wal"),
        ("x.duckdb-wal", "x.duckdb-wal"),
        ("x.duckdb.wal", "x.duckdb"),
        ("s.db-wal", "s.db"),
        ("s.db-journal", "s.db"),
        ("new.duckdb.wal", "new.duckdb"),
        ("link.txt.wal", "link.txt"),
    ):
        assert change_of(name, ALL, tmp_path) == owner, name
