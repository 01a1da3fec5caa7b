"""The durable queue: one row per path, claimed, released, retried."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence

from akoshad.store.base import StoreBase
from akoshad.store.records import (
    _QUEUE_COLS,
    QueueItem,
    _scrub,
)


class QueueOps(StoreBase):
    """Queue operations of :class:`~akoshad.store.db.StateDB`."""

    async def enqueue(self, items: Iterable[tuple[str, str]], now: float | None = None) -> int:
        """Upsert (path, event) pairs: one row per path however often it changes."""
        rows = list(items)
        if not rows:
            return 0
        ts = time.time() if now is None else now

        def op(c: sqlite3.Connection) -> int:
            c.executemany(
                "INSERT INTO queue (path, event, first_seen, last_seen) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(path) DO UPDATE SET event = excluded.event, "
                "last_seen = excluded.last_seen, seq = queue.seq + 1, "
                "state = CASE queue.state WHEN 'in_flight' THEN 'in_flight' ELSE 'pending' END, "
                "next_attempt = MIN(queue.next_attempt, excluded.last_seen)",
                [(p, e, ts, ts) for p, e in rows],
            )
            # the skip record is stale once the path changes again
            c.executemany("DELETE FROM skipped WHERE path = ?", [(p,) for p, _ in rows])
            return len(rows)

        return await self.transaction(op)

    async def claim(self, now: float | None = None, limit: int = 100_000) -> list[QueueItem]:
        """Mark due pending rows in flight and count the attempt before any work starts."""
        ts = time.time() if now is None else now

        def op(c: sqlite3.Connection) -> list[QueueItem]:
            rows = c.execute(
                f"SELECT {_QUEUE_COLS} FROM queue WHERE state = 'pending' AND next_attempt <= ? "
                "ORDER BY first_seen LIMIT ?",
                (ts, limit),
            ).fetchall()
            c.executemany(
                "UPDATE queue SET state = 'in_flight', attempts = attempts + 1 WHERE path = ?",
                [(r[0],) for r in rows],
            )
            return [
                QueueItem(
                    path=r[0],
                    event=r[1],
                    first_seen=r[2],
                    last_seen=r[3],
                    seq=r[4],
                    attempts=r[5] + 1,
                    next_attempt=r[6],
                    state="in_flight",
                    last_error=r[8],
                )
                for r in rows
            ]

        return await self.transaction(op)

    async def recover_in_flight(self) -> int:
        """After a crash, rows left in flight go back to pending."""
        return await self.transaction(
            lambda c: (
                c.execute(
                    "UPDATE queue SET state = 'pending', next_attempt = 0 WHERE state = 'in_flight'"
                ).rowcount
            )
        )

    async def release(
        self,
        items: Sequence[QueueItem],
        *,
        retry_at: float | None,
        error: str | None = None,
    ) -> None:
        """Finish claimed rows: done (``retry_at`` None) unless they changed meanwhile."""

        def op(c: sqlite3.Connection) -> None:
            for item in items:
                if retry_at is None:
                    c.execute(
                        "DELETE FROM queue WHERE path = ? AND seq = ? AND state = 'in_flight'",
                        (item.path, item.seq),
                    )
                    # changed while it was uploaded: what is still pending is at most as
                    # old as the claim (no earlier than the row's last enqueue or retry time)
                    c.execute(
                        "UPDATE queue SET state = 'pending', attempts = 0, last_error = NULL, "
                        "first_seen = MIN(last_seen, MAX(first_seen, ?)) "
                        "WHERE path = ? AND state = 'in_flight'",
                        (max(item.last_seen, item.next_attempt), item.path),
                    )
                else:
                    c.execute(
                        "UPDATE queue SET state = 'pending', next_attempt = ?, last_error = ? "
                        "WHERE path = ?",
                        (retry_at, _scrub(error), item.path),
                    )

        await self.transaction(op)

    async def requeue(self, path: str, retry_at: float, error: str) -> None:
        """Make sure ``path`` is queued and due no later than ``retry_at``."""
        now = time.time()
        await self.transaction(
            lambda c: c.execute(
                "INSERT INTO queue (path, event, first_seen, last_seen, next_attempt, last_error) "
                "VALUES (?, 'modified', ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET "
                "next_attempt = MIN(queue.next_attempt, excluded.next_attempt), "
                "last_error = excluded.last_error",
                (path, now, now, retry_at, _scrub(error)),
            )
        )

    async def queue_items(self) -> list[QueueItem]:
        return await self.transaction(
            lambda c: [
                QueueItem(*r)
                for r in c.execute(
                    f"SELECT {_QUEUE_COLS} FROM queue ORDER BY first_seen"
                ).fetchall()
            ]
        )

    async def queue_depth(self) -> int:
        return await self.transaction(
            lambda c: int(c.execute("SELECT COUNT(*) FROM queue").fetchone()[0])
        )

    async def oldest_queued(self) -> float | None:
        """The earliest ``first_seen`` of any queued row (pending or in flight), or None."""
        return await self.transaction(
            lambda c: c.execute("SELECT MIN(first_seen) FROM queue").fetchone()[0]
        )

    async def next_due(self) -> float | None:
        """The earliest next_attempt of a pending row, or None."""
        return await self.transaction(
            lambda c: c.execute(
                "SELECT MIN(next_attempt) FROM queue WHERE state = 'pending'"
            ).fetchone()[0]
        )
