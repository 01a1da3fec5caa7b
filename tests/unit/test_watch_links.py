"""The watch's events through symlinked directories (the watch follows them; the walk
never enters one)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from watchfiles import Change

from akoshad.pipeline.storefiles import PathFilter
from akoshad.pipeline.watch import StoreWatcher


def _watcher(store: Path) -> StoreWatcher:
    return StoreWatcher(
        store, PathFilter.of([], []), lambda _changes: None, lambda: None, asyncio.Event()
    )


def test_an_event_through_a_directory_link_names_the_file_where_it_is(tmp_path: Path) -> None:
    """The watch may name a store directory's events by a link to it (its inotify watch is
    the directory's, added again under the link's name): sub/b.json changed, reported as
    alias/b.json, was queued as alias/b.json and uploaded under that name while sub/b.json
    kept its old content in every upload. Events are named by where the file is, and
    those from a linked directory outside data_dir (its own log file, written at each
    warning about them) are dropped."""
    store = tmp_path / "store"
    (store / "sub" / "deep").mkdir(parents=True)
    (store / "sub" / "b.json").write_text("1")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "d.log").write_text("log")
    os.symlink("sub", store / "alias")
    os.symlink("..", store / "sub" / "up")
    os.symlink(tmp_path / "outside", store / "out")
    batch = {
        (Change.modified, str(store / "alias" / "b.json")),
        (Change.added, str(store / "alias" / "deep" / "new.json")),
        (Change.modified, str(store / "sub" / "up" / "top.json")),
        (Change.modified, str(store / "out" / "d.log")),
        (Change.modified, str(store / "sub" / "b.json")),
    }
    assert sorted(_watcher(store)._changes_of(batch)) == [
        ("sub/b.json", "modified"),
        ("sub/b.json", "modified"),
        ("sub/deep/new.json", "added"),
        ("top.json", "modified"),
    ]


def test_events_of_a_linked_data_dir_are_store_paths(tmp_path: Path) -> None:
    """``data_dir`` itself a symlink: events named under it are the store's."""
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "store")
    batch = {(Change.added, str(tmp_path / "store" / "a.json"))}
    assert _watcher(tmp_path / "store")._changes_of(batch) == [("a.json", "added")]
