"""A store tree 1,000 levels deep: walked, captured, restored and removed without
recursion (Python's limit stopped ``run``, the daemon's start, restore and drill)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from akoshad.pipeline.capture.snapshot import Captured, Snapshotter
from akoshad.pipeline.store_walk import walk_store
from akoshad.pipeline.storefiles import PathFilter
from akoshad.private import remove_tree
from akoshad.restore import landing
from akoshad.restore.destdir import remove_partials

DEPTH = 1000


@pytest.fixture
def tmp_path(tmp_path: Path) -> Iterator[Path]:
    """pytest's own, emptied afterwards without recursion: pytest removes an old run's
    directories with ``rmtree``, which a deep tree left there stops (RecursionError) for
    every later run."""
    yield tmp_path
    stack = [(str(tmp_path), False)]
    while stack:
        top, emptied = stack.pop()
        if emptied:
            os.rmdir(top)
            continue
        stack.append((top, True))
        for entry in os.scandir(top):
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, False))
            else:
                os.unlink(entry.path)


def _deep(root: Path) -> str:
    """Make ``d/d/.../leaf.json`` (DEPTH directories) under ``root``; its store path."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(DEPTH):
            os.mkdir("d", dir_fd=fd)
            sub = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        leaf = os.open("leaf.json", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"deep")
        os.close(leaf)
    finally:
        os.close(fd)
    return "d/" * DEPTH + "leaf.json"


def test_a_deep_tree_is_walked_and_captured(tmp_path: Path) -> None:
    """``run --once`` and the daemon's start: 'run failed: RecursionError: maximum
    recursion depth exceeded' for a store with a tree 1,000 levels deep, nothing backed up."""
    store = tmp_path / "store"
    store.mkdir()
    rel = _deep(store)
    (store / "top.json").write_text("{}")
    stats: dict[str, list[int]] = {}
    assert walk_store(store, PathFilter.of([], []), stats).files == [rel, "top.json"]
    assert rel in stats
    snap = Snapshotter(store, tmp_path / "staging")
    snap.reset_staging()
    res = snap.capture(rel)
    assert isinstance(res, Captured)
    held = res.files[0].held
    assert held is not None and held.data == b"deep"


def test_a_deep_path_is_landed_with_few_descriptors(tmp_path: Path) -> None:
    """restore: 'restore failed: RecursionError' opening the directories of a deep path;
    they are opened level by level, idle ones closed past the limit on the way."""
    dest = tmp_path / "dest"
    dest.mkdir()
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    tree = landing.DestTree(fd, force=False, max_open=8)
    try:
        key, dir_fd = tree.acquire("d/" * DEPTH + "leaf.json")
        assert key == "/".join(["d"] * DEPTH)
        assert len(tree._dirs) <= 9
        os.close(os.open("leaf.json", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=dir_fd))
        tree.release(key, changed=True)
        tree.close()
    finally:
        os.close(fd)
    assert (dest / ("d/" * DEPTH + "leaf.json")).is_file()


def test_a_deep_tree_is_removed(tmp_path: Path) -> None:
    """A drill of such a store: 'drill failed: RecursionError', its copy of the store
    left in state_dir at each drill (and at each clean-up of what drills left)."""
    top = tmp_path / "drill-x"
    top.mkdir()
    _deep(top)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept").write_text("kept")
    os.symlink(outside, top / "link")
    os.symlink(outside, tmp_path / "top-link")
    remove_tree(tmp_path / "top-link")
    remove_tree(top)
    assert not top.exists()
    assert (outside / "kept").read_text() == "kept"


def test_a_deep_dest_is_cleared_of_partial_files(tmp_path: Path) -> None:
    """restore --force into a DIR holding such a tree (a restore of it before): 'restore
    failed: RecursionError' looking for what a killed restore left."""
    dest = tmp_path / "dest"
    dest.mkdir()
    rel = _deep(dest)
    partial = dest / rel.replace("leaf.json", ".akoshad-restore-0123456789ab")
    partial.write_bytes(b"half")
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert remove_partials(fd) == 1
    finally:
        os.close(fd)
    assert not partial.exists() and (dest / rel).is_file()
