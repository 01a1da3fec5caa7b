"""The durable queue: one row per path, claimed, released, retried."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence

from akoshad.store.base import StoreBase
from akoshad.store.records import (
    _QUEUE_COLS,
    QueueItem,
    _scrub,
)

# No retry is set further ahead than this (backoff, circuit breaker and ownership waits are
# 5 minutes at most): a row due later was given its time by a clock that ran ahead and was
# set right since, and is due now rather than when the clock catches up.
RETRY_HORIZON = 900.0
# The furthest ahead a retry is set (a server's Retry-After asking for longer is asked again
# then): below RETRY_HORIZON, so that a row due later can only come from a clock set right.
RETRY_WAIT_MAX = 600.0
# A pass holds the ledger, the chunk table and, per claimed file, its capture, what was
# sent and its new ledger row (~2 KB a small file). A store of up to CLAIM_ALL files (the
# rows of the biggest target's ledger and the rows due) is taken whole: its first upload
# is one; a bigger one CLAIM_BATCH files a pass (its first upload a few), which keeps the
# daemon of a 200,000-file store under the unit's MemoryMax=512M.
CLAIM_ALL = 100_000
CLAIM_BATCH = 25_000


def claim_limit(c: sqlite3.Connection, ts: float) -> int:
    """How many due rows a pass claims: :data:`CLAIM_ALL` while the store is at most that
    many files (the biggest target's ledger rows and the rows due at ``ts``), else
    :data:`CLAIM_BATCH`."""
    due = c.execute(
        "SELECT COUNT(*) FROM queue WHERE state = 'pending' "
        "AND (next_attempt <= ? OR next_attempt > ?)",
        (ts, ts + RETRY_HORIZON),
    ).fetchone()[0]
    if due <= CLAIM_BATCH:
        return CLAIM_ALL
    held = c.execute(
        "SELECT COALESCE(MAX(n), 0) FROM (SELECT COUNT(*) AS n FROM ledger GROUP BY target)"
    ).fetchone()[0]
    return CLAIM_ALL if due + held <= CLAIM_ALL else CLAIM_BATCH


class QueueOps(StoreBase):
    """Queue operations of :class:`~akoshad.store.db.StateDB`."""

    async def enqueue(
        self,
        items: Iterable[tuple[str, str]],
        now: float | None = None,
        *,
        first_seen: Mapping[str, float] | None = None,
    ) -> int:
        """Upsert (path, event) pairs: one row per path however often it changes (its
        ``first_seen`` never after a time it was seen: one dated by a clock that ran ahead
        comes back to now). ``first_seen``: when each path was first seen, if before now
        (under ``""``: the time of the others)."""
        rows = list(items)
        if not rows:
            return 0
        ts = time.time() if now is None else now
        seen = first_seen or {}
        default = seen.get("", ts)
        dated = [(p, e, min(ts, seen.get(p, default))) for p, e in rows]
        return await self.transaction(lambda c: QueueOps.enqueue_in(c, dated, ts))

    @staticmethod
    def enqueue_in(
        c: sqlite3.Connection, rows: Sequence[tuple[str, str] | tuple[str, str, float]], ts: float
    ) -> int:
        """Inside a transaction: :meth:`enqueue` at time ``ts`` (a row may carry its own
        first time)."""
        c.executemany(
            "INSERT INTO queue (path, event, first_seen, last_seen) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET event = excluded.event, "
            "first_seen = MIN(queue.first_seen, excluded.first_seen), "
            "last_seen = excluded.last_seen, seq = queue.seq + 1, "
            "state = CASE queue.state WHEN 'in_flight' THEN 'in_flight' ELSE 'pending' END, "
            "next_attempt = MIN(queue.next_attempt, excluded.last_seen)",
            [(r[0], r[1], r[2] if len(r) > 2 else ts, ts) for r in rows],
        )
        # the skip record is stale once the path changes again
        c.executemany("DELETE FROM skipped WHERE path = ?", [(r[0],) for r in rows])
        return len(rows)

    async def claim(self, now: float | None = None, limit: int | None = None) -> list[QueueItem]:
        """Mark due pending rows in flight and count the attempt before any work starts:
        at most ``limit`` rows, by default :func:`claim_limit`."""
        ts = time.time() if now is None else now

        def op(c: sqlite3.Connection) -> list[QueueItem]:
            most = claim_limit(c, ts) if limit is None else limit
            rows = c.execute(
                f"SELECT {_QUEUE_COLS} FROM queue WHERE state = 'pending' "
                "AND (next_attempt <= ? OR next_attempt > ?) ORDER BY first_seen LIMIT ?",
                (ts, ts + RETRY_HORIZON, most),
            )
            # read as they come, one string per event name (100,000 rows fetched whole
            # beside their items took as much again)
            events: dict[str, str] = {}
            items = [
                QueueItem(
                    path=r[0],
                    event=events.setdefault(r[1], r[1]),
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
            c.executemany(
                "UPDATE queue SET state = 'in_flight', attempts = attempts + 1 WHERE path = ?",
                ((i.path,) for i in items),
            )
            return items

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
        """Finish claimed rows: done (``retry_at`` None) unless they changed meanwhile; else
        due again at ``retry_at`` (at most :data:`RETRY_WAIT_MAX` from now)."""
        now = time.time()

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
                        (min(retry_at, now + RETRY_WAIT_MAX), _scrub(error), item.path),
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

    async def due_now(self, error: str) -> int:
        """Pending rows released with ``error`` (files held back for a target) due now;
        returns how many."""
        now = time.time()
        return await self.transaction(
            lambda c: (
                c.execute(
                    "UPDATE queue SET next_attempt = MIN(next_attempt, ?) "
                    "WHERE state = 'pending' AND last_error = ?",
                    (now, _scrub(error)),
                ).rowcount
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
        """The earliest next_attempt of a pending row (now for one due beyond
        :data:`RETRY_HORIZON`), or None."""
        now = time.time()
        return await self.transaction(
            lambda c: c.execute(
                "SELECT MIN(CASE WHEN next_attempt > ? THEN ? ELSE next_attempt END) "
                "FROM queue WHERE state = 'pending'",
                (now + RETRY_HORIZON, now),
            ).fetchone()[0]
        )
