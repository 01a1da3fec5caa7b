"""Consistent private copies of store files, taken without disturbing the live writer.

* DuckDB: the database and its ``.wal`` are copied as one pair; size, mtime_ns and inode of
  both are compared before and after, and the copy is retried with backoff while they move.
  The private copy is then opened read-only with duckdb (never the live file: that would
  take a lock and break the writer). A newer storage version is "cannot validate".
* SQLite: the backup API (a reader's view, consistent by SQLite's own locking).
* Anything else: a stable copy (unchanged across the read).

Everything here blocks: call it from a worker thread. The SHA-256 is computed while copying.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from akoshad.capture_facts import Facts, duckdb_row_counts, json_facts
from akoshad.errors import SnapshotError
from akoshad.fileio import CHUNK as COPY_CHUNK
from akoshad.fileio import copy_data, read_chunks, write_sparse
from akoshad.storefiles import detect_kind

STABLE_ATTEMPTS = 8
# Plain files at least this big are hashed and sent where they lie instead of copied.
IN_PLACE_MIN_BYTES = 64 * 1024 * 1024
BACKOFF_START = 0.05
BACKOFF_CAP = 1.0

Sleep = Callable[[float], None]


@dataclass(frozen=True)
class LiveStat:
    """The identity of a live file at capture time: what the reconcile fast path compares."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> LiveStat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def same_content_identity(self, other: LiveStat | None) -> bool:
        """size, mtime_ns and inode unchanged (ctime moves on metadata-only changes too)."""
        return other is not None and (self.size, self.mtime_ns, self.inode) == (
            other.size,
            other.mtime_ns,
            other.inode,
        )


@dataclass(frozen=True)
class CapturedFile:
    """One file of a capture: its private copy and what describes it."""

    path: str
    staged: Path
    size: int
    # None for an in-place capture not hashed yet (it cannot be a duplicate: its size is
    # not the last upload's): the target hashes it in the pass that sends it.
    sha256: str | None
    kind: str  # duckdb | duckdb-wal | sqlite | file
    live: LiveStat
    in_place: bool = False  # ``staged`` is the live file itself (large plain files)
    facts: Facts | None = None  # DuckDB row counts, JSON parsed: recorded for drills

    def still_as_captured(self) -> bool:
        """For an in-place capture: the live file is unchanged since it was captured (size,
        mtime, ctime, inode), so what was read for the upload is what was captured."""
        st = stat_or_none(self.staged)
        return st is not None and LiveStat.of(st) == self.live


@dataclass(frozen=True)
class Captured:
    """A store file (and, for DuckDB, its WAL) captured consistently."""

    group: str
    files: tuple[CapturedFile, ...]
    note: str | None = None


@dataclass(frozen=True)
class Vanished:
    """The file is gone: a deletion."""

    group: str


@dataclass(frozen=True)
class Skipped:
    """The file exists but cannot be captured; ``reason`` says why."""

    group: str
    reason: str
    retry: bool = False  # a transient condition (kept changing, locked): try again later


CaptureResult = Captured | Vanished | Skipped

_NEWER_STORAGE = re.compile(
    r"version number|newer version|storage version|not supported by this version", re.I
)


def classify_open_error(exc: BaseException) -> str:
    """A duckdb open failure: newer storage -> a "cannot validate" note; else corruption."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if _NEWER_STORAGE.search(message):
        return f"cannot validate: {message}"
    raise SnapshotError(f"DuckDB copy does not open: {message}") from None


def stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def copy_hashing(src: Path, dst: Path) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` (created 0600); returns the copy's (size, sha256).

    The kernel copies the data runs (``copy_file_range``) and the private copy is hashed;
    where that is not available, the bytes are copied and hashed by hand. Holes stay holes,
    so a sparse store file stays sparse in staging."""
    with src.open("rb") as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fout:
            if copy_data(fin.fileno(), fd, os.fstat(fin.fileno()).st_size):
                fout.close()
                return hash_file(dst)
            digest = hashlib.sha256()
            size = 0
            for chunk in read_chunks(fin, COPY_CHUNK):
                digest.update(chunk)
                write_sparse(fout, chunk)
                size += len(chunk)
            fout.truncate(size)
    return size, digest.hexdigest()


def hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        for chunk in read_chunks(fh, COPY_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _backoff(attempt: int) -> float:
    return float(min(BACKOFF_CAP, BACKOFF_START * (2**attempt)))


class Snapshotter:
    """Captures store files from ``data_dir`` into ``staging`` (a private directory)."""

    def __init__(
        self,
        data_dir: Path,
        staging: Path,
        *,
        attempts: int = STABLE_ATTEMPTS,
        sleep: Sleep = time.sleep,
        validate_duckdb: bool = True,
    ) -> None:
        self.data_dir = data_dir
        self.staging = staging
        self.attempts = attempts
        self.sleep = sleep
        self.validate_duckdb = validate_duckdb
        self._n = 0

    def reset_staging(self) -> None:
        """Remove everything staged (also what a crash left) and recreate the directory."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _stage_path(self, rel: str) -> Path:
        self._n += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", rel)[-80:]
        return self.staging / f"{self._n:06d}-{safe}"

    def capture(self, rel: str, hash_if_size: int | None = None) -> CaptureResult:
        """Capture one store file (blocking). Never raises for a vanished/unreadable file.

        ``hash_if_size``: the size of the file's last upload, if any; a large plain file of
        another size cannot be a duplicate and is left unhashed (``sha256`` None)."""
        live = self.data_dir / rel
        try:
            st = live.stat()
        except FileNotFoundError:
            return Vanished(rel)
        except PermissionError:
            return Skipped(rel, "permission denied")
        except OSError as exc:
            if exc.errno == 40:  # ELOOP
                return Skipped(rel, "symlink loop")
            return Skipped(rel, f"cannot stat: {exc.strerror}")
        if live.is_dir():
            return Vanished(rel)  # a directory now stands where a file was
        if not live.is_file():
            return Skipped(rel, "not a regular file")
        real_root = self.data_dir.resolve()
        if not live.resolve().is_relative_to(real_root):
            return Skipped(rel, "symlink points outside data_dir")
        try:
            kind = detect_kind(live)
            if kind == "duckdb":
                return self._capture_duckdb(rel, live)
            if kind == "sqlite":
                return self._capture_sqlite(rel, live, st)
            return self._capture_stable(rel, live, hash_if_size)
        except FileNotFoundError:
            return Vanished(rel)
        except PermissionError:
            return Skipped(rel, "permission denied")
        except SnapshotError as exc:
            return Skipped(rel, str(exc), retry=exc.retry)
        except OSError as exc:  # staging full, I/O error: try again later
            return Skipped(rel, f"capture failed: {exc.strerror or exc}", retry=True)

    # ---- plain files ---------------------------------------------------------------
    def _capture_in_place(self, rel: str, live: Path, hash_if_size: int | None) -> CaptureResult:
        """A large plain file is captured where it lies (no second copy of a big file on
        disk); the upload reads it from there and checks afterwards that it did not change.

        It is hashed here only when it may be a duplicate (its size is ``hash_if_size``, the
        size last uploaded); otherwise the uploader hashes it while sending it, so the file
        is not read once before the upload starts."""
        for attempt in range(self.attempts):
            before = live.stat()
            if before.st_size != hash_if_size:
                deferred = CapturedFile(
                    rel, live, before.st_size, None, "file", LiveStat.of(before), True
                )
                return Captured(rel, (deferred,))
            try:
                size, sha = hash_file(live)
            except OSError as exc:
                if isinstance(exc, FileNotFoundError | PermissionError):
                    raise
                raise SnapshotError(f"read failed: {exc.strerror or exc}", retry=True) from None
            after = stat_or_none(live)
            if after is None:
                return Vanished(rel)
            if LiveStat.of(before) == LiveStat.of(after) and size == after.st_size:
                captured = CapturedFile(rel, live, size, sha, "file", LiveStat.of(before), True)
                return Captured(rel, (captured,))
            self.sleep(_backoff(attempt))
        raise SnapshotError(f"kept changing during {self.attempts} reads", retry=True)

    def _capture_stable(self, rel: str, live: Path, hash_if_size: int | None) -> CaptureResult:
        if live.stat().st_size >= IN_PLACE_MIN_BYTES and not live.is_symlink():
            return self._capture_in_place(rel, live, hash_if_size)
        staged = self._stage_path(rel)
        for attempt in range(self.attempts):
            before = live.stat()
            try:
                size, sha = copy_hashing(live, staged)
            except OSError as exc:
                if isinstance(exc, FileNotFoundError | PermissionError):
                    staged.unlink(missing_ok=True)
                    raise
                staged.unlink(missing_ok=True)
                raise SnapshotError(f"read failed: {exc.strerror or exc}", retry=True) from None
            after = stat_or_none(live)
            if after is None:
                staged.unlink(missing_ok=True)
                return Vanished(rel)
            if LiveStat.of(before).same_content_identity(LiveStat.of(after)) and size == (
                after.st_size
            ):
                facts = json_facts(rel, staged)
                captured = CapturedFile(
                    rel, staged, size, sha, "file", LiveStat.of(before), facts=facts
                )
                return Captured(rel, (captured,))
            self.sleep(_backoff(attempt))
        staged.unlink(missing_ok=True)
        raise SnapshotError(f"kept changing during {self.attempts} copy attempts", retry=True)

    # ---- DuckDB --------------------------------------------------------------------
    def _capture_duckdb(self, rel: str, live: Path) -> CaptureResult:
        wal = live.with_name(live.name + ".wal")
        staged_db = self._stage_path(rel)
        staged_wal = staged_db.with_name(staged_db.name + ".wal")
        for attempt in range(self.attempts):
            db_before = live.stat()
            wal_before = stat_or_none(wal)
            try:
                db_size, db_sha = copy_hashing(live, staged_db)
                wal_entry: tuple[int, str] | None = None
                if wal_before is not None and wal_before.st_size > 0:
                    try:
                        wal_entry = copy_hashing(wal, staged_wal)
                    except FileNotFoundError:
                        wal_entry = None  # checkpointed away mid-copy: retry below
                        wal_before = None
                        self.sleep(_backoff(attempt))
                        continue
                else:
                    staged_wal.unlink(missing_ok=True)
            except FileNotFoundError:
                staged_db.unlink(missing_ok=True)
                staged_wal.unlink(missing_ok=True)
                raise
            db_after = stat_or_none(live)
            wal_after = stat_or_none(wal)
            if db_after is None:
                staged_wal.unlink(missing_ok=True)
                staged_db.unlink(missing_ok=True)
                return Vanished(rel)
            stable = LiveStat.of(db_before).same_content_identity(LiveStat.of(db_after)) and (
                (
                    (wal_before is None or wal_before.st_size == 0)
                    and (wal_after is None or wal_after.st_size == 0)
                )
                or (
                    wal_before is not None
                    and wal_after is not None
                    and LiveStat.of(wal_before).same_content_identity(LiveStat.of(wal_after))
                )
            )
            if not stable:
                self.sleep(_backoff(attempt))
                continue
            note, facts = self._validate_duckdb(staged_db) if self.validate_duckdb else (None, None)
            files = [
                CapturedFile(
                    rel, staged_db, db_size, db_sha, "duckdb", LiveStat.of(db_before), facts=facts
                )
            ]
            if wal_entry is not None and wal_before is not None:
                files.append(
                    CapturedFile(
                        rel + ".wal",
                        staged_wal,
                        wal_entry[0],
                        wal_entry[1],
                        "duckdb-wal",
                        LiveStat.of(wal_before),
                    )
                )
            return Captured(rel, tuple(files), note)
        staged_db.unlink(missing_ok=True)
        staged_wal.unlink(missing_ok=True)
        raise SnapshotError(
            f"DuckDB pair kept changing during {self.attempts} copy attempts", retry=True
        )

    def _validate_duckdb(self, staged_db: Path) -> tuple[str | None, Facts | None]:
        """Open the private copy read-only (with its WAL). Returns a note and the row count
        of every table, or raises SnapshotError."""
        import duckdb

        try:
            con = duckdb.connect(str(staged_db), read_only=True)
        except Exception as exc:
            return classify_open_error(exc), None
        try:
            facts = duckdb_row_counts(con)
        except Exception as exc:
            raise SnapshotError(f"DuckDB copy is not readable: {exc}") from None
        finally:
            con.close()
        return None, facts

    # ---- SQLite --------------------------------------------------------------------
    def _capture_sqlite(self, rel: str, live: Path, st: os.stat_result) -> CaptureResult:
        staged = self._stage_path(rel)
        uri = "file:" + _uri_path(live) + "?mode=rw"
        last_error = ""
        for attempt in range(self.attempts):
            before = stat_or_none(live)
            if before is None:
                return Vanished(rel)
            try:
                src = sqlite3.connect(uri, uri=True, timeout=2.0)
            except sqlite3.OperationalError as exc:
                if stat_or_none(live) is None:
                    return Vanished(rel)
                if not os.access(live, os.R_OK):
                    raise PermissionError(str(exc)) from None
                last_error = str(exc)
                self.sleep(_backoff(attempt))
                continue
            staged.unlink(missing_ok=True)
            dst = sqlite3.connect(staged)
            try:
                src.backup(dst)
                ok = dst.execute("PRAGMA quick_check").fetchone()[0]
                dst.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.DatabaseError as exc:
                last_error = str(exc)
                if "locked" in last_error or "busy" in last_error:
                    self.sleep(_backoff(attempt))
                    continue
                raise SnapshotError(f"SQLite backup failed: {exc}") from None
            finally:
                dst.close()
                src.close()
            if ok != "ok":
                raise SnapshotError(f"SQLite copy fails quick_check: {ok}")
            os.chmod(staged, 0o600)
            size, sha = hash_file(staged)
            return Captured(
                rel, (CapturedFile(rel, staged, size, sha, "sqlite", LiveStat.of(before)),)
            )
        raise SnapshotError(f"SQLite backup kept failing: {last_error}", retry=True)


def _uri_path(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(path.absolute()))
