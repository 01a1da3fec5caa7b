"""The state database (SQLite, WAL): ledger, durable queue, upload history, memories.

One connection, used only from one dedicated worker thread: nothing SQLite does runs on
the event loop thread. Every public coroutine is one transaction. ``PRAGMA user_version``
holds the schema version; ``MIGRATIONS[i]`` moves version i to i+1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from akoshad.compress import Compression
from akoshad.errors import AkoshadError
from akoshad.redaction import redact
from akoshad.store.webhook_outbox import OUTBOX_SCHEMA

T = TypeVar("T")

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
]

SCHEMA_VERSION = len(MIGRATIONS)
STATE_FILE = "state.db"  # in ``state_dir``
HISTORY_KEEP = 2000


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


def read_ledger(path: Path, target: str) -> LedgerView | None:
    """Blocking, read-only (never changes the file; safe beside a running daemon): the
    ledger of ``target``; None when there is no state database at ``path``."""
    if not path.is_file():
        return None
    try:
        con = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10, isolation_level=None
        )
        try:
            con.execute("BEGIN")  # one read snapshot: the ledger and its upload agree
            try:
                last = con.execute(
                    "SELECT MAX(upload_id) FROM uploads WHERE target = ? AND outcome = 'completed'",
                    (target,),
                ).fetchone()[0]
                rows = StateDB.ledger_rows(con, target)
            finally:
                con.execute("ROLLBACK")
        finally:
            con.close()
    except sqlite3.Error as exc:
        raise StateError(f"cannot read the ledger in {path}: {exc}") from None
    return LedgerView(last, rows)


@dataclass(frozen=True)
class LedgerEntry:
    """What was last uploaded for one captured path on one target."""

    target: str
    path: str
    group_path: str
    size: int  # of the captured bytes (what the manifest lists)
    live_size: int  # of the live file when captured (what reconcile compares)
    mtime_ns: int
    ctime_ns: int
    inode: int
    sha256: str
    key: str
    name: str
    stored_size: int
    compression: Compression
    kind: str
    upload_id: str
    facts: str | None = None  # capture facts as JSON (``capture_facts.Facts.to_json``)
    mode: int | None = None  # permission bits at capture; None when not known


@dataclass(frozen=True)
class QueueItem:
    """One path waiting on the durable queue."""

    path: str
    event: str
    first_seen: float
    last_seen: float
    seq: int
    attempts: int
    next_attempt: float
    state: str
    last_error: str | None


@dataclass(frozen=True)
class UploadRecord:
    """One row of the upload history."""

    upload_id: str
    target: str
    method: str
    started_at: float
    finished_at: float | None
    files: int
    bytes_sent: int
    outcome: str
    error: str | None


_LEDGER_COLS = (
    "target, path, group_path, size, live_size, mtime_ns, ctime_ns, inode, sha256, key, name, "
    "stored_size, compression, kind, upload_id, facts, mode"
)


def _scrub(error: str | None) -> str | None:
    """Error text as it may be stored: no registered secret, no URL credential."""
    return None if error is None else redact(error)


_QUEUE_COLS = "path, event, first_seen, last_seen, seq, attempts, next_attempt, state, last_error"
_UPLOAD_COLS = (
    "upload_id, target, method, started_at, finished_at, files, bytes_sent, outcome, error"
)


class StateDB:
    """Async facade over one SQLite connection living in a dedicated thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="akoshad-state")
        self._conn: sqlite3.Connection | None = None

    # ---- lifecycle -------------------------------------------------------------
    async def open(self) -> None:
        await self._run(self._open_sync)

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
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
        except sqlite3.DatabaseError as exc:
            conn.close()
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

    async def integrity_check(self) -> str:
        return await self._run(
            lambda: self._tx(lambda c: str(c.execute("PRAGMA integrity_check").fetchone()[0]))
        )

    # ---- queue -----------------------------------------------------------------
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

    # ---- ledger ----------------------------------------------------------------
    async def ledger(self, target: str) -> dict[str, LedgerEntry]:
        return await self.transaction(lambda c: StateDB.ledger_rows(c, target))

    @staticmethod
    def ledger_rows(c: sqlite3.Connection, target: str) -> dict[str, LedgerEntry]:
        """``target``'s ledger by path (any connection, also a read-only one, also on a
        schema-1 database a running daemon of an earlier version still holds)."""
        present = {r[1] for r in c.execute("PRAGMA table_info(ledger)")}
        names = [n for n in _LEDGER_COLS.split(", ") if n in present]  # older schemas lack some
        rows = c.execute(f"SELECT {', '.join(names)} FROM ledger WHERE target = ?", (target,))
        return {r[1]: LedgerEntry(**dict(zip(names, r, strict=True))) for r in rows.fetchall()}

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
                    e.live_size,
                    e.mtime_ns,
                    e.ctime_ns,
                    e.inode,
                    e.sha256,
                    e.key,
                    e.name,
                    e.stored_size,
                    e.compression,
                    e.kind,
                    e.upload_id,
                    e.facts,
                    e.mode,
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
    def finish_upload(
        c: sqlite3.Connection,
        *,
        upload_id: str,
        outcome: str,
        files: int = 0,
        bytes_sent: int = 0,
        error: str | None = None,
    ) -> None:
        c.execute(
            "UPDATE uploads SET finished_at = ?, outcome = ?, files = ?, bytes_sent = ?, "
            "error = ? WHERE upload_id = ?",
            (time.time(), outcome, files, bytes_sent, _scrub(error), upload_id),
        )

    @staticmethod
    def prune_history(c: sqlite3.Connection, keep: int = HISTORY_KEEP) -> None:
        """Keep the newest ``keep`` finished uploads in the history (months of running)."""
        c.execute(
            "DELETE FROM uploads WHERE outcome != 'in_progress' AND upload_id < ("
            "SELECT upload_id FROM uploads ORDER BY upload_id DESC LIMIT 1 OFFSET ?)",
            (keep - 1,),
        )

    async def fail_upload(self, upload_id: str, error: str) -> None:
        await self.transaction(
            lambda c: self.finish_upload(c, upload_id=upload_id, outcome="failed", error=error)
        )

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
        def op(c: sqlite3.Connection) -> UploadRecord | None:
            row = c.execute(
                f"SELECT {_UPLOAD_COLS} FROM uploads WHERE outcome = 'completed' "
                "ORDER BY upload_id DESC LIMIT 1"
            ).fetchone()
            return UploadRecord(*row) if row else None

        return await self.transaction(op)

    async def latest_upload_id(self) -> str | None:
        return await self.transaction(
            lambda c: c.execute("SELECT MAX(upload_id) FROM uploads").fetchone()[0]
        )

    # ---- skipped files -------------------------------------------------------------
    @staticmethod
    def record_skipped(c: sqlite3.Connection, skipped: dict[str, str]) -> None:
        now = time.time()
        c.executemany(
            "INSERT OR REPLACE INTO skipped (path, reason, at) VALUES (?, ?, ?)",
            [(p, redact(r), now) for p, r in skipped.items()],
        )

    async def skipped(self) -> dict[str, str]:
        return await self.transaction(
            lambda c: dict(c.execute("SELECT path, reason FROM skipped").fetchall())
        )

    # ---- memories (HTTP delivery) ---------------------------------------------------
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

    # ---- small key/value -----------------------------------------------------------
    async def get_kv(self, key: str) -> str | None:
        def op(c: sqlite3.Connection) -> str | None:
            row = c.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            return None if row is None else str(row[0])

        return await self.transaction(op)

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


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
