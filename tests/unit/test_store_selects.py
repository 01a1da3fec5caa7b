"""Whether a store selects any file is answered at its first file: a deleted store file
made the daemon look whether the store was emptied (54f3c25), and that look walked the
whole store after every batch with a deletion (a store of 200,000 files: seconds of CPU
per batch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from akoshad.pipeline import feed_expand, store_walk
from akoshad.pipeline.feed_expand import store_emptied
from akoshad.pipeline.store_walk import selects_a_file, walk_store
from akoshad.pipeline.storefiles import PathFilter


def _no_whole_walk(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("the whole store was walked")


def test_a_store_with_files_is_answered_without_a_whole_walk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for d in range(20):
        (tmp_path / f"d{d}").mkdir()
        for i in range(50):
            (tmp_path / f"d{d}" / f"f{i}.json").write_text("{}")
    monkeypatch.setattr(store_walk, "walk_store", _no_whole_walk)
    monkeypatch.setattr(feed_expand, "walk_store", _no_whole_walk)
    assert selects_a_file(tmp_path, PathFilter())
    gone = [("d0/gone.json", "deleted")]
    assert store_emptied(tmp_path, PathFilter(), gone) is None  # files left: queued


@pytest.mark.parametrize(
    ("names", "flt"),
    [
        ([], PathFilter()),
        (["a.txt"], PathFilter(exclude=("*.txt",))),
        (["a.txt", "b.json"], PathFilter(include=("*.json",))),
        (["x.db-wal"], PathFilter()),  # a side file without its database: a file
        (["x.db", "x.db-wal"], PathFilter(exclude=("x.db",))),
        ([".akoshad-tmp-1"], PathFilter()),
    ],
)
def test_the_answer_is_the_walk_s(tmp_path: Path, names: list[str], flt: PathFilter) -> None:
    for name in names:
        (tmp_path / name).write_text("x")
    assert selects_a_file(tmp_path, flt) == bool(walk_store(tmp_path, flt).files)


def test_an_emptied_store_is_still_said(tmp_path: Path) -> None:
    (tmp_path / "skip.txt").write_text("x")
    gone = [("a.json", "deleted")]
    assert store_emptied(tmp_path, PathFilter(exclude=("*.txt",)), gone) == 1  # left out
