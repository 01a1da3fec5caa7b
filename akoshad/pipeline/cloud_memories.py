"""``memories.json`` for cloud uploads, and reading the memory rows of a snapshot copy.

:class:`CloudMemories` builds, for a cloud upload, a ``memories.json`` of the memories no
committed cloud upload carries yet (written by the DuckDB worker beside the copy) and
records them once that upload's manifest is committed. Given a :class:`StreamTo` (an S3
target), the file goes up while the worker writes it: a multipart upload fed part by part
as the file grows (``S3Target.put_growing``), completed once it is built, aborted (no
object) when the build fails; should the worker start the file over (DuckDB ran out of
memory), what was sent is aborted and the finished file is left to the caller. It also
holds what delivery to Akosha shares with it: listing a copy's rows through the worker (a
failure to read is a ``SnapshotError``) and counting the secrets redacted.
:class:`~akoshad.pipeline.memory_sync.MemorySync` adds the delivery.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

from akoshad.akosha.rows import RowRef, wanted_ids
from akoshad.duckdb_commands import Redactions
from akoshad.duckdb_worker import Runner, build_memories_json_of, list_rows, memories_file
from akoshad.errors import SnapshotError
from akoshad.heap import trim
from akoshad.names import MEMORY_DB, copy_of
from akoshad.pipeline.stats import Stats
from akoshad.pyworker import WorkerError, WorkerFailed
from akoshad.ratelog import ReasonLog
from akoshad.store.db import StateDB
from akoshad.targets.growing import GrowingTarget, Restarted, WriterFailed

# what reading memories from a copy can meet: the worker's error or failure, the disk; a
# bug (any other exception) is not dressed up as an unreadable copy
READ_ERRORS = (WorkerError, WorkerFailed, OSError)
LOAD_CHUNK = 1000
# and at most this many bytes of memory text at a time (rows.chunks): 300 memories of 1 MB
# each took the daemon to 903 MB and the DuckDB child to 1.25 GB loaded 1,000 at a time
LOAD_BYTES = 32 * 1024 * 1024
# the state's record of why the memories of the last copy could not be read (status)
KV_UNREADABLE = "memories_unreadable"
# an unreadable copy's warning, repeated while its reason stays the same, at most this often
# (it would otherwise come with every pass: with every change session-buddy makes to the file)
UNREADABLE_LOG_INTERVAL = 3600.0
_UNKNOWN = object()


@dataclass(frozen=True)
class StreamTo:
    """Where ``memories.json`` goes while it is built: ``key`` in ``target``;
    ``before_send`` is awaited before the first request that writes (the owner gate)."""

    target: GrowingTarget
    key: str
    before_send: Callable[[], Awaitable[None]]


@dataclass
class CloudFile:
    """A built ``memories.json``: its file, the ids it holds, and the bytes already stored
    at the :class:`StreamTo` key (None: not sent; the caller sends the file)."""

    path: Path
    ids: list[str]
    sent: int | None = None


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
        # upload id -> the ids its memories.json carries and the secrets masked in them
        self._cloud_pending: dict[str, tuple[list[str], Redactions]] = {}
        self.redactions_since_start = 0
        self._unreadable: object = _UNKNOWN  # what the state records (not read yet)
        self._unreadable_log = ReasonLog(UNREADABLE_LOG_INTERVAL)

    async def unreadable(self, why: str | None) -> None:
        """Record why the memories of the copy read last could not be read (None: they
        were), kept in the state: until a copy reads, no memory of the store reaches Akosha
        and ``status --check`` says so, also after a restart (the file is read again only
        when it changes). Written only when it changes; logged when it starts or changes,
        then at most once per :data:`UNREADABLE_LOG_INTERVAL`, and when it clears."""
        if why is None:
            self._unreadable_log.ok("the memories of {} are read again", MEMORY_DB)
        else:
            self._unreadable_log.warning(why, "no memories read from {}: {}", MEMORY_DB, why)
        if why == self._unreadable:
            return

        def write(c: sqlite3.Connection) -> None:
            if why is None:
                c.execute("DELETE FROM kv WHERE key = ?", (KV_UNREADABLE,))
            else:
                c.execute(
                    "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (KV_UNREADABLE, why)
                )

        await self.state.transaction(write)
        self._unreadable = why

    # ---- the rows of a copy -------------------------------------------------------------
    async def _list(self, snapshot_db: Path) -> list[RowRef]:
        try:
            refs = await asyncio.to_thread(list_rows, snapshot_db, self.system_id, self.duckdb)
        except READ_ERRORS as exc:
            raise SnapshotError(f"cannot read memories from {copy_of(snapshot_db)}: {exc}") from exc
        await self.unreadable(None)
        return refs

    # ---- memories.json for cloud uploads ------------------------------------------------
    async def conversations_for_cloud(
        self, snapshot_db: Path, upload_id: str
    ) -> tuple[Path, int, list[str]] | None:
        """A ``memories.json`` file (beside ``snapshot_db``, private; the caller streams it
        and removes it) for the memories no committed cloud upload carries yet, their count
        and ids; None when there are none.

        Nothing is recorded here: once the manifest of ``upload_id`` is committed, call
        :meth:`commit_cloud` (which records them and counts the secrets masked in them), or
        :meth:`forget_cloud` when the upload failed.
        """
        built = await self.memories_for_cloud(snapshot_db, upload_id)
        return None if built is None else (built.path, len(built.ids), built.ids)

    async def memories_for_cloud(
        self, snapshot_db: Path, upload_id: str, stream: StreamTo | None = None
    ) -> CloudFile | None:
        """:meth:`conversations_for_cloud`; with ``stream``, the file is sent there while it
        is built (see the module). A failed send raises once the build ended."""
        refs = await self._list(snapshot_db)
        good = [r for r in refs if r.problem is None]
        uploaded = await self.state.uploaded_memory_ids(r.memory_id for r in good)
        # {table: original ids}: the RowRefs (a big store's 100,000s) go before the build
        todo = wanted_ids((r for r in good if r.memory_id not in uploaded), {})
        del refs, good, uploaded
        if not todo:
            return None
        await asyncio.to_thread(trim)  # what the RowRefs held goes back to the system
        try:
            path = await asyncio.to_thread(memories_file, snapshot_db)
        except OSError as exc:
            raise SnapshotError(f"cannot write memories.json: {exc}") from exc
        restarted = threading.Event()
        build = asyncio.create_task(
            asyncio.to_thread(
                build_memories_json_of,
                snapshot_db,
                self.system_id,
                todo,
                self.load_chunk,
                self.redact_secrets,
                self.duckdb,
                out=path,
                on_retry=restarted.set,
            )
        )
        del todo  # the build thread holds what it needs
        try:
            sent = await _stream(build, path, restarted, stream)
            _, ids, found = await build
        except READ_ERRORS as exc:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise SnapshotError(f"cannot read memories from {copy_of(snapshot_db)}: {exc}") from exc
        except BaseException:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise
        await asyncio.to_thread(trim)  # what the memories' ids and rows left in the heap
        if not ids:
            if sent is not None and stream is not None:  # every row was left out
                await stream.target.delete_keys([stream.key])
            await asyncio.to_thread(path.unlink, missing_ok=True)
            return None
        self._cloud_pending[upload_id] = (ids, found)  # masked: counted once it is committed
        return CloudFile(path, ids, sent)

    async def commit_cloud(self, upload_id: str) -> int:
        """Record the memories of ``upload_id``'s memories.json as uploaded (after the
        manifest is committed). Returns how many."""
        ids, found = self._cloud_pending.pop(upload_id, ([], {}))
        if ids:
            await self.state.mark_memories_uploaded(ids, upload_id)
        self._count_redactions(found)
        return len(ids)

    def forget_cloud(self, upload_id: str) -> None:
        """The upload failed: its memories stay pending for the next one."""
        self._cloud_pending.pop(upload_id, None)

    # ---- redaction ----------------------------------------------------------------------
    def _count_redactions(self, found: Redactions) -> None:
        """Count and log each redaction by kind and memory id, never the secret: once the
        memory has left (delivered, or its upload committed), so a retry is not counted twice."""
        for mid, kinds in found.items():
            self.redactions_since_start += len(kinds)
            if self.stats is not None:
                self.stats.counters.redactions += len(kinds)
            logger.info("redacted {} secret(s) in memory {}: {}", len(kinds), mid, ", ".join(kinds))


async def _stream(
    build: asyncio.Task[object], path: Path, restarted: threading.Event, stream: StreamTo | None
) -> int | None:
    """Send ``path`` to ``stream`` while ``build`` writes it; the bytes sent, or None when
    not sent (no stream, the build failed or started over). A failed send waits for the
    build's end (the task is owned) before it is raised; a cancelled one cancels the wait."""
    if stream is None:
        return None
    try:
        return await stream.target.put_growing(
            stream.key, path, build, restarted, stream.before_send
        )
    except WriterFailed:
        return None  # the build's own error is raised by the caller's await
    except Restarted:
        logger.info("memories.json is written again: it is sent once it is built")
        return None
    except asyncio.CancelledError:
        build.cancel()
        await asyncio.gather(build, return_exceptions=True)
        raise
    except BaseException:
        await asyncio.gather(build, return_exceptions=True)
        raise
