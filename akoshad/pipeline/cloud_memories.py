"""``memories.json`` for cloud uploads, and reading the memory rows of a snapshot copy.

:class:`CloudMemories` builds, for a cloud upload, a ``memories.json`` of the memories no
committed cloud upload carries yet (written by the DuckDB worker beside the copy) and
records them once that upload's manifest is committed. It also holds what delivery to
Akosha shares with it: listing a copy's rows through the worker (a failure to read is a
``SnapshotError``) and counting the secrets redacted.
:class:`~akoshad.pipeline.memory_sync.MemorySync` adds the delivery.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from loguru import logger

from akoshad.akosha.rows import RowRef
from akoshad.duckdb_commands import Redactions
from akoshad.duckdb_worker import Runner, build_memories_json, list_rows
from akoshad.errors import SnapshotError
from akoshad.heap import trim
from akoshad.pipeline.stats import Stats
from akoshad.pyworker import WorkerError, WorkerFailed
from akoshad.store.db import StateDB

# what reading memories from a copy can meet: the worker's error or failure, the disk; a
# bug (any other exception) is not dressed up as an unreadable copy
READ_ERRORS = (WorkerError, WorkerFailed, OSError)
LOAD_CHUNK = 1000


class CloudMemories:
    """Build ``memories.json`` for cloud uploads and record what a committed one carries."""

    def __init__(
        self,
        state: StateDB,
        system_id: str,
        *,
        load_chunk: int = LOAD_CHUNK,
        redact_secrets: bool = True,
        stats: Stats | None = None,
        duckdb: Runner | None = None,
    ) -> None:
        self.state = state
        self.duckdb = duckdb  # the DuckDB child that reads copies (None: one per read)
        self.system_id = system_id
        self.load_chunk = load_chunk
        self.redact_secrets = redact_secrets
        self.stats = stats
        self._cloud_pending: dict[str, list[str]] = {}
        self.redactions_since_start = 0

    # ---- the rows of a copy -------------------------------------------------------------
    async def _list(self, snapshot_db: Path) -> list[RowRef]:
        try:
            return await asyncio.to_thread(list_rows, snapshot_db, self.system_id, self.duckdb)
        except READ_ERRORS as exc:
            raise SnapshotError(f"cannot read memories from {snapshot_db.name}: {exc}") from exc

    # ---- memories.json for cloud uploads ------------------------------------------------
    async def conversations_for_cloud(
        self, snapshot_db: Path, upload_id: str
    ) -> tuple[Path, int, list[str]] | None:
        """A ``memories.json`` file (beside ``snapshot_db``, private; the caller streams it
        and removes it) for the memories no committed cloud upload carries yet, their count
        and ids; None when there are none.

        Nothing is recorded here: once the manifest of ``upload_id`` is committed, call
        :meth:`commit_cloud` (or ``StateDB.record_memories_uploaded`` inside the commit
        transaction with the returned ids).
        """
        refs = await self._list(snapshot_db)
        good = [r for r in refs if r.problem is None]
        uploaded = await self.state.uploaded_memory_ids(r.memory_id for r in good)
        todo = [r for r in good if r.memory_id not in uploaded]
        if not todo:
            return None
        try:
            path, ids, found = await asyncio.to_thread(
                build_memories_json,
                snapshot_db,
                self.system_id,
                todo,
                self.load_chunk,
                self.redact_secrets,
                self.duckdb,
            )
        except READ_ERRORS as exc:
            raise SnapshotError(f"cannot read memories from {snapshot_db.name}: {exc}") from exc
        await asyncio.to_thread(trim)  # what the memories' ids and rows left in the heap
        self._count_redactions(found)
        if not ids:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            return None
        self._cloud_pending[upload_id] = ids
        return path, len(ids), ids

    async def commit_cloud(self, upload_id: str) -> int:
        """Record the memories of ``upload_id``'s memories.json as uploaded (after the
        manifest is committed). Returns how many."""
        ids = self._cloud_pending.pop(upload_id, [])
        if ids:
            await self.state.mark_memories_uploaded(ids, upload_id)
        return len(ids)

    def forget_cloud(self, upload_id: str) -> None:
        """The upload failed: its memories stay pending for the next one."""
        self._cloud_pending.pop(upload_id, None)

    # ---- redaction ----------------------------------------------------------------------
    def _count_redactions(self, found: Redactions) -> None:
        """Count and log each redaction by kind and memory id, never the secret."""
        for mid, kinds in found.items():
            self.redactions_since_start += len(kinds)
            if self.stats is not None:
                self.stats.counters.redactions += len(kinds)
            logger.info("redacted {} secret(s) in memory {}: {}", len(kinds), mid, ", ".join(kinds))
