"""Compress one chunk, and decompress it with a hard bound on the output.

Chunks are compressed independently with zstd level 1 (``backports.zstd``, the stdlib's
``compression.zstd`` from Python 3.14): on DuckDB chunks it is smaller than ISA-L gzip at
every level and decodes several times faster (``bench/chunking_bench.py``). Level 3 saves
2.6 % more for 83 % more CPU: a 470 MiB ``reflection.duckdb`` in 256 KiB pieces became
260 MiB in 2.0 CPU-s at level 1, 253 MiB in 3.7 at level 3 (256 MiB in 2.6 at level 2), and
on two cores a first sync shares them with the memories.json it builds. The level is not
recorded: any level decodes the same way. A chunk whose
compression saves less than :data:`MIN_SAVING` is stored as-is (``"none"``).

:func:`decompress` never produces more than ``expected_size + 1`` bytes: a stored chunk
that inflates further (a decompression bomb) stops there with :class:`DecompressionBomb`,
and one that decodes to any other size than declared raises :class:`CorruptChunk`.
Blocking (CPU): call from a thread.
"""

from __future__ import annotations

import hashlib
import sys
import threading
from typing import Any

from isal import isal_zlib

from akoshad.storage.errors import CorruptChunk, DecompressionBomb, StorageError
from akoshad.storage.refs import COMPRESSIONS, MAX_CHUNK_SIZE, ChunkCompression, ChunkRef

if sys.version_info >= (3, 14):  # pragma: no cover - stdlib from 3.14 on
    from compression import zstd
else:
    from backports import zstd

DEFAULT_COMPRESSION: ChunkCompression = "zstd"
ZSTD_LEVEL = 1
GZIP_LEVEL = 1  # ISA-L levels 0-3
MIN_SAVING = 0.03  # compression must save at least 3% of a chunk, else "none"
MIN_COMPRESS_SIZE = 64  # smaller chunks are never worth a codec's framing
# zstd frames may ask for a window up to 2 GiB; chunks are at most MAX_CHUNK_SIZE, so any
# window beyond that is refused instead of allocated.
ZSTD_WINDOW_LOG_MAX = max(MAX_CHUNK_SIZE.bit_length() - 1, 10)
_GZIP_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]  # stub: instance
_local = threading.local()  # each thread's zstd compressor


def _zstd_frame(data: bytes) -> bytes:
    """``data`` as one zstd frame, by this thread's compressor: making a compressor per
    chunk (``zstd.compress``) costs several times the compression of a small chunk. The same
    bytes as ``zstd.compress``; a compressor a failure left mid-frame is not reused."""
    comp = getattr(_local, "zstd", None)
    if comp is None:
        comp = _local.zstd = zstd.ZstdCompressor(level=ZSTD_LEVEL)
    try:
        out: bytes = comp.compress(data, mode=zstd.ZstdCompressor.FLUSH_FRAME)
    except BaseException:
        _local.zstd = None
        raise
    return out


def _encode(data: bytes, compression: ChunkCompression) -> bytes:
    if compression == "zstd":
        return _zstd_frame(data)
    if compression == "gzip":
        comp = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)
        return bytes(comp.compress(data) + comp.flush())
    return data


def compress(
    data: bytes, compression: ChunkCompression = DEFAULT_COMPRESSION
) -> tuple[ChunkCompression, bytes]:
    """``(compression used, stored bytes)`` for one chunk; ``"none"`` when it doesn't pay."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression {compression!r}")
    if compression == "none" or len(data) < MIN_COMPRESS_SIZE:
        return "none", data
    packed = _encode(data, compression)
    if len(packed) > len(data) * (1 - MIN_SAVING):
        return "none", data
    return compression, packed


def _decoder(compression: str) -> Any:
    if compression == "zstd":
        option = {int(zstd.DecompressionParameter.window_log_max): ZSTD_WINDOW_LOG_MAX}
        return zstd.ZstdDecompressor(options=option)
    return isal_zlib.decompressobj(31)


def decompress(stored: bytes, compression: str, expected_size: int) -> bytes:
    """The plaintext of one stored chunk, exactly ``expected_size`` bytes.

    Raises :class:`DecompressionBomb` as soon as the output would exceed ``expected_size``
    (at most ``expected_size + 1`` bytes are ever produced), :class:`CorruptChunk` when the
    data is damaged, truncated, followed by trailing bytes or shorter than declared.
    """
    if not 0 <= expected_size <= MAX_CHUNK_SIZE:
        raise CorruptChunk(f"declared chunk size {expected_size} is out of range")
    if compression == "none":
        if len(stored) != expected_size:
            raise CorruptChunk(f"stored chunk has {len(stored)} bytes, expected {expected_size}")
        return stored
    if compression not in ("gzip", "zstd"):
        raise CorruptChunk(f"unknown compression {compression!r}")
    dec = _decoder(compression)
    try:
        out: bytes = dec.decompress(stored, expected_size + 1)
    except (_GZIP_ERROR, zstd.ZstdError) as exc:
        raise CorruptChunk(f"{compression} chunk does not decode: {exc}") from None
    if len(out) > expected_size:
        raise DecompressionBomb(
            f"{compression} chunk inflates beyond its declared {expected_size} bytes"
        )
    if not dec.eof:
        raise CorruptChunk(f"{compression} chunk is truncated")
    if dec.unused_data:
        raise CorruptChunk(f"{compression} chunk has {len(dec.unused_data)} trailing bytes")
    if len(out) != expected_size:
        raise CorruptChunk(
            f"{compression} chunk decodes to {len(out)} bytes, expected {expected_size}"
        )
    return out


def decode_chunk(stored: bytes, ref: ChunkRef) -> bytes:
    """Decompress the stored bytes of ``ref`` and check its size and sha256."""
    if ref.encryption != "none":
        raise StorageError(f"chunk {ref.sha256[:12]} is encrypted ({ref.encryption})")
    if len(stored) != ref.length:
        raise CorruptChunk(
            f"chunk {ref.sha256[:12]}: got {len(stored)} stored bytes, expected {ref.length}"
        )
    data = decompress(stored, ref.compression, ref.size)
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise CorruptChunk(f"chunk {ref.sha256[:12]} does not match its sha256")
    return data


class CompressionProbe:
    """Which codec to offer a file's next chunk: after :data:`GIVE_UP_AFTER` chunks in a row
    that did not compress (already compressed or random data), the next :data:`SKIP_CHUNKS`
    are stored as they are without trying, then the codec is tried again. One per file."""

    GIVE_UP_AFTER = 4
    SKIP_CHUNKS = 32

    def __init__(self, compression: ChunkCompression) -> None:
        self.compression = compression
        self._misses = 0
        self._skip = 0

    def choose(self) -> ChunkCompression:
        """The codec to try for the next chunk (``"none"`` while skipping)."""
        if self._skip:
            self._skip -= 1
            return "none"
        return self.compression

    def record(self, tried: ChunkCompression, used: ChunkCompression) -> None:
        """What compressing one chunk gave: ``used`` is ``"none"`` when it did not pay."""
        if tried == "none":
            return
        if used != "none":
            self._misses = 0
            return
        self._misses += 1
        if self._misses >= self.GIVE_UP_AFTER:
            self._misses = 0
            self._skip = self.SKIP_CHUNKS
