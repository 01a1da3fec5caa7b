"""The walk of ``run --once`` in a forked child: the same answer as in process, and an
in-process walk whenever the child cannot give one."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from akoshad.fastpath import MovedSince, StatMap
from akoshad.pipeline.store_walk import walk_store
from akoshad.pipeline.storefiles import PathFilter
from akoshad.runtime import walk_child


def _store(root: Path) -> Path:
    store = root / "store"
    for i in range(30):
        p = store / "sessions" / f"s{i}" / "state.json"
        p.parent.mkdir(parents=True)
        p.write_text("{}")
    (store / "reflection.duckdb").write_bytes(b"x" * 100)
    (store / "reflection.duckdb.wal").write_bytes(b"w")
    (store / "x.tmp").mkdir()
    (store / "x.tmp" / "spill").write_bytes(b"t")
    (root / "outside").write_text("secret")
    (store / "leak").symlink_to(root / "outside")
    (store / os.fsdecode(b"bad-\xff")).write_bytes(b"n")
    return store


def _in_process(store: Path, flt: PathFilter) -> tuple[object, StatMap]:
    stats: StatMap = {}
    return walk_store(store, flt, stats), stats


@pytest.mark.skipif(not walk_child.may_fork(), reason="forks only on Linux, single-threaded")
def test_the_forked_walk_answers_as_the_walk_in_process(tmp_path: Path) -> None:
    store = _store(tmp_path)
    flt = PathFilter.of([], ["sessions/s1/**"])
    result, stats = walk_child.begin_walk(store, flt).result(timeout=30)
    expected, expected_stats = _in_process(store, flt)
    assert result == expected
    assert stats == expected_stats
    assert "leak" in result.refused and "reflection.duckdb" in result.files
    assert "sessions/s1/state.json" not in result.files
    assert "x.tmp/spill" in stats  # the quick check's stats cover ignored directories too


@pytest.mark.skipif(not walk_child.may_fork(), reason="forks only on Linux, single-threaded")
def test_the_forked_walk_names_the_files_with_a_name_outside(tmp_path: Path) -> None:
    """run --once's walk tells the files hard-linked from outside data_dir, as the
    daemon's does."""
    store = _store(tmp_path)
    os.link(store / "reflection.duckdb", tmp_path / "copy.duckdb")
    result, _ = walk_child.begin_walk(store, PathFilter.of([], [])).result(timeout=30)
    assert result.outside_names == {"reflection.duckdb": 1}


def test_a_walk_names_each_file_with_one_string(tmp_path: Path) -> None:
    """``run --once`` keeps the walk's files and its stats to its end: each file's name is
    one string in both (100,000 files: 8 MB less), also after the forked child's pickle."""
    store = _store(tmp_path)
    flt = PathFilter.of([], [])
    stats: StatMap | None = {}
    walks = [(walk_store(store, flt, stats), stats)]
    if walk_child.may_fork():
        walks.append(walk_child.begin_walk(store, flt).result(timeout=30))
    for result, stats in walks:
        keys = {k: k for k in stats or {}}
        assert "sessions/s1/state.json" in result.files
        assert all(keys[f] is f for f in result.files)


def test_the_catch_up_compares_as_it_walks_without_a_second_map(tmp_path: Path) -> None:
    """The daemon's catch-up (its watch set up) walks the store again to find what moved
    since the first walk: it held a second stat map of the whole store beside the first
    (100,000 files: 40 MB more). Each entry is now compared as it is walked."""
    store = _store(tmp_path)
    flt = PathFilter.of([], [])
    before: StatMap = {}
    walk_store(store, flt, before)
    (store / "sessions" / "s1" / "state.json").write_text('{"a": 1}')
    (store / "sessions" / "s2" / "state.json").unlink()
    (store / "new.json").write_text("{}")
    now = MovedSince(before)
    walk_store(store, flt, now)
    assert len(now) == 0  # nothing kept
    assert set(now.moved) >= {"sessions/s1/state.json", "new.json"}
    assert "sessions/s3/state.json" not in now.moved
    assert set(before) == {"sessions/s2/state.json"}  # what is left: gone


def test_a_child_that_fails_is_answered_by_a_walk_in_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _store(tmp_path)
    parent = os.getpid()
    real = walk_store
    in_parent: list[int] = []

    def child_dies(root: Path, flt: PathFilter, stats: StatMap | None = None) -> object:
        if os.getpid() != parent:
            raise RuntimeError("the child's walk fails")
        in_parent.append(1)
        return real(root, flt, stats)

    monkeypatch.setattr(walk_child, "walk_store", child_dies)
    result, stats = walk_child.begin_walk(store, PathFilter()).result(timeout=30)
    expected, expected_stats = _in_process(store, PathFilter())
    assert (result, stats) == (expected, expected_stats)
    assert in_parent == [1]  # walked here, once


def test_an_error_of_the_walk_reaches_the_caller(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(root: Path, flt: PathFilter, stats: StatMap | None = None) -> object:
        raise PermissionError("cannot list the store")

    monkeypatch.setattr(walk_child, "walk_store", broken)
    walked = walk_child.begin_walk(_store(tmp_path), PathFilter())
    assert isinstance(walked.exception(timeout=30), PermissionError)


def test_no_fork_while_another_thread_runs() -> None:
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert not walk_child.may_fork()
    finally:
        stop.set()
        t.join()
