"""What a capture hands out (a file as captured, vanished or skipped) and the blocking
helpers every kind of capture uses: stat, kind, copying while hashing, the backoff."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
from akoshad.storage.chunker import CHUNK_MIN_FILE, Chunk, iter_file_chunks, iter_stream_chunks

if TYPE_CHECKING:
    from akoshad.manifest.facts import Facts as _Facts  # noqa: F401

STABLE_ATTEMPTS = 8
# Plain files at least this big are hashed and sent where they lie instead of copied.
IN_PLACE_MIN_BYTES = 64 * 1024 * 1024
# Plain files below this size are read into memory once (no staged copy, no second read)
# while the pass's memory budget lasts; past it they are staged as before. The budget is
# given back when the pass ends (``MemoryBudget.release``).
MEMORY_MAX_FILE = CHUNK_MIN_FILE
MEMORY_BUDGET = 64 * 1024 * 1024
# Captured files handed to the chunk thread per hop: up to this many bytes or files.
HOP_BYTES = 8 * 1024 * 1024
HOP_FILES = 512
BACKOFF_START = 0.05
BACKOFF_CAP = 1.0

Sleep = Callable[[float], None]


class Held:
    """The bytes of a file captured into memory; ``None`` once its pass has ended."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data: bytes | None = data


class MemoryBudget:
    """How many bytes of small files one pass may hold in memory (thread-safe)."""

    def __init__(self, total: int = MEMORY_BUDGET) -> None:
        self.total = total
        self.used = 0
        self._held: list[Held] = []
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False when they do not fit."""
        with self._lock:
            if self.used + n > self.total:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        """Return a reservation that was not kept."""
        with self._lock:
            self.used -= n

    def keep(self, data: bytes) -> Held:
        """Hold ``data`` (already reserved) until ``release``."""
        held = Held(data)
        with self._lock:
            self._held.append(held)
        return held

    def release(self) -> None:
        """The pass is over: drop every byte held (even where a capture is still kept)."""
        with self._lock:
            for held in self._held:
                held.data = None
            self._held.clear()
            self.used = 0


@dataclass(frozen=True, slots=True)
class CapturedFile:
    """One file of a capture: its private copy and what describes it."""

    path: str
    staged: Path
    size: int
    # None for an in-place capture or a DuckDB copy not hashed yet (it cannot be a
    # duplicate: its size is not the last upload's): hashed in the pass that sends it.
    sha256: str | None
    kind: str  # duckdb | duckdb-wal | sqlite | file
    live: LiveStat
    in_place: bool = False  # ``staged`` is the live file itself (large plain files)
    facts: Facts | None = None  # DuckDB row counts, JSON parsed: recorded for drills
    mode: int | None = None  # permission bits of the live file (restored as captured)
    # a small file captured into memory: its bytes (``staged`` is then never created)
    held: Held | None = field(default=None, compare=False, repr=False)
    # when the capture was made (wall clock, ns): its reading had ended by then
    captured_ns: int = field(default_factory=time.time_ns, compare=False, repr=False)

    def ledger_live(self) -> LiveStat:
        """The stat identity the ledger keeps for this capture (``LiveStat.settled``)."""
        return self.live.settled(self.captured_ns)

    def still_as_captured(self) -> bool:
        """For an in-place capture: the live file is unchanged since it was captured (size,
        mtime, ctime, inode), so what was read for the upload is what was captured."""
        st = lstat_or_none(self.staged)
        return st is not None and stat.S_ISREG(st.st_mode) and LiveStat.of(st) == self.live


def captured_chunks(f: CapturedFile) -> Iterator[Chunk]:
    """The chunks of a captured file: from its bytes when held in memory, else read from
    ``staged`` (the private copy, or the live file of an in-place capture). Held bytes
    below ``CHUNK_MIN_FILE`` are one chunk, whose sha256 is the file's (taken when they
    were read)."""
    if f.held is None:
        yield from iter_file_chunks(f.staged)
        return
    data = f.held.data
    if data is None:
        raise RuntimeError(f"{f.path}: its captured bytes were released with their pass")
    if f.sha256 is not None and 0 < len(data) < CHUNK_MIN_FILE:
        yield Chunk(0, len(data), f.sha256, data)
        return
    yield from iter_stream_chunks(io.BytesIO(data))


def hop_batches(
    files: Sequence[tuple[str, CapturedFile]],
    max_bytes: int = HOP_BYTES,
    max_files: int = HOP_FILES,
) -> Iterator[list[tuple[str, CapturedFile]]]:
    """``files`` in order, cut into runs handed to a worker thread at once: a run ends past
    ``max_bytes`` or at ``max_files`` (a large file is a run of its own)."""
    run: list[tuple[str, CapturedFile]] = []
    size = 0
    for item in files:
        run.append(item)
        size += item[1].size
        if size >= max_bytes or len(run) >= max_files:
            yield run
            run, size = [], 0
    if run:
        yield run


@dataclass(frozen=True, slots=True)
class Captured:
    """A store file (and, for DuckDB, its WAL) captured consistently."""

    group: str
    files: tuple[CapturedFile, ...]
    note: str | None = None
    # side files left out, with the reason (a WAL that is a symlink out of data_dir)
    refused: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Vanished:
    """The file is gone: a deletion."""

    group: str


@dataclass(frozen=True, slots=True)
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


def lstat_or_none(path: str | Path) -> os.stat_result | None:
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


def copy_hashing_if(src: Path, dst: Path, hash_if_size: int | None) -> tuple[int, str | None]:
    """:func:`copy_hashing`, the copy hashed only when its size is ``hash_if_size`` (the
    size of the file's last upload; None: it has none). A copy of another size cannot be a
    duplicate, and its upload hashes what it sends while it cuts it: one pass of sha256
    less over a first sync's database (1.1 CPU-s for 470 MiB)."""
    with open_resolved(src) as fin:
        size = os.fstat(fin.fileno()).st_size
        if size != hash_if_size:
            fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb"):
                if copy_data(fin.fileno(), fd, size):
                    return size, None
    return copy_hashing(src, dst)


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


def _regular_lstat(path: str | Path) -> os.stat_result:
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
