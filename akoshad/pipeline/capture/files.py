"""What a capture hands out (a file as captured, vanished or skipped) and the blocking
helpers every kind of capture uses: stat, kind, copying while hashing, the backoff."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from akoshad.backoff import exponential
from akoshad.fileio import (
    CHUNK,
    LinkRefused,
    LiveStat,
    copy_data,
    open_resolved,
    read_chunks,
    write_sparse,
)
from akoshad.manifest.facts import Facts
from akoshad.pipeline.storefiles import FileKind, kind_of_head

if TYPE_CHECKING:
    from akoshad.manifest.facts import Facts as _Facts  # noqa: F401

STABLE_ATTEMPTS = 8
# Plain files at least this big are hashed and sent where they lie instead of copied.
IN_PLACE_MIN_BYTES = 64 * 1024 * 1024
BACKOFF_START = 0.05
BACKOFF_CAP = 1.0

Sleep = Callable[[float], None]


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
