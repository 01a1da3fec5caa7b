"""The webhook outbox: events waiting for delivery, kept in the state database.

Rows are keyed by a hook id (a hash of the URL, never the URL itself: the state holds no
credentials) and delivered oldest first. Every coroutine is one transaction on the state
database's own thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from akoshad.store.db import StateDB

# The state schema's migration that adds the outbox (listed in ``state.MIGRATIONS``).
OUTBOX_SCHEMA = """
CREATE TABLE webhook_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hook TEXT NOT NULL,
    event TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX webhook_outbox_hook ON webhook_outbox(hook, id);
"""
_DROPPED_KEY = "webhook_dropped:"


@dataclass(frozen=True)
class OutboxRow:
    """One event waiting for one webhook: the exact body bytes that get signed and sent."""

    id: int
    hook: str
    event: str
    body: bytes
    created_at: float


class WebhookStore:
    """The outbox table over the daemon's state database (``state()``: the current one)."""

    def __init__(self, state: StateDB) -> None:
        self._state = state

    async def add(self, rows: Sequence[tuple[str, str, bytes, float]]) -> None:
        """Queue (hook, event, body, created_at) rows in one transaction."""
        if not rows:
            return
        items = list(rows)
        await self._state.transaction(
            lambda c: c.executemany(
                "INSERT INTO webhook_outbox (hook, event, body, created_at) VALUES (?, ?, ?, ?)",
                items,
            )
        )

    async def head(self, hook: str, after: int = 0) -> OutboxRow | None:
        """The oldest row of ``hook`` past id ``after`` (events of one webhook go out in
        order; those up to ``after`` were delivered and wait to be deleted)."""

        def op(c: sqlite3.Connection) -> OutboxRow | None:
            row = c.execute(
                "SELECT id, hook, event, body, created_at FROM webhook_outbox "
                "WHERE hook = ? AND id > ? ORDER BY id LIMIT 1",
                (hook, after),
            ).fetchone()
            return None if row is None else OutboxRow(row[0], row[1], row[2], bytes(row[3]), row[4])

        return await self._state.transaction(op)

    async def delete(self, row_id: int) -> None:
        """Delivered: forget the row."""
        await self._state.transaction(
            lambda c: c.execute("DELETE FROM webhook_outbox WHERE id = ?", (row_id,))
        )

    async def delete_many(self, row_ids: Sequence[int]) -> None:
        """Delivered earlier (their delete failed then): forget the rows."""
        ids = [(i,) for i in row_ids]
        await self._state.transaction(
            lambda c: c.executemany("DELETE FROM webhook_outbox WHERE id = ?", ids)
        )

    async def drop(self, row_id: int, hook: str) -> int:
        """Given up: forget the row and count the drop (it survives restarts). Returns the
        number of events ``hook`` dropped so far."""
        return (await self.drop_expired(row_id, hook, float("-inf"), float("inf")))[1]

    async def drop_expired(
        self, row_id: int, hook: str, before: float, after: float
    ) -> tuple[int, int]:
        """Given up: forget the row and every other row of ``hook`` dated at or before
        ``before`` or at or after ``after`` (past their give-up age too), and count the
        drops (they survive restarts). Returns (dropped now, dropped so far by ``hook``)."""
        key = _DROPPED_KEY + hook

        def op(c: sqlite3.Connection) -> tuple[int, int]:
            n = c.execute(
                "DELETE FROM webhook_outbox WHERE id = ? OR (hook = ? AND "
                "(created_at <= ? OR created_at >= ?))",
                (row_id, hook, before, after),
            ).rowcount
            c.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                "value = CAST(CAST(kv.value AS INTEGER) + ? AS TEXT)",
                (key, str(n), n),
            )
            total = int(c.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()[0])
            return int(n), total

        return await self._state.transaction(op)

    async def pending(self) -> dict[str, int]:
        """Queued rows per hook."""
        return await self._state.transaction(
            lambda c: {
                str(h): int(n)
                for h, n in c.execute("SELECT hook, COUNT(*) FROM webhook_outbox GROUP BY hook")
            }
        )

    async def dropped(self) -> dict[str, int]:
        """Events given up per hook, since the state database was made."""
        return await self._state.transaction(
            lambda c: {
                str(k)[len(_DROPPED_KEY) :]: int(v)
                for k, v in c.execute(
                    "SELECT key, value FROM kv WHERE key LIKE ?", (_DROPPED_KEY + "%",)
                )
            }
        )

    async def forget_others(self, known: Collection[str]) -> int:
        """Delete the rows of webhooks no longer configured. Returns how many."""
        keep = list(known)

        def op(c: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(keep))
            where = f"hook NOT IN ({marks})" if keep else "1"
            return int(c.execute(f"DELETE FROM webhook_outbox WHERE {where}", keep).rowcount)

        return await self._state.transaction(op)
