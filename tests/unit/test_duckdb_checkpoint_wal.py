"""DuckDB writes the commits made while a checkpoint runs to ``x.wal.checkpoint`` (merged
into ``x.wal`` when it ends; a writer killed during one leaves it, holding commits). It is
no store file of its own: its database is not captured while it is there (the pair lacks
those commits), and a restore removes one left beside a restored database."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import duckdb

from akoshad.fileio import LiveStat
from akoshad.pipeline.capture.snapshot import Captured, Skipped, Snapshotter
from akoshad.pipeline.store_walk import walk_store
from akoshad.pipeline.storefiles import PathFilter, change_of, owner_of
from akoshad.pipeline.watch import reconcile
from akoshad.restore.select import stale_sides
from tests.unit.test_plan import row


def test_a_database_beside_its_checkpoint_wal_waits_for_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    db = store / "x.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE t (i INTEGER)")
    con.execute("CHECKPOINT")
    con.execute("INSERT INTO t VALUES (1)")  # in x.duckdb.wal
    checkpoint_wal = store / "x.duckdb.wal.checkpoint"
    checkpoint_wal.write_bytes(b"commits made while a checkpoint ran")
    naps: list[float] = []
    snap = Snapshotter(store, tmp_path / "staging", sleep=naps.append)
    snap.reset_staging()
    res = snap.capture("x.duckdb")
    assert isinstance(res, Skipped) and res.retry
    assert "x.duckdb.wal.checkpoint holds commits the pair lacks" in res.reason
    assert naps and list(snap.staging.iterdir()) == []  # nothing copied
    checkpoint_wal.unlink()  # the checkpoint ended
    res = snap.capture("x.duckdb")
    assert isinstance(res, Captured)
    assert [f.path for f in res.files] == ["x.duckdb", "x.duckdb.wal"]
    con.close()


def test_a_checkpoint_wal_is_its_databases_side_file(tmp_path: Path) -> None:
    (tmp_path / "x.duckdb").write_bytes(b"db")
    (tmp_path / "x.duckdb.wal.checkpoint").write_bytes(b"wal")
    (tmp_path / "lone.wal.checkpoint").write_bytes(b"no database 'lone' beside it")
    assert owner_of("x.duckdb.wal.checkpoint") == "x.duckdb"
    assert change_of("x.duckdb.wal.checkpoint", PathFilter(), tmp_path) == "x.duckdb"
    assert walk_store(tmp_path, PathFilter()).files == ["lone.wal.checkpoint", "x.duckdb"]


@dataclass(frozen=True)
class _Entry:
    path: str
    kind: str


def test_a_checkpoint_wal_left_in_dest_beside_a_restored_database_is_stale() -> None:
    entries = [
        _Entry("x.duckdb", "duckdb"),
        _Entry("x.duckdb.wal", "duckdb-wal"),
        _Entry("y.duckdb", "duckdb"),
    ]
    assert stale_sides(entries) == {
        "x.duckdb": (".wal.checkpoint",),
        "y.duckdb": (".wal", ".wal.checkpoint"),
    }


def test_a_checkpoint_wal_makes_its_unchanged_database_a_change(tmp_path: Path) -> None:
    """A writer killed during a checkpoint before it wrote to the database: the database
    and its WAL as uploaded, the commits in the checkpoint WAL alone. The start-up check
    (and run --once) must not take the database for unchanged."""
    db = tmp_path / "x.duckdb"
    db.write_bytes(b"db")
    entry = dataclasses.replace(row("x.duckdb"), live=LiveStat.of(db.stat()), kind="duckdb")
    assert reconcile(tmp_path, PathFilter(), {"x.duckdb": entry}).changes == []
    (tmp_path / "x.duckdb.wal.checkpoint").write_bytes(b"commits")
    changes = reconcile(tmp_path, PathFilter(), {"x.duckdb": entry}).changes
    assert changes == [("x.duckdb", "modified")]
