"""Choosing and producing the stored encoding of a file (gzip or none).

gzip output is plain RFC 1952, readable by ``gunzip``. ISA-L (``isal``) produces it several
times faster than zlib at its low levels; zlib is the fallback when isal is absent.
Data that does not compress (already compressed formats, random bytes) is stored as-is.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

from isal import isal_zlib  # a dependency: gzip output, several times faster than zlib

from akoshad.fileio import CHUNK, read_chunks

Compression = Literal["gzip", "none"]
GZIP_LEVEL = 1  # isal levels 0-3; 1 balances speed and ratio (see bench/compress_bench.py)

SAMPLE_BYTES = 64 * 1024
# A sample that does not shrink below this share of its size is not worth compressing.
MIN_SAVING_RATIO = 0.90
ALREADY_COMPRESSED = frozenset(
    {
        ".gz",
        ".tgz",
        ".zip",
        ".zst",
        ".xz",
        ".bz2",
        ".lz4",
        ".br",
        ".7z",
        ".rar",
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".webp",
        ".avif",
        ".mp3",
        ".mp4",
        ".mkv",
        ".webm",
        ".pdf",
        ".whl",
        ".jar",
    }
)
_MAGIC = (b"\x1f\x8b", b"PK\x03\x04", b"\x28\xb5\x2f\xfd", b"\xfd7zXZ", b"BZh", b"\x89PNG")


def gzip_compressor() -> Any:
    """A fresh compressobj producing a gzip stream (header and trailer included)."""
    return isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)


def choose_compression(path: Path, enabled: bool = True) -> Compression:
    """``gzip`` unless disabled, or the file looks already compressed or random."""
    if not enabled:
        return "none"
    if path.suffix.lower() in ALREADY_COMPRESSED:
        return "none"
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(SAMPLE_BYTES)
            samples = [head]
            for offset in (size // 2, max(size - SAMPLE_BYTES, 0)):
                if offset > SAMPLE_BYTES:
                    fh.seek(offset)
                    samples.append(fh.read(SAMPLE_BYTES))
    except OSError:
        return "gzip"
    if head.startswith(_MAGIC):
        return "none"
    sample = b"".join(samples)
    if len(sample) < 512:
        return "gzip"
    packed = len(zlib.compress(sample, 1))
    return "none" if packed > len(sample) * MIN_SAVING_RATIO else "gzip"


class Digest(Protocol):
    """What ``encoded_chunks`` needs of a hash object (``hashlib.sha256()``)."""

    def update(self, data: bytes, /) -> None: ...


def encoded_chunks(
    path: Path,
    compression: Compression,
    chunk_size: int = CHUNK,
    digest: Digest | None = None,
) -> Iterator[bytes]:
    """Yield the stored bytes of ``path`` in pieces (blocking: call from a thread);
    ``digest`` is updated with the plaintext as it is read."""
    with path.open("rb") as fh:
        comp = gzip_compressor() if compression == "gzip" else None
        for chunk in read_chunks(fh, chunk_size):
            if digest is not None:
                digest.update(chunk)
            if comp is None:
                yield chunk
            elif out := comp.compress(chunk):
                yield out
        if comp is not None:
            yield comp.flush()


class DecodeError(ValueError):
    """Stored bytes that do not decode (a damaged or forged object)."""


class Decoder:
    """Incremental decoder of stored bytes back to the plaintext. Every decoding failure
    (zlib's or ISA-L's) is a ``DecodeError``."""

    def __init__(self, compression: str) -> None:
        if compression not in ("gzip", "none"):
            raise DecodeError(f"unknown compression {compression!r}")
        self._d = isal_zlib.decompressobj(31) if compression == "gzip" else None

    def feed(self, data: bytes) -> bytes:
        return b"".join(self.feed_iter(data))

    def feed_iter(self, data: bytes, max_out: int = CHUNK) -> Iterator[bytes]:
        """Decode ``data`` in pieces of at most ``max_out`` bytes (bounded memory even for
        highly compressed input: the caller can stop between pieces)."""
        if self._d is None:
            yield data
            return
        buf = data
        while buf:
            try:
                out = self._d.decompress(buf, max_out)
            except Exception as exc:  # zlib.error, isal's IsalError: all mean damaged
                raise DecodeError(_describe(exc)) from None
            if out:
                yield out
            buf = self._d.unconsumed_tail

    def finish(self) -> bytes:
        if self._d is None:
            return b""
        try:
            tail: bytes = self._d.flush()
        except Exception as exc:
            raise DecodeError(_describe(exc)) from None
        if not self._d.eof:
            raise DecodeError("truncated gzip stream")
        return tail


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename in it survives power loss (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
