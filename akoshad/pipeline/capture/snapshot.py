"""Consistent private copies of store files, taken without disturbing the live writer.

* DuckDB: the database and its ``.wal`` are copied as one pair; size, mtime_ns and inode of
  both are compared before and after, and the copy is retried with backoff while they move.
  The private copy is then opened read-only with duckdb (never the live file: that would
  take a lock and break the writer), in a short-lived child process
  (:mod:`akoshad.duckdb_worker`). A newer storage version is "cannot validate".
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
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from akoshad.backoff import exponential
from akoshad.errors import SnapshotError
from akoshad.fileio import (
    CHUNK,
    OUTSIDE,
    LinkRefused,
    copy_data,
    open_resolved,
    read_chunks,
    resolve_under,
    write_sparse,
)
from akoshad.manifest.facts import Facts, json_facts
from akoshad.pipeline.storefiles import FileKind, kind_of_head

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
    mode: int | None = None  # permission bits of the live file (restored as captured)

    def still_as_captured(self) -> bool:
        """For an in-place capture: the live file is unchanged since it was captured (size,
        mtime, ctime, inode), so what was read for the upload is what was captured."""
        st = lstat_or_none(self.staged)
        return st is not None and stat.S_ISREG(st.st_mode) and LiveStat.of(st) == self.live


@dataclass(frozen=True)
class Captured:
    """A store file (and, for DuckDB, its WAL) captured consistently."""

    group: str
    files: tuple[CapturedFile, ...]
    note: str | None = None
    # side files left out, with the reason (a WAL that is a symlink out of data_dir)
    refused: tuple[tuple[str, str], ...] = ()


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


def lstat_or_none(path: Path) -> os.stat_result | None:
    """The path's own stat (a symlink is not followed), None when missing."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def mode_of(st: os.stat_result) -> int:
    """The permission bits recorded for a file (restored as they were captured)."""
    return stat.S_IMODE(st.st_mode) & 0o777


def detect_kind(real: Path) -> FileKind:
    """DuckDB has ``DUCK`` at bytes 8-12; SQLite starts with its header; else a plain file.
    ``real`` is opened without following a symlink."""
    with open_resolved(real) as fh:
        return kind_of_head(fh.read(16))


def copy_hashing(src: Path, dst: Path) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` (created 0600); returns the copy's (size, sha256).

    ``src`` is a resolved path inside data_dir, opened without following a symlink (one
    swapped in after the check is refused). The kernel copies the data runs
    (``copy_file_range``) and the private copy is hashed; where that is not available, the
    bytes are copied and hashed by hand. Holes stay holes, so a sparse store file stays
    sparse in staging."""
    with open_resolved(src) as fin:
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fout:
            if copy_data(fin.fileno(), fd, os.fstat(fin.fileno()).st_size):
                fout.close()
                return hash_file(dst)
            digest = hashlib.sha256()
            size = 0
            for chunk in read_chunks(fin, CHUNK):
                digest.update(chunk)
                write_sparse(fout, chunk)
                size += len(chunk)
            fout.truncate(size)
    return size, digest.hexdigest()


def hash_file(path: Path) -> tuple[int, str]:
    """(size, sha256) of a private file (a staged copy)."""
    with path.open("rb") as fh:
        return hash_stream(fh)


def hash_stream(fh: BinaryIO) -> tuple[int, str]:
    """(size, sha256) of an open file read from its start."""
    digest = hashlib.sha256()
    size = 0
    for chunk in read_chunks(fh, CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def _backoff(attempt: int) -> float:
    return exponential(attempt, BACKOFF_START, BACKOFF_CAP)


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
            live.stat()
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
        try:
            real = resolve_under(self.data_dir.resolve(), live)
            kind = detect_kind(real)
            if kind == "duckdb":
                return self._capture_duckdb(rel, live, real)
            if kind == "sqlite":
                return self._capture_sqlite(rel, real)
            return self._capture_stable(rel, real, hash_if_size)
        except FileNotFoundError:
            return Vanished(rel)
        except PermissionError:
            return Skipped(rel, "permission denied")
        except LinkRefused as exc:  # a link out of data_dir, or one swapped in mid-capture
            reason = exc.strerror or "symlink refused"
            return Skipped(rel, reason, retry=reason != OUTSIDE)
        except SnapshotError as exc:
            return Skipped(rel, str(exc), retry=exc.retry)
        except OSError as exc:  # staging full, I/O error: try again later
            return Skipped(rel, f"capture failed: {exc.strerror or exc}", retry=True)

    # ---- plain files ---------------------------------------------------------------
    def _capture_in_place(self, rel: str, real: Path, hash_if_size: int | None) -> CaptureResult:
        """A large plain file is captured where it lies (no second copy of a big file on
        disk); the upload reads it from there and checks afterwards that it did not change
        (nor became a symlink: its own stat is compared).

        It is hashed here only when it may be a duplicate (its size is ``hash_if_size``, the
        size last uploaded); otherwise the uploader hashes it while sending it, so the file
        is not read once before the upload starts."""
        for attempt in range(self.attempts):
            before = _regular_lstat(real)
            if before.st_size != hash_if_size:
                deferred = CapturedFile(
                    rel,
                    real,
                    before.st_size,
                    None,
                    "file",
                    LiveStat.of(before),
                    True,
                    mode=mode_of(before),
                )
                return Captured(rel, (deferred,))
            try:
                with open_resolved(real) as fh:
                    size, sha = hash_stream(fh)
            except OSError as exc:
                if isinstance(exc, FileNotFoundError | PermissionError | LinkRefused):
                    raise
                raise SnapshotError(f"read failed: {exc.strerror or exc}", retry=True) from None
            after = lstat_or_none(real)
            if after is None:
                return Vanished(rel)
            if LiveStat.of(before) == LiveStat.of(after) and size == after.st_size:
                captured = CapturedFile(
                    rel, real, size, sha, "file", LiveStat.of(before), True, mode=mode_of(before)
                )
                return Captured(rel, (captured,))
            self.sleep(_backoff(attempt))
        raise SnapshotError(f"kept changing during {self.attempts} reads", retry=True)

    def _capture_stable(self, rel: str, real: Path, hash_if_size: int | None) -> CaptureResult:
        if _regular_lstat(real).st_size >= IN_PLACE_MIN_BYTES:
            return self._capture_in_place(rel, real, hash_if_size)
        staged = self._stage_path(rel)
        for attempt in range(self.attempts):
            before = _regular_lstat(real)
            try:
                size, sha = copy_hashing(real, staged)
            except OSError as exc:
                staged.unlink(missing_ok=True)
                if isinstance(exc, FileNotFoundError | PermissionError | LinkRefused):
                    raise
                raise SnapshotError(f"read failed: {exc.strerror or exc}", retry=True) from None
            after = lstat_or_none(real)
            if after is None:
                staged.unlink(missing_ok=True)
                return Vanished(rel)
            if LiveStat.of(before).same_content_identity(LiveStat.of(after)) and size == (
                after.st_size
            ):
                facts = json_facts(rel, staged)
                captured = CapturedFile(
                    rel,
                    staged,
                    size,
                    sha,
                    "file",
                    LiveStat.of(before),
                    facts=facts,
                    mode=mode_of(before),
                )
                return Captured(rel, (captured,))
            self.sleep(_backoff(attempt))
        staged.unlink(missing_ok=True)
        raise SnapshotError(f"kept changing during {self.attempts} copy attempts", retry=True)

    # ---- DuckDB --------------------------------------------------------------------
    def _wal_of(self, live: Path) -> tuple[Path | None, str | None]:
        """The resolved ``.wal`` of the DuckDB file ``live`` (named as the writer names it),
        or (None, reason) when it is a symlink out of data_dir: never read, then."""
        try:
            return resolve_under(self.data_dir.resolve(), live.with_name(live.name + ".wal")), None
        except LinkRefused as exc:
            return None, exc.strerror or OUTSIDE

    def _capture_duckdb(self, rel: str, live: Path, real: Path) -> CaptureResult:
        wal, refused = self._wal_of(live)
        staged_db = self._stage_path(rel)
        staged_wal = staged_db.with_name(staged_db.name + ".wal")
        try:
            return self._copy_duckdb_pair(rel, real, wal, refused, staged_db, staged_wal)
        except BaseException:
            staged_db.unlink(missing_ok=True)
            staged_wal.unlink(missing_ok=True)
            raise

    def _copy_duckdb_pair(
        self,
        rel: str,
        real: Path,
        wal: Path | None,
        refused: str | None,
        staged_db: Path,
        staged_wal: Path,
    ) -> CaptureResult:
        for attempt in range(self.attempts):
            db_before = _regular_lstat(real)
            wal_before = lstat_or_none(wal) if wal is not None else None
            db_size, db_sha = copy_hashing(real, staged_db)
            wal_entry: tuple[int, str] | None = None
            if wal is not None and wal_before is not None and wal_before.st_size > 0:
                try:
                    wal_entry = copy_hashing(wal, staged_wal)
                except FileNotFoundError:
                    self.sleep(_backoff(attempt))  # checkpointed away mid-copy: again
                    continue
            else:
                staged_wal.unlink(missing_ok=True)
            db_after = lstat_or_none(real)
            wal_after = lstat_or_none(wal) if wal is not None else None
            if db_after is None:
                staged_wal.unlink(missing_ok=True)
                staged_db.unlink(missing_ok=True)
                return Vanished(rel)
            if not (
                LiveStat.of(db_before).same_content_identity(LiveStat.of(db_after))
                and _same_wal(wal_before, wal_after)
            ):
                self.sleep(_backoff(attempt))
                continue
            note, facts = self._validate_duckdb(staged_db) if self.validate_duckdb else (None, None)
            files = [
                CapturedFile(
                    rel,
                    staged_db,
                    db_size,
                    db_sha,
                    "duckdb",
                    LiveStat.of(db_before),
                    facts=facts,
                    mode=mode_of(db_before),
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
                        mode=mode_of(wal_before),
                    )
                )
            side = ((rel + ".wal", refused),) if refused is not None else ()
            if refused is not None:
                note = f"{rel}.wal not captured: {refused}" + (f"; {note}" if note else "")
            return Captured(rel, tuple(files), note, side)
        raise SnapshotError(
            f"DuckDB pair kept changing during {self.attempts} copy attempts", retry=True
        )

    def _validate_duckdb(self, staged_db: Path) -> tuple[str | None, Facts | None]:
        """Open the private copy read-only (with its WAL), in a child process so DuckDB is
        never loaded here. Returns a note and the row count of every table, or raises
        SnapshotError (also when the check crashed or hung)."""
        from akoshad.duckdb_worker import validate_copy

        return validate_copy(staged_db)

    # ---- SQLite --------------------------------------------------------------------
    def _capture_sqlite(self, rel: str, real: Path) -> CaptureResult:
        for side in ("-wal", "-shm", "-journal"):
            st = lstat_or_none(real.with_name(real.name + side))
            if st is not None and not stat.S_ISREG(st.st_mode):
                return Skipped(rel, f"its side file {real.name}{side} is not a regular file")
        staged = self._stage_path(rel)
        uri = "file:" + _uri_path(real) + "?mode=rw"
        last_error = ""
        for attempt in range(self.attempts):
            before = lstat_or_none(real)
            if before is None:
                return Vanished(rel)
            if not stat.S_ISREG(before.st_mode):
                raise LinkRefused(40, "became a symlink while being read", str(real))
            try:
                src = sqlite3.connect(uri, uri=True, timeout=2.0)
            except sqlite3.OperationalError as exc:
                if lstat_or_none(real) is None:
                    return Vanished(rel)
                if not os.access(real, os.R_OK):
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
            after = lstat_or_none(real)
            if after is None or after.st_ino != before.st_ino or not stat.S_ISREG(after.st_mode):
                self.sleep(_backoff(attempt))  # replaced while read: read it again
                continue
            os.chmod(staged, 0o600)
            size, sha = hash_file(staged)
            captured = CapturedFile(
                rel, staged, size, sha, "sqlite", LiveStat.of(before), mode=mode_of(before)
            )
            return Captured(rel, (captured,))
        raise SnapshotError(f"SQLite backup kept failing: {last_error}", retry=True)


def _regular_lstat(path: Path) -> os.stat_result:
    """The stat of ``path``, which must be a regular file itself (not a symlink)."""
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise LinkRefused(40, "became a symlink while being read", str(path))
    return st


def _same_wal(before: os.stat_result | None, after: os.stat_result | None) -> bool:
    """A WAL unchanged across the copy (absent or empty both times counts as unchanged)."""
    if (before is None or before.st_size == 0) and (after is None or after.st_size == 0):
        return True
    return (
        before is not None
        and after is not None
        and LiveStat.of(before).same_content_identity(LiveStat.of(after))
    )


def _uri_path(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(path.absolute()))
