"""Cut a file into content-defined chunks (FastCDC 2020, ``pyfastcdc``) with bounded memory.

Files below :data:`CHUNK_MIN_FILE` are one chunk. Larger files are read as a stream (never
whole, never mmapped): the cutter keeps a window of twice the maximum chunk size, and each
yielded chunk owns a copy of its bytes, so memory stays at a few MiB whatever the file size.
Blocking (reads and hashes): call from a thread.

Parameters chosen with ``bench/chunking_bench.py``: 256 KiB average (min 64 KiB, max
1 MiB) sends about half the bytes of a 1 MiB average after a DuckDB checkpoint.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from pyfastcdc import FastCDC

KiB = 1024
MiB = 1024 * KiB
CHUNK_MIN_FILE = 1 * MiB  # files below this are a single chunk
CHUNK_AVG = 256 * KiB
CHUNK_MIN = 64 * KiB
CHUNK_MAX = 1 * MiB


@dataclass(frozen=True, slots=True)
class ChunkParams:
    """FastCDC parameters. ``seed`` alternates the gear table (keyed chunking, so that chunk
    boundaries of an encrypted store do not reveal content); 0 is the published table."""

    avg_size: int = CHUNK_AVG
    min_size: int = CHUNK_MIN
    max_size: int = CHUNK_MAX
    min_file: int = CHUNK_MIN_FILE
    seed: int = 0

    def __post_init__(self) -> None:
        if not 64 <= self.min_size <= self.avg_size <= self.max_size <= 16 * MiB:
            raise ValueError("chunk sizes must satisfy 64 <= min <= avg <= max <= 16 MiB")
        if self.min_file < 0 or not 0 <= self.seed < 2**63:
            raise ValueError("min_file and seed must be non-negative")

    def cutter(self) -> FastCDC:
        return FastCDC(
            self.avg_size,
            min_size=self.min_size,
            max_size=self.max_size,
            normalized_chunking=1,
            seed=self.seed,
        )


DEFAULT_PARAMS = ChunkParams()


class Chunk(NamedTuple):
    """One chunk of a file: where it is, its sha256 (lowercase hex) and its bytes."""

    offset: int
    length: int
    sha256: str
    data: bytes


class _Prefixed:
    """A stream that replays ``head`` before the rest of ``tail`` (for ``readinto``)."""

    def __init__(self, head: bytes, tail: BinaryIO) -> None:
        self._head = memoryview(head)
        self._tail = tail

    def readinto(self, buffer: memoryview) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return _readinto(self._tail, buffer)


def _readinto(fh: BinaryIO, buffer: memoryview) -> int:
    readinto = getattr(fh, "readinto", None)
    if callable(readinto):
        n = readinto(buffer)
        return int(n or 0)
    data = fh.read(len(buffer))
    buffer[: len(data)] = data
    return len(data)


def _read_up_to(fh: BinaryIO, size: int) -> bytes:
    """Up to ``size`` bytes, fewer only at end of file (no buffer of ``size`` is zeroed
    for a small file: 10,000 small files must stay cheap)."""
    parts: list[bytes] = []
    got = 0
    while got < size:
        part = fh.read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _chunk(offset: int, data: bytes) -> Chunk:
    return Chunk(offset, len(data), hashlib.sha256(data).hexdigest(), data)


def iter_stream_chunks(fh: BinaryIO, params: ChunkParams = DEFAULT_PARAMS) -> Iterator[Chunk]:
    """Chunks of the rest of stream ``fh``, offsets counted from where it stands.

    A stream shorter than ``params.min_file`` is one chunk; an empty one has no chunk.
    """
    head = _read_up_to(fh, params.min_file)
    if len(head) < params.min_file:
        if head:
            yield _chunk(0, head)
        return
    for c in params.cutter().cut_stream(_Prefixed(head, fh)):
        # c.data is only valid until the next chunk is cut: copy it out.
        yield _chunk(c.offset, bytes(c.data))


def iter_file_chunks(
    source: Path | str | BinaryIO, params: ChunkParams = DEFAULT_PARAMS
) -> Iterator[Chunk]:
    """Chunks of a file given by path (a symlink is refused, not followed) or open stream."""
    if isinstance(source, (str, Path)):
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(source, flags)
        with os.fdopen(fd, "rb", buffering=0) as fh:
            yield from iter_stream_chunks(fh, params)
    else:
        yield from iter_stream_chunks(source, params)
