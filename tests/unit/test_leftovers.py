"""No plaintext staging left behind: private staging directories, what a killed run left
removed (only akoshad's own, recognisably named; no link followed), restore partials."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from akoshad.private import fresh_private_dir
from akoshad.restore.destdir import FileSink, open_dest, remove_partials
from akoshad.runtime.leftovers import clean_leftovers, describe


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _outside(tmp_path: Path) -> Path:
    """A directory of someone else's, with a file that must survive."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("keep")
    return other


def test_fresh_private_dir_empties_and_never_follows_a_link(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "state" / "staging"
        assert fresh_private_dir(path) == 0
        assert _mode(path) == 0o700 and _mode(path.parent) == 0o700
        (path / "copy").write_text("plaintext")
        (path / "sub").mkdir()
        (path / "sub" / "x").write_text("plaintext")
        other = _outside(tmp_path)
        (path / "link").symlink_to(other)
        assert fresh_private_dir(path) == 3
        assert list(path.iterdir()) == [] and _mode(path) == 0o700
        assert (other / "keep.txt").read_text() == "keep"
        path.rmdir()
        path.symlink_to(other)  # a link where the directory goes: the link goes
        assert fresh_private_dir(path) == 1
        assert not path.is_symlink() and path.is_dir() and _mode(path) == 0o700
        assert (other / "keep.txt").read_text() == "keep"
        path.rmdir()
        path.write_text("a file in the way")
        assert fresh_private_dir(path) == 1 and path.is_dir()
        path.chmod(0o755)  # a directory left with another mode comes back private
        assert fresh_private_dir(path) == 0 and _mode(path) == 0o700
    finally:
        os.umask(old)


def test_clean_leftovers_removes_only_our_named_dirs(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    other = _outside(tmp_path)
    (state / "staging").mkdir()
    (state / "staging" / "000001-reflection.duckdb").write_text("plaintext")
    (state / "staging" / ".memories-x.json").write_text("plaintext")
    (state / "prune").mkdir()
    (state / "prune" / "pack-1.tmp").write_text("plaintext")
    (state / "packs").symlink_to(other)
    old_drill = state / "drill-abc"
    (old_drill / "store").mkdir(parents=True)
    (old_drill / ".lock").write_text("")
    (old_drill / "store" / "a.json").write_text("plaintext")
    for name in ("state.db", "akoshad.lock", "name_keys.json", "staging-not-ours"):
        (state / name).write_text("ours, kept")
    removed = clean_leftovers(state)
    assert removed == {"staging": 2, "packs": 1, "prune": 1, "drill": 1}
    assert describe(removed) == "staging (2), packs (1), prune (1), drill (1)"
    assert list((state / "staging").iterdir()) == [] and _mode(state / "staging") == 0o700
    assert not os.path.lexists(state / "prune") and not os.path.lexists(state / "packs")
    assert not old_drill.exists()
    assert (other / "keep.txt").read_text() == "keep"
    kept = sorted(p.name for p in state.iterdir())
    assert kept == ["akoshad.lock", "name_keys.json", "staging", "staging-not-ours", "state.db"]
    assert clean_leftovers(state) == {}  # nothing left the second time


def test_an_empty_dir_of_a_finished_run_is_removed_without_a_report(tmp_path: Path) -> None:
    """An empty ``prune/`` or ``packs/`` held nothing: the start must not say that an
    interrupted run left something (it did: "prune (1)" after a prune that had finished)."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "prune").mkdir(mode=0o700)
    (state / "packs").mkdir(mode=0o700)
    assert clean_leftovers(state) == {}
    assert not os.path.lexists(state / "prune") and not os.path.lexists(state / "packs")


def test_a_drill_in_progress_is_left_alone(tmp_path: Path) -> None:
    from akoshad.restore.drill import drop_drill_dir, make_drill_dir

    state = tmp_path / "state"
    path, fd = make_drill_dir(state)
    try:
        assert _mode(path) == 0o700
        assert clean_leftovers(state) == {}
        assert path.is_dir()
    finally:
        drop_drill_dir(path, fd)
    assert not path.exists()


def _dead_pid() -> int:
    """A pid no process has: pid_max itself is never given out (Linux)."""
    pid_max = Path("/proc/sys/kernel/pid_max")
    if pid_max.exists():
        return int(pid_max.read_text())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_restore_partials_of_a_dead_restore_are_removed(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    other = _outside(tmp_path)
    dead = _dead_pid()
    stale = [
        dest / f".akoshad-restore-{dead}-0123456789ab",
        dest / "sub" / f".akoshad-restore-{dead}-ba9876543210",
        dest / "sub" / ".akoshad-restore-00112233aabb",  # an older akoshad's name
    ]
    for p in stale:
        p.write_text("partial plaintext")
    live = dest / f".akoshad-restore-{os.getpid()}-0123456789ab"  # a restore running now
    live.write_text("being written")
    kept = [
        dest / "notes.txt",
        dest / ".akoshad-restore-notes",
        dest / f".akoshad-restore-{dead}-0123456789ab.bak",
        live,
    ]
    for p in kept[:-1]:
        p.write_text("user data")
    (dest / "linked").symlink_to(other)  # not walked
    (other / f".akoshad-restore-{dead}-0123456789ab").write_text("not ours to judge")
    (dest / f".akoshad-restore-{dead}-aaaaaaaaaaaa").symlink_to(other / "keep.txt")
    fd = open_dest(dest)  # what a restore does first
    try:
        assert not any(p.exists() for p in stale)
        assert all(p.exists() for p in kept)
        assert (other / f".akoshad-restore-{dead}-0123456789ab").exists()
        assert (other / "keep.txt").read_text() == "keep"
        assert remove_partials(fd) == 0
        sink = FileSink(fd, "new.txt", None)  # our own names carry our pid
        try:
            assert sink.tmp.startswith(f".akoshad-restore-{os.getpid()}-")
            assert _mode(dest / sink.tmp) == 0o600
            assert remove_partials(fd) == 0  # a live restore's file stays
        finally:
            sink.discard()
    finally:
        os.close(fd)


def test_staging_dirs_stay_private_under_a_loose_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from akoshad.pipeline.capture.snapshot import Captured, Snapshotter

    store = tmp_path / "store"
    store.mkdir()
    (store / "a.json").write_text('{"secret": 1}')
    con = sqlite3.connect(store / "activity.db")
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    real_connect = sqlite3.connect
    modes: list[int] = []

    def connect(target: object, *args: object, **kwargs: object) -> sqlite3.Connection:
        out = real_connect(target, *args, **kwargs)  # type: ignore[arg-type, call-overload]
        if isinstance(target, Path) and target.parent.name == "staging":
            modes.append(_mode(target))  # the copy as SQLite is about to write it
        return out

    monkeypatch.setattr(sqlite3, "connect", connect)
    old = os.umask(0o000)
    try:
        snap = Snapshotter(store, tmp_path / "state" / "staging", sleep=lambda _s: None)
        snap.memory_max_file = 0  # staged (a small file is otherwise held in memory)
        snap.reset_staging()
        result = snap.capture("a.json")
        assert isinstance(result, Captured)
        staged = result.files[0].staged
        assert staged.parent == snap.staging
        assert _mode(snap.staging) == 0o700 and _mode(staged) == 0o600
        db = snap.capture("activity.db")
        assert isinstance(db, Captured) and _mode(db.files[0].staged) == 0o600
        assert modes == [0o600]  # never readable by others, not even mid-copy
        assert snap.reset_staging() == 2 and list(snap.staging.iterdir()) == []
    finally:
        os.umask(old)


def test_a_restored_file_is_private_until_it_has_its_final_name(tmp_path: Path) -> None:
    """The file's own mode (here 0644) is given after the rename: a temporary file a kill
    leaves behind is never more open than 0600, even when it was complete."""
    dest = tmp_path / "dest"
    dest.mkdir()
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        sink = FileSink(fd, "notes.json", 0o644)
        sink.write(b'{"secret": 1}')
        sink.finish(13)
        sink.sync()
        (tmp,) = [p for p in dest.iterdir() if p.name.startswith(".akoshad-restore-")]
        assert _mode(tmp) == 0o600  # complete, synced, not yet renamed
        sink.publish("notes.json")
        assert _mode(dest / "notes.json") == 0o644
        assert (dest / "notes.json").read_bytes() == b'{"secret": 1}'
        assert [p.name for p in dest.iterdir()] == ["notes.json"]
    finally:
        os.close(fd)
