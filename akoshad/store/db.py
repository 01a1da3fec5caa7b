"""The state database (SQLite, WAL): ledger, durable queue, upload history, memories.

One connection, used only from one dedicated worker thread: nothing SQLite does runs on
the event loop thread. Every public coroutine is one transaction. ``PRAGMA user_version``
holds the schema version; ``MIGRATIONS[i]`` moves version i to i+1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from akoshad.errors import AkoshadError
from akoshad.private import FILE_MODE, make_private_dirs, private_opener
from akoshad.store.base import StoreBase
from akoshad.store.chunks import CHUNKS_SCHEMA, ChunkOps
from akoshad.store.ledger import LedgerOps
from akoshad.store.memories import MemoryOps
from akoshad.store.places import recorded_place
from akoshad.store.queue import QueueOps
from akoshad.store.records import (
    HISTORY_KEEP,
    LedgerEntry,
    QueueItem,
    UploadRecord,
)
from akoshad.store.webhook_outbox import OUTBOX_SCHEMA

__all__ = [
    "HISTORY_KEEP",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STATE_FILE",
    "LedgerEntry",
    "LedgerView",
    "QueueItem",
    "StateDB",
    "StateError",
    "StoreBase",
    "UploadRecord",
    "read_ledger",
]

T = TypeVar("T")
# The WAL is cut back to this after a checkpoint: without a limit SQLite keeps the file at
# the size of the largest transaction it ever held (a first upload of 20,000 files: 20 MB)
# for as long as the daemon runs.
WAL_SIZE_LIMIT = 4 * 1024 * 1024

MIGRATIONS: list[str] = [
    # 0 -> 1
    """
    CREATE TABLE ledger (
        target TEXT NOT NULL,
        path TEXT NOT NULL,
        group_path TEXT NOT NULL,
        size INTEGER NOT NULL,
        live_size INTEGER NOT NULL,
        mtime_ns INTEGER NOT NULL,
        ctime_ns INTEGER NOT NULL,
        inode INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        key TEXT NOT NULL,
        name TEXT NOT NULL,
        stored_size INTEGER NOT NULL,
        compression TEXT NOT NULL,
        kind TEXT NOT NULL,
        upload_id TEXT NOT NULL,
        PRIMARY KEY (target, path)
    );
    CREATE INDEX ledger_group ON ledger(target, group_path);
    CREATE TABLE queue (
        path TEXT PRIMARY KEY,
        event TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        seq INTEGER NOT NULL DEFAULT 1,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt REAL NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending',
        last_error TEXT
    );
    CREATE TABLE uploads (
        upload_id TEXT PRIMARY KEY,
        target TEXT NOT NULL,
        method TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        files INTEGER NOT NULL DEFAULT 0,
        bytes_sent INTEGER NOT NULL DEFAULT 0,
        outcome TEXT NOT NULL,
        error TEXT,
        manifest TEXT
    );
    CREATE TABLE skipped (
        path TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE memories_delivered (
        memory_id TEXT PRIMARY KEY,
        method TEXT NOT NULL,
        delivered_at REAL NOT NULL
    );
    CREATE TABLE memories_skipped (
        memory_id TEXT PRIMARY KEY,
        reason TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE memories_uploaded (
        memory_id TEXT PRIMARY KEY,
        upload_id TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 1 -> 2
    OUTBOX_SCHEMA,
    # 2 -> 3: what the capture established (DuckDB row counts, JSON parsed), for drills
    """
    ALTER TABLE ledger ADD COLUMN facts TEXT;
    """,
    # 3 -> 4: the permission bits of each file at capture (restored as captured)
    """
    ALTER TABLE ledger ADD COLUMN mode INTEGER;
    """,
    # 4 -> 5: bucket format 2. A chunked file's ledger row lists its chunks (JSON of
    # [sha256, size] pairs; NULL for a format-1 whole object); the chunk table locates
    # each chunk stored in a target; the packs an upload in progress sealed.
    CHUNKS_SCHEMA,
    # 5 -> 6: encrypted chunks are keyed by their keyed name (``NameKey.name``); ``plain``
    # holds the plaintext sha256 their refs carry (NULL: the key is the plaintext sha256)
    """
    ALTER TABLE chunks ADD COLUMN plain TEXT;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
STATE_FILE = "state.db"  # in ``state_dir``


class StateError(AkoshadError):
    """The state database is unusable (corrupt, newer schema, unwritable).

    ``corrupt`` is true when the file is damaged (rather than from a newer akoshad).
    """

    def __init__(self, message: str, *, corrupt: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt


@dataclass(frozen=True)
class LedgerView:
    """A read-only look at one target's ledger and the upload it was last committed with."""

    last_upload: str | None
    entries: dict[str, LedgerEntry]
    identity: str | None = None  # the place the state last knew the target as (``places``)


def read_ledger(path: Path, target: str, *, with_entries: bool = True) -> LedgerView | None:
    """Blocking, read-only (never changes the file; safe beside a running daemon): the
    ledger of ``target`` (without ``with_entries``: its upload and place only, no
    entries); None when there is no state database at ``path``."""
    if not path.is_file():
        return None
    try:
        con = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10, isolation_level=None
        )
        try:
            con.execute("BEGIN")  # one read snapshot: the ledger and its upload agree
            try:
                last = LedgerOps.last_upload_in(con, target)
                rows = LedgerOps.ledger_rows(con, target) if with_entries else {}
                place = recorded_place(con, target)
            finally:
                con.execute("ROLLBACK")
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise StateError(f"cannot read the ledger in {path}: {exc}") from None
    return LedgerView(last, rows, place)


def _make_private(path: Path) -> None:
    """The state database 0600 whatever the umask, made so before SQLite opens it (its
    ``-wal`` and ``-shm`` take the database's mode), and those of an earlier version
    too: it names every store file with its plaintext SHA-256, which an encrypted target
    hides. What cannot be opened is left to SQLite to report."""
    with contextlib.suppress(OSError):
        os.close(private_opener(str(path), os.O_RDWR | os.O_CREAT))
    for side in ("-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.chmod(f"{path}{side}", FILE_MODE)


# SQLite's primary result codes of a damaged file (SQLITE_CORRUPT, SQLITE_NOTADB)
_DAMAGED = frozenset({11, 26})


def _damaged(exc: sqlite3.DatabaseError) -> bool:
    """Whether ``exc`` says the file itself is damaged (or failed the quick check, raised
    here without a code), not that its disk is full, failing or read-only."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is None or code & 0xFF in _DAMAGED


class StateDB(QueueOps, LedgerOps, ChunkOps, MemoryOps):
    """Async facade over one SQLite connection living in a dedicated thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="akoshad-state")
        self._conn: sqlite3.Connection | None = None

    # ---- lifecycle -------------------------------------------------------------
    async def open(self) -> None:
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        make_private_dirs(self.path.parent)
        _make_private(self.path)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
            conn.execute("PRAGMA foreign_keys = ON")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"state database {self.path} has schema {version}, newer than this "
                    f"akoshad understands ({SCHEMA_VERSION})"
                )
            for target in range(version, SCHEMA_VERSION):
                conn.execute("BEGIN IMMEDIATE")
                for statement in _split_sql(MIGRATIONS[target]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target + 1}")
                conn.execute("COMMIT")
            _drop_finished_plans(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            if not _damaged(exc):  # a full or failing disk: setting the file aside cures nothing
                raise StateError(
                    f"state database {self.path} cannot be opened: {exc} (check the disk "
                    f"of {self.path.parent}: free space, errors; nothing was changed)"
                ) from exc
            raise StateError(
                f"state database {self.path} is unusable: {exc}", corrupt=True
            ) from exc
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            await self._run(self._close_sync)
        self._executor.shutdown(wait=True)

    def set_aside(self) -> Path:
        """Move a corrupt database (and its side files) out of the way; returns the new name."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm", "-journal"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.rename(Path(str(aside) + suffix))
        return aside

    def _close_sync(self) -> None:
        assert self._conn is not None
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.close()
        self._conn = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _tx(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StateError("state database is not open")
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in one transaction on the state thread."""
        return await self._run(self._tx, fn)

    async def sync(self) -> None:
        """Make every transaction committed so far durable: ``synchronous = NORMAL`` leaves
        the WAL's last commits to the next checkpoint, so a power loss may drop them (the
        database stays whole, as of an earlier commit). Call it before acting on something
        committed that must not be undone (a prune deleting what the ledger forgot)."""
        await self._run(self._sync)

    def _sync(self) -> None:
        for name in (f"{self.path}-wal", str(self.path)):  # no WAL: the database itself
            try:
                fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return

    async def integrity_check(self) -> str:
        return await self._run(
            lambda: self._tx(lambda c: str(c.execute("PRAGMA integrity_check").fetchone()[0]))
        )

    # ---- small key/value -----------------------------------------------------------
    async def get_kv(self, key: str) -> str | None:
        def op(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        return await self.transaction(op)

    async def set_kv(self, key: str, value: str) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))

        await self.transaction(op)


def _drop_finished_plans(conn: sqlite3.Connection) -> None:
    """Housekeeping at open (:meth:`LedgerOps.drop_finished_plans`): a disk that takes no
    writes now only leaves it for the next open."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        LedgerOps.drop_finished_plans(conn)
        conn.execute("COMMIT")
    except sqlite3.OperationalError:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
