"""The bodies of S3 requests: a file read in one pass into parts (a window on the file
when uncompressed, gzip output held in memory when compressed), and their checksums.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from isal import isal_zlib

from akoshad.compress import Digest, gzip_compressor
from akoshad.fileio import CHUNK, read_chunks
from akoshad.targets.base import Compression
from akoshad.targets.s3.errors import SourceChanged

MiB = 1024 * 1024
MAX_PARTS = 10_000  # S3's limit on the parts of one multipart upload
# Bodies up to this size go as bytes (no reads while sending); larger ones are streamed.
SMALL_BODY = 256 * 1024

Checksum = Literal["crc32", "md5"]
Buffer = bytes | bytearray | memoryview
# the request parameter that carries each kind of body checksum
_CHECKSUM_PARAM: dict[Checksum, str] = {"crc32": "ChecksumCRC32", "md5": "ContentMD5"}


class _Digest:
    """An incremental body checksum, base64 as S3 wants it in its header."""

    def __init__(self, kind: Checksum) -> None:
        self.kind = kind
        self._crc = 0
        self._md5 = hashlib.md5() if kind == "md5" else None

    def update(self, data: Buffer) -> None:
        if self._md5 is not None:
            self._md5.update(data)
        else:
            self._crc = isal_zlib.crc32(data, self._crc)

    def b64(self) -> str:
        raw = self._md5.digest() if self._md5 is not None else self._crc.to_bytes(4, "big")
        return base64.b64encode(raw).decode()


def body_checksum(kind: Checksum, data: Buffer) -> str:
    """The base64 checksum of ``data`` for the ``x-amz-checksum-crc32`` or ``Content-MD5``
    header."""
    digest = _Digest(kind)
    digest.update(data)
    return digest.b64()


class _FileWindow(io.RawIOBase):
    """A read-only, seekable view of ``length`` bytes of an open file from ``offset``.

    The HTTP client reads it as it sends (256 KiB at a time), so a part of an uncompressed
    file is never held in memory whole. A window that cannot be read to its full length
    (the file shrank) raises ``SourceChanged`` rather than send less than the announced
    ``Content-Length``.
    """

    def __init__(self, fd: int, offset: int, length: int) -> None:
        super().__init__()
        self._fd = os.dup(fd)
        self._offset = offset
        self._length = length
        self._pos = 0

    def __len__(self) -> int:
        return self._length

    @property
    def fd(self) -> int:
        """The window's own descriptor of the file (not ``fileno``: botocore would take the
        whole file's size from it)."""
        return self._fd

    @property
    def file_offset(self) -> int:
        """Where the window starts in the file."""
        return self._offset

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + pos))
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        left = self._length - self._pos
        n = left if size is None or size < 0 else min(size, left)
        if n <= 0:
            return b""
        data = os.pread(self._fd, n, self._offset + self._pos)
        if not data:
            raise SourceChanged("the file shrank while it was being sent")
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()

    def checksum(self, kind: Checksum, plaintext: Digest | None = None) -> str:
        """The window's body checksum (reads it once, in the caller's thread), also fed to
        ``plaintext`` (the file's SHA-256, windows taken in order)."""
        digest = _Digest(kind)
        pos = 0
        while pos < self._length:
            chunk = os.pread(self._fd, min(CHUNK, self._length - pos), self._offset + pos)
            if not chunk:
                raise SourceChanged("the file shrank while it was being sent")
            digest.update(chunk)
            if plaintext is not None:
                plaintext.update(chunk)
            pos += len(chunk)
        return digest.b64()


@dataclass
class _Part:
    """One request body: small bytes, compressed output, or a window on the file (plain)."""

    body: bytes | io.BytesIO | _FileWindow
    size: int
    checksum: str  # base64, of the target's ``Checksum`` kind
    on_close: Callable[[], None] | None = None

    def rewound(self) -> bytes | io.BytesIO | _FileWindow:
        if not isinstance(self.body, bytes):
            self.body.seek(0)
        return self.body

    def close(self) -> None:
        if not isinstance(self.body, bytes):
            self.body.close()
        release, self.on_close = self.on_close, None
        if release is not None:
            release()


def part_size_for(file_size: int, chunk: int) -> int:
    """``chunk``, or more for a file that would need over ``MAX_PARTS`` parts of it (S3
    allows 10,000); in whole MiB, with room for gzip's few bytes of growth."""
    bound = file_size + file_size // 100 + MiB
    if bound <= chunk * MAX_PARTS:
        return chunk
    return -(-bound // (MAX_PARTS * MiB)) * MiB


class _PartSource:
    """Cuts a file into parts (``part_size_for`` its size), gzipping first when asked.

    Blocking: every method runs in a worker thread. Reads to the end of the file like
    ``fh.read`` would (the caller checks that a live file did not change).
    """

    def __init__(self, path: Path, compression: Compression, chunk: int, checksum: Checksum):
        self._fh = path.open("rb")
        try:
            self._size = part_size_for(os.fstat(self._fh.fileno()).st_size, chunk)
        except BaseException:
            self._fh.close()
            raise
        self._checksum: Checksum = checksum
        self._lock = threading.Lock()
        self._offset = 0
        self._gzip = gzip_compressor() if compression == "gzip" else None
        self._chunks = read_chunks(self._fh, CHUNK) if self._gzip is not None else None
        self._buf = bytearray()
        self._eof = False
        self._sha256 = hashlib.sha256()  # of the plaintext, as read for the parts

    @classmethod
    def open(
        cls, path: Path, compression: Compression, chunk: int, checksum: Checksum
    ) -> tuple[_PartSource, _Part | None]:
        """Open ``path`` and cut its first part; a file that fits in it is closed at once."""
        parts = cls(path, compression, chunk, checksum)
        try:
            first = parts.next_part()
            if first is None or first.size < parts.part_size:
                parts.close()
        except BaseException:
            parts.close()
            raise
        return parts, first

    @property
    def part_size(self) -> int:
        return self._size

    async def ready(self) -> None:
        """Wait until the next part can be cut (a finished file: at once)."""

    @property
    def sha256(self) -> str:
        """SHA-256 of what was read so far: of the whole file once parts are exhausted."""
        return self._sha256.hexdigest()

    @property
    def in_memory(self) -> bool:
        """True when parts are bytes held in memory (compressed), not file windows."""
        return self._gzip is not None

    @property
    def closed(self) -> bool:
        return self._fh.closed

    def next_part(self) -> _Part | None:
        with self._lock:
            if self._fh.closed:
                return None
            return self._next_plain() if self._gzip is None else self._next_gzip()

    def _next_plain(self) -> _Part | None:
        fd = self._fh.fileno()
        length = min(self._size, os.fstat(fd).st_size - self._offset)
        if length <= 0:
            return None
        if length <= SMALL_BODY:
            data = os.pread(fd, length, self._offset)
            if len(data) < length:
                raise SourceChanged("the file shrank while it was being sent")
            self._offset += length
            self._sha256.update(data)
            return _Part(data, length, body_checksum(self._checksum, data))
        window = _FileWindow(fd, self._offset, length)
        try:
            checksum = window.checksum(self._checksum, self._sha256)
        except BaseException:
            window.close()
            raise
        self._offset += length
        return _Part(window, length, checksum)

    def _next_gzip(self) -> _Part | None:
        assert self._gzip is not None and self._chunks is not None
        while len(self._buf) < self._size and not self._eof:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._eof = True
                self._buf += self._gzip.flush()
            else:
                self._sha256.update(chunk)
                self._buf += self._gzip.compress(chunk)
        if not self._buf:
            return None
        if len(self._buf) <= self._size:
            data, self._buf = bytes(self._buf), bytearray()
        else:  # parts of exactly ``size`` bytes (R2 wants equal parts but the last)
            with memoryview(self._buf) as view:
                data = bytes(view[: self._size])
            del self._buf[: self._size]
        body = data if len(data) <= SMALL_BODY else io.BytesIO(data)
        return _Part(body, len(data), body_checksum(self._checksum, data))

    def close(self) -> None:
        with self._lock:
            self._fh.close()
            self._buf = bytearray()
