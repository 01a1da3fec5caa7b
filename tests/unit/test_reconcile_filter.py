"""include/exclude in the reconcile and the capture: a file left out leaves the snapshot
unread, except when no file is selected at all (an include typo, an emptied or unmounted
store must not empty the backup)."""

from __future__ import annotations

from pathlib import Path

import pytest

from akoshad.pipeline.capture.snapshot import Captured, Snapshotter, Vanished
from akoshad.pipeline.store_walk import walk_store
from akoshad.pipeline.storefiles import PathFilter
from akoshad.pipeline.watch import reconcile
from tests.unit.test_plan import row


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    (root / "sessions").mkdir(parents=True)
    (root / "notes.json").write_text("{}")
    (root / "sessions" / "a.json").write_text("{}")
    return root


LEDGER = {p: row(p) for p in ("notes.json", "sessions/a.json", "gone.json")}


@pytest.mark.parametrize(
    ("include", "exclude", "changes", "on_disk", "excluded"),
    [
        # no filter: the vanished file is deleted, the rest compared with the ledger
        ((), (), {"gone.json": "deleted"}, 2, 0),
        # one file newly excluded: out of the snapshot, like a deleted one
        ((), ("notes.json",), {"gone.json": "deleted", "notes.json": "deleted"}, 1, 1),
        # an include that still selects a file: the others leave the snapshot
        (("sessions/*",), (), {"gone.json": "deleted", "notes.json": "deleted"}, 1, 1),
        # an include that selects none of the store's files: the backup is kept as it is
        # (not even what is really gone leaves it: an empty store empties no backup)
        (("*.jsn",), (), {}, 0, 2),
        # everything excluded: the same
        ((), ("*",), {}, 0, 2),
    ],
)
def test_reconcile_of_what_the_filter_leaves_out(
    store: Path,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    changes: dict[str, str],
    on_disk: int,
    excluded: int,
) -> None:
    flt = PathFilter(include, exclude)
    walk = walk_store(store, flt)
    assert walk.excluded == excluded
    # unchanged files differ from the ledger's made-up stat: only look at removals
    result = reconcile(store, flt, LEDGER, walk=walk)
    assert {p: k for p, k in result.changes if k == "deleted"} == changes
    assert (result.on_disk, result.excluded) == (on_disk, excluded)


def test_a_file_excluded_after_it_was_queued_is_not_read(store: Path, tmp_path: Path) -> None:
    snap = Snapshotter(store, tmp_path / "staging", path_filter=PathFilter((), ("notes.json",)))
    assert snap.capture("notes.json") == Vanished("notes.json")  # a read: Captured
    assert isinstance(snap.capture("sessions/a.json"), Captured)
    snap.path_filter = PathFilter()  # a reload that drops the exclude
    assert isinstance(snap.capture("notes.json"), Captured)


def test_an_empty_store_queues_no_removal(tmp_path: Path) -> None:
    """``data_dir`` emptied, or a mount point with nothing mounted: the last upload stays
    (nothing queued), and the reconcile says no file is selected."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = reconcile(empty, PathFilter(), LEDGER)
    assert (result.changes, result.on_disk, result.excluded) == ([], 0, 0)
