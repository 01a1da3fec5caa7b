"""A hot journal (a writer stopped mid-transaction) must be rolled back into its database
before a reader reads it; a capture that may not write the database cannot: the skip says
so, rather than only SQLite's 'attempt to write a readonly database'."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

import akoshad.pipeline.capture.sqlite as mod
from akoshad.pipeline.capture.snapshot import Skipped, Snapshotter


class _ReadOnlySource:
    def backup(self, _dst: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("attempt to write a readonly database")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("journal", [True, False])
def test_a_hot_journal_it_may_not_roll_back_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, journal: bool
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    db = sqlite3.connect(store / "activity.db")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    if journal:
        (store / "activity.db-journal").write_bytes(b"pages of a transaction never ended")
    real_connect = sqlite3.connect

    def connect(database: Any, *args: Any, **kwargs: Any) -> Any:
        if str(database).startswith("file:"):  # the live database (run as a user who may not write)
            return _ReadOnlySource()
        return real_connect(database, *args, **kwargs)

    monkeypatch.setattr(mod.sqlite3, "connect", connect)
    monkeypatch.setattr(mod.os, "access", lambda _p, mode: mode == mod.os.R_OK)
    snap = Snapshotter(store, tmp_path / "staging", sleep=lambda _s: None)
    snap.reset_staging()
    res = snap.capture("activity.db")
    assert isinstance(res, Skipped)
    assert res.reason.startswith("SQLite backup failed: attempt to write a readonly database")
    hot = "activity.db-journal is a hot journal, left by a writer stopped mid-transaction"
    assert (hot in res.reason) == journal
