"""SQLite: a copy through the backup API (a reader's consistent view)."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

from akoshad.errors import SnapshotError
from akoshad.fileio import (
    LinkRefused,
    LiveStat,
    read_resolved,
)
from akoshad.pipeline.capture.base import CaptureBase
from akoshad.pipeline.capture.files import (
    Captured,
    CapturedFile,
    CaptureResult,
    Skipped,
    Vanished,
    _backoff,
    _uri_path,
    hash_file,
    lstat_or_none,
    mode_of,
)


def _idle_wal(real: Path) -> bool:
    """A WAL-mode database (header bytes 18-19) that no connection has open: no ``-wal``
    and no ``-journal`` beside it, so the main file holds every commit. Opening it the
    usual way would create ``-wal``/``-shm`` in data_dir and remove them on close (the
    watcher sees its side files change: the capture would queue it again, forever)."""
    head = read_resolved(real, 20)
    if len(head) < 20 or head[18] != 2 or head[19] != 2:
        return False
    return all(lstat_or_none(real.with_name(real.name + s)) is None for s in ("-wal", "-journal"))


def _why(real: Path) -> str:
    """What a backup that failed on a read-only database may owe to a hot journal: one a
    writer stopped mid-transaction left, which a reader must roll back into the database
    before it reads it, and which this process may not write."""
    journal = real.with_name(real.name + "-journal")
    if lstat_or_none(journal) is None or os.access(real, os.W_OK):
        return ""
    return (
        f" ({journal.name} is a hot journal, left by a writer stopped mid-transaction: only a"
        " process that may write the database can roll it back; it is captured once its"
        " writer opens it again)"
    )


class SqliteCapture(CaptureBase):
    """SQLite: a copy through the backup API (a reader's consistent view). An idle WAL-mode
    database is read as an immutable file (no lock, no side file made in data_dir), and
    read again unless it and the absence of its ``-wal`` held across the copy."""

    def _capture_sqlite(self, rel: str, real: Path) -> CaptureResult:
        for side in ("-wal", "-shm", "-journal"):
            st = lstat_or_none(real.with_name(real.name + side))
            if st is not None and not stat.S_ISREG(st.st_mode):
                return Skipped(rel, f"its side file {real.name}{side} is not a regular file")
        staged = self._stage_path(rel)
        last_error = ""
        for attempt in range(self.attempts):
            before = lstat_or_none(real)
            if before is None:
                return Vanished(rel)
            if not stat.S_ISREG(before.st_mode):
                raise LinkRefused(40, "became a symlink while being read", str(real))
            idle = _idle_wal(real)
            uri = "file:" + _uri_path(real) + ("?mode=ro&immutable=1" if idle else "?mode=rw")
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
            # made 0600 first: SQLite keeps a file's mode and gives its journal the same
            os.close(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
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
                raise SnapshotError(f"SQLite backup failed: {exc}{_why(real)}") from None
            finally:
                dst.close()
                src.close()
            if ok != "ok":
                raise SnapshotError(f"SQLite copy fails quick_check: {ok}")
            after = lstat_or_none(real)
            if after is None or after.st_ino != before.st_ino or not stat.S_ISREG(after.st_mode):
                self.sleep(_backoff(attempt))  # replaced while read: read it again
                continue
            if idle and not (
                LiveStat.of(before).same_content_identity(LiveStat.of(after)) and _idle_wal(real)
            ):
                self.sleep(_backoff(attempt))  # a writer came while it was read unlocked
                continue
            os.chmod(staged, 0o600)
            size, sha = hash_file(staged)
            captured = CapturedFile(
                rel, staged, size, sha, "sqlite", LiveStat.of(before), mode=mode_of(before)
            )
            return Captured(rel, (captured,))
        raise SnapshotError(f"SQLite backup kept failing: {last_error}", retry=True)
