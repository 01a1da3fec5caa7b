"""A file written again within the timestamp tick of its capture, on a file system whose
timestamps are coarse (FAT 2 s; ext2/3 with small inodes, HFS+: 1 s), keeps the very stat
the capture saw. That stat is never taken as proof that the file is unchanged: the next
reconcile hashes it again, and ``run --once``'s quick check does not record it. The tests
run where timestamps are fine: ``coarse`` makes every stamp count as a coarse one."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest

from akoshad import fastpath
from akoshad.fastpath import RACY_NS
from akoshad.fileio import LiveStat
from akoshad.pipeline.capture.snapshot import Captured, Snapshotter
from akoshad.pipeline.plan import restat
from akoshad.pipeline.storefiles import PathFilter
from akoshad.pipeline.watch import reconcile
from akoshad.store.db import LedgerEntry
from tests.unit.test_plan import row

SECOND = 1_000_000_000


@pytest.fixture
def coarse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastpath, "COARSE_TICK_NS", 1)


def _captured_row(store: Path, staging: Path, *, later_ns: int = 0) -> dict[str, LedgerEntry]:
    """The ledger as an upload of ``notes.json`` captured now leaves it (``later_ns``: the
    capture made that much later than the file's last write)."""
    got = Snapshotter(store, staging).capture("notes.json")
    assert isinstance(got, Captured)
    (f,) = got.files
    f = replace(f, captured_ns=f.captured_ns + later_ns)
    return {"notes.json": restat(row("notes.json"), f)}


@pytest.mark.usefixtures("coarse")
def test_a_file_captured_within_its_write_tick_is_hashed_again(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "notes.json").write_text('{"v": 1}')
    # captured at once: written again in the same tick, nothing in its stat would move
    ledger = _captured_row(store, tmp_path / "staging")
    changes = reconcile(store, PathFilter(), ledger).changes
    assert changes == [("notes.json", "modified")]  # before: [] (the new content lost)
    # captured when its last write was long over: the stat is the proof it was
    ledger = _captured_row(store, tmp_path / "staging2", later_ns=10 * SECOND)
    assert reconcile(store, PathFilter(), ledger).changes == []


def test_settled_marks_a_recent_coarse_stat_only() -> None:
    now = 1_796_434_759 * SECOND  # a whole second, as ext2/3 or HFS+ date
    quiet = LiveStat(3, now - 5 * SECOND, now - 5 * SECOND, 7)
    assert quiet.settled(now) == quiet
    recent = LiveStat(3, now - SECOND, now - SECOND, 7)
    assert recent.settled(now) == LiveStat(3, now - SECOND, 0, 7)
    ahead = LiveStat(3, now + 60 * SECOND, now + 60 * SECOND, 7)  # a clock set back since
    assert ahead.settled(now).ctime_ns == 0
    fine = LiveStat(3, now - 123_457, now - 123_457, 7)  # ext4, xfs, APFS: trusted
    assert fine.settled(now) == fine
    assert RACY_NS > 2 * SECOND  # FAT's tick and more


@pytest.mark.usefixtures("coarse")
def test_the_quick_check_records_no_store_written_just_before_its_walk(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "notes.json").write_text("{}")
    config = tmp_path / "c.yaml"
    config.write_text("{}")
    argv = ["run", "--once", "--config", str(config)]
    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    state = tmp_path / "state"
    state.mkdir()
    stats = fastpath.stat_map(store)
    walked = time.time_ns()
    fastpath.record_unchanged(argv, env, store, state, stats, walked_ns=walked)
    assert not fastpath.try_unchanged(argv, env)  # before: "nothing changed"
    later = walked + RACY_NS + SECOND  # the same store, walked when its writes were over
    fastpath.record_unchanged(argv, env, store, state, stats, walked_ns=later)
    assert fastpath.try_unchanged(argv, env)
