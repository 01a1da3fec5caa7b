"""Memories delivered to Akosha, skipped, or carried by a cloud upload."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

from akoshad.redaction import redact
from akoshad.store.base import StoreBase


class MemoryOps(StoreBase):
    """Memory bookkeeping of :class:`~akoshad.store.db.StateDB`."""

    async def delivered_ids(self, candidates: Iterable[str]) -> set[str]:
        ids = list(candidates)

        def op(c: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                found.update(
                    r[0]
                    for r in c.execute(
                        f"SELECT memory_id FROM memories_delivered WHERE memory_id IN ({marks})",
                        chunk,
                    )
                )
            return found

        return await self.transaction(op)

    async def mark_delivered(self, memory_ids: Iterable[str], method: str) -> None:
        now = time.time()
        rows = [(m, method, now) for m in memory_ids]
        await self.transaction(
            lambda c: c.executemany(
                "INSERT OR IGNORE INTO memories_delivered (memory_id, method, delivered_at) "
                "VALUES (?, ?, ?)",
                rows,
            )
        )

    async def mark_memories_skipped(self, reasons: dict[str, str]) -> None:
        now = time.time()
        await self.transaction(
            lambda c: c.executemany(
                "INSERT OR REPLACE INTO memories_skipped (memory_id, reason, at) VALUES (?, ?, ?)",
                [(m, redact(r), now) for m, r in reasons.items()],
            )
        )

    async def memory_counts(self) -> tuple[int, int]:
        """(delivered, skipped) memory rows."""
        return await self.transaction(
            lambda c: (
                int(c.execute("SELECT COUNT(*) FROM memories_delivered").fetchone()[0]),
                int(c.execute("SELECT COUNT(*) FROM memories_skipped").fetchone()[0]),
            )
        )

    async def recent_memory_skips(self, limit: int) -> dict[str, str]:
        """The ``limit`` memories skipped last: memory_id -> reason."""
        return await self.transaction(
            lambda c: {
                str(r[0]): str(r[1])
                for r in c.execute(
                    "SELECT memory_id, reason FROM memories_skipped "
                    "ORDER BY at DESC, memory_id LIMIT ?",
                    (limit,),
                )
            }
        )

    # ---- memories: skip records and cloud uploads (issue 4, used by memory_sync) ------
    @staticmethod
    def _in_chunks(c: sqlite3.Connection, sql: str, ids: Sequence[str]) -> list[tuple[Any, ...]]:
        """Run ``sql`` (with one ``{marks}`` placeholder list) over ``ids`` 500 at a time."""
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            out.extend(c.execute(sql.format(marks=",".join("?" * len(chunk))), chunk))
        return out

    async def memory_skip_reasons(self, candidates: Iterable[str]) -> dict[str, str]:
        """memory_id -> recorded skip reason, for the candidates that have one."""
        ids = list(candidates)
        return await self.transaction(
            lambda c: {
                str(r[0]): str(r[1])
                for r in self._in_chunks(
                    c,
                    "SELECT memory_id, reason FROM memories_skipped WHERE memory_id IN ({marks})",
                    ids,
                )
            }
        )

    async def unmark_memories_skipped(self, memory_ids: Iterable[str]) -> None:
        """Forget skip records (the row became sendable, e.g. it got its embedding)."""
        rows = [(m,) for m in memory_ids]
        await self.transaction(
            lambda c: c.executemany("DELETE FROM memories_skipped WHERE memory_id = ?", rows)
        )

    async def uploaded_memory_ids(self, candidates: Iterable[str]) -> set[str]:
        """The candidates already carried by a committed cloud upload's memories.json."""
        ids = list(candidates)
        return await self.transaction(
            lambda c: {
                str(r[0])
                for r in self._in_chunks(
                    c, "SELECT memory_id FROM memories_uploaded WHERE memory_id IN ({marks})", ids
                )
            }
        )

    @staticmethod
    def record_memories_uploaded(
        c: sqlite3.Connection, memory_ids: Iterable[str], upload_id: str
    ) -> None:
        """Inside a transaction (e.g. the manifest commit): these rows are in ``upload_id``."""
        now = time.time()
        c.executemany(
            "INSERT OR IGNORE INTO memories_uploaded (memory_id, upload_id, at) VALUES (?, ?, ?)",
            [(m, upload_id, now) for m in memory_ids],
        )

    async def mark_memories_uploaded(self, memory_ids: Iterable[str], upload_id: str) -> None:
        ids = list(memory_ids)
        await self.transaction(lambda c: self.record_memories_uploaded(c, ids, upload_id))

    async def memories_uploaded_count(self) -> int:
        return await self.transaction(
            lambda c: int(c.execute("SELECT COUNT(*) FROM memories_uploaded").fetchone()[0])
        )
