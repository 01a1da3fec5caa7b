"""The ledger of uploaded files, the upload history and the skipped files."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from typing import Any

from akoshad.fileio import LiveStat
from akoshad.redaction import redact
from akoshad.store.base import StoreBase
from akoshad.store.records import (
    _LEDGER_COLS,
    _UPLOAD_COLS,
    HISTORY_KEEP,
    LedgerEntry,
    UploadRecord,
    _scrub,
)

_LIVE_COLS = ("live_size", "mtime_ns", "ctime_ns", "inode")


# columns whose values repeat from row to row: one string each is shared by the entries
_SHARED_COLS = ("target", "compression", "kind", "upload_id", "facts", "key", "name")


def _entry(row: dict[str, Any], shared: dict[Any, Any] | None = None) -> LedgerEntry:
    """A ledger row's columns as a :class:`LedgerEntry` (the live stat gathered).
    ``shared``: the strings of the repeating columns met so far, shared by the entries of
    one load (a ledger of 200,000 files held 13 objects a row)."""
    if shared is not None:
        for col in _SHARED_COLS:
            value = row.get(col)
            if isinstance(value, str):
                row[col] = shared.setdefault(value, value)
        if row["group_path"] == row["path"]:
            row["group_path"] = row["path"]
        _share_ints(row, shared)
    live = LiveStat(*(row.pop(n) for n in _LIVE_COLS))
    return LedgerEntry(live=live, **row)


def _share_ints(row: dict[str, Any], shared: dict[Any, Any]) -> None:
    """One int object for a row's equal sizes (a small file's stored and live sizes are
    its size) and one for each mode of a load (a few values for the whole store)."""
    size = row["size"]
    for col in ("stored_size", "live_size"):
        if row.get(col) == size:
            row[col] = size
    mode = row.get("mode")
    if isinstance(mode, int):
        row["mode"] = shared.setdefault(("mode", mode), mode)


# how the files of the last upload committed to a target were sealed (``sealing_label``)
KV_SEALED_AS = "sealed_as:{target}"
# set where the state forgets what it knew of a target (its ledger emptied), cleared by the
# next reconcile of the store: until then no upload is planned from the queue alone (it
# would hold only the files changed since, not the whole store)
KV_COMPARE_ALL = "compare_all:{target}"


class LedgerOps(StoreBase):
    """Ledger and history operations of :class:`~akoshad.store.db.StateDB`."""

    @staticmethod
    def record_sealing(c: sqlite3.Connection, target: str, label: str) -> None:
        """Inside a transaction: the files of the upload committed to ``target`` are sealed
        as ``label`` says."""
        c.execute(
            "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
            (KV_SEALED_AS.format(target=target), label),
        )

    async def ledger(self, target: str) -> dict[str, LedgerEntry]:
        return await self.transaction(lambda c: LedgerOps.ledger_rows(c, target))

    @staticmethod
    def last_upload_in(c: sqlite3.Connection, target: str) -> str | None:
        """The completed upload made last to ``target`` (an id continued after a clock set
        right may sort before one dated while it ran ahead: rows keep the order uploads
        began); the ledger is its files."""
        row = c.execute(
            "SELECT upload_id FROM uploads WHERE target = ? AND outcome = 'completed' "
            "ORDER BY rowid DESC LIMIT 1",
            (target,),
        ).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def ledger_rows(c: sqlite3.Connection, target: str) -> dict[str, LedgerEntry]:
        """``target``'s ledger by path (any connection, also a read-only one, also on a
        schema-1 database a running daemon of an earlier version still holds)."""
        present = {r[1] for r in c.execute("PRAGMA table_info(ledger)")}
        names = [n for n in _LEDGER_COLS.split(", ") if n in present]  # older schemas lack some
        rows = c.execute(f"SELECT {', '.join(names)} FROM ledger WHERE target = ?", (target,))
        shared: dict[Any, Any] = {}
        return {r[1]: _entry(dict(zip(names, r, strict=True)), shared) for r in rows}

    @staticmethod
    def write_ledger(
        c: sqlite3.Connection, target: str, entries: Iterable[LedgerEntry], removed: Iterable[str]
    ) -> None:
        """Inside a transaction: upsert entries and delete removed paths for ``target``."""
        c.executemany(
            f"INSERT OR REPLACE INTO ledger ({_LEDGER_COLS}) VALUES "
            f"({', '.join('?' * len(_LEDGER_COLS.split(', ')))})",
            [
                (
                    target,
                    e.path,
                    e.group_path,
                    e.size,
                    e.live.size,
                    e.live.mtime_ns,
                    e.live.ctime_ns,
                    e.live.inode,
                    e.sha256,
                    e.key,
                    e.name,
                    e.stored_size,
                    e.compression,
                    e.kind,
                    e.upload_id,
                    e.facts,
                    e.mode,
                    e.chunks,
                )
                for e in entries
            ],
        )
        c.executemany(
            "DELETE FROM ledger WHERE target = ? AND path = ?", [(target, p) for p in removed]
        )

    # ---- upload history ----------------------------------------------------------
    async def begin_upload(
        self, upload_id: str, target: str, method: str, manifest: dict[str, Any]
    ) -> None:
        """Persist the attempt (with its planned manifest) before any byte is sent."""
        await self.transaction(
            lambda c: c.execute(
                "INSERT INTO uploads (upload_id, target, method, started_at, outcome, manifest) "
                "VALUES (?, ?, ?, ?, 'in_progress', ?)",
                (upload_id, target, method, time.time(), json.dumps(manifest)),
            )
        )

    @staticmethod
    def adopt_upload(c: sqlite3.Connection, upload_id: str, target: str, at: float) -> None:
        """Inside a transaction: ``upload_id``, found in ``target`` as its newest upload when
        the ledger was seeded from it, is this state's last completed upload there (a row
        of it that a target change superseded is completed again; one still in progress is
        left to the recovery)."""
        c.execute(
            "UPDATE uploads SET outcome = 'completed' "
            "WHERE upload_id = ? AND target = ? AND outcome = 'superseded'",
            (upload_id, target),
        )
        c.execute(
            "INSERT OR IGNORE INTO uploads (upload_id, target, method, started_at, "
            "finished_at, outcome) VALUES (?, ?, ?, ?, ?, 'completed')",
            (upload_id, target, target, at, at),
        )

    @staticmethod
    def finish_upload(
        c: sqlite3.Connection,
        *,
        upload_id: str,
        outcome: str,
        files: int = 0,
        bytes_sent: int = 0,
        error: str | None = None,
    ) -> None:
        # the attempt's plan (``begin_upload``) serves only the recovery of an upload
        # still in progress: a finished row keeps none (a target that refuses writes for
        # weeks makes an attempt every 10 minutes, each with a plan of every changed file)
        c.execute(
            "UPDATE uploads SET finished_at = ?, outcome = ?, files = ?, bytes_sent = ?, "
            "error = ?, manifest = NULL WHERE upload_id = ?",
            (time.time(), outcome, files, bytes_sent, _scrub(error), upload_id),
        )

    @staticmethod
    def drop_finished_plans(c: sqlite3.Connection) -> None:
        """Inside a transaction: forget the plans that finished uploads of an earlier
        akoshad still hold (see :meth:`finish_upload`)."""
        c.execute(
            "UPDATE uploads SET manifest = NULL "
            "WHERE outcome != 'in_progress' AND manifest IS NOT NULL"
        )

    @staticmethod
    def prune_history(c: sqlite3.Connection, keep: int = HISTORY_KEEP) -> None:
        """Keep the ``keep`` uploads begun last in the history (months of running). By
        the order rows were added, not by id: after a clock that ran ahead made ``keep``
        uploads, the ids dated now sort before theirs, and the upload just made (what
        status and prune take as the last one) would go with its own commit."""
        c.execute(
            "DELETE FROM uploads WHERE outcome != 'in_progress' AND rowid < ("
            "SELECT rowid FROM uploads ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
            (keep - 1,),
        )

    @staticmethod
    def prune_failed_history(c: sqlite3.Connection, keep: int = HISTORY_KEEP) -> None:
        """Keep the newest ``keep`` failed attempts (a long outage's retries); completed
        uploads are not touched here: the newest one is what status reports after a
        restart, however long the outage."""
        c.execute(
            "DELETE FROM uploads WHERE outcome = 'failed' AND rowid < ("
            "SELECT rowid FROM uploads WHERE outcome = 'failed' "
            "ORDER BY rowid DESC LIMIT 1 OFFSET ?)",
            (keep - 1,),
        )

    async def fail_upload(self, upload_id: str, error: str) -> None:
        def op(c: sqlite3.Connection) -> None:
            self.finish_upload(c, upload_id=upload_id, outcome="failed", error=error)
            self.prune_failed_history(c)  # a long outage's retries are attempts too

        await self.transaction(op)

    async def in_progress_uploads(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(upload_id, target, planned manifest) of uploads a crash interrupted."""

        def op(c: sqlite3.Connection) -> list[tuple[str, str, dict[str, Any]]]:
            rows = c.execute(
                "SELECT upload_id, target, manifest FROM uploads WHERE outcome = 'in_progress' "
                "ORDER BY upload_id"
            ).fetchall()
            return [(r[0], r[1], json.loads(r[2] or "{}")) for r in rows]

        return await self.transaction(op)

    async def last_upload(self) -> UploadRecord | None:
        """The completed upload made last (rows are added in the order uploads begin; an
        id continued after one dated in the future is not the greatest)."""

        def op(c: sqlite3.Connection) -> UploadRecord | None:
            row = c.execute(
                f"SELECT {_UPLOAD_COLS} FROM uploads WHERE outcome = 'completed' "
                "ORDER BY rowid DESC LIMIT 1"
            ).fetchone()
            return UploadRecord(*row) if row else None

        return await self.transaction(op)

    async def last_success_by_target(self) -> dict[str, float]:
        """{target: when its newest completed upload finished} (status after a restart)."""

        def op(c: sqlite3.Connection) -> dict[str, float]:
            rows = c.execute(
                "SELECT target, MAX(finished_at) FROM uploads "
                "WHERE outcome = 'completed' AND finished_at IS NOT NULL GROUP BY target"
            ).fetchall()
            return {str(t): float(at) for t, at in rows}

        return await self.transaction(op)

    async def latest_upload_id(self, dated_by: str | None = None) -> str | None:
        """The greatest upload id on record; with ``dated_by`` (``current_id_time``), the
        greatest whose time is not after it."""
        return await self.transaction(
            lambda c: c.execute(
                "SELECT MAX(upload_id) FROM uploads "
                "WHERE ? IS NULL OR substr(upload_id, 1, 22) <= ?",
                (dated_by, dated_by),
            ).fetchone()[0]
        )

    async def greatest_completed(self, target: str) -> str | None:
        """The greatest id of a completed upload to ``target`` (``restore --latest``'s, as
        far as this state knows), or None."""
        return await self.transaction(
            lambda c: c.execute(
                "SELECT MAX(upload_id) FROM uploads WHERE outcome = 'completed' AND target = ?",
                (target,),
            ).fetchone()[0]
        )

    async def sorts_after_last(self) -> tuple[str, str] | None:
        """(the last completed upload, the greatest completed id of its target) when that
        id is greater: the clock went back between them (set back, or set right after it
        ran ahead), and ``restore --latest`` takes that older upload; None when the last
        upload is the greatest."""

        def op(c: sqlite3.Connection) -> tuple[str, str] | None:
            last = c.execute(
                "SELECT upload_id, target FROM uploads WHERE outcome = 'completed' "
                "ORDER BY rowid DESC LIMIT 1"
            ).fetchone()
            if last is None:
                return None
            greater = c.execute(
                "SELECT MAX(upload_id) FROM uploads WHERE outcome = 'completed' "
                "AND target = ? AND upload_id > ?",
                (last[1], last[0]),
            ).fetchone()[0]
            return None if greater is None else (str(last[0]), str(greater))

        return await self.transaction(op)

    # ---- skipped files -------------------------------------------------------------
    @staticmethod
    def record_skipped(c: sqlite3.Connection, skipped: dict[str, str]) -> None:
        now = time.time()
        c.executemany(
            "INSERT OR REPLACE INTO skipped (path, reason, at) VALUES (?, ?, ?)",
            [(p, redact(r), now) for p, r in skipped.items()],
        )

    @staticmethod
    def forget_skipped(c: sqlite3.Connection, paths: list[str]) -> None:
        c.executemany("DELETE FROM skipped WHERE path = ?", [(p,) for p in paths])

    async def skipped(self) -> dict[str, str]:
        return await self.transaction(
            lambda c: dict(c.execute("SELECT path, reason FROM skipped").fetchall())
        )
