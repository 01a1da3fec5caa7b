"""Pack files: many stored chunk bodies concatenated into one object, and reading them back.

A pack is the plain concatenation of stored (compressed, maybe encrypted) chunk bodies, no
header. Its id is the sha256 of its layout (each body's name, offset and length, see
:func:`layout_id`), not of its bytes: two packs with one id hold the same chunks at the
same places, and every reader checks each chunk's sha256 after decoding, so either serves
(writing one again is idempotent) and the bytes are not hashed a third time. Packs written
before (id = sha256 of the bytes) read the same way. Its key is
``systems/{system_id}/packs/{pp}/{pack_id}``. :class:`PackWriter` fills pack files in
a private staging directory (files mode 0600) up to :data:`PACK_TARGET` bytes (never beyond
:data:`PACK_MAX`); :func:`plan_reads` groups chunk locations into few ranged reads.
Blocking (file writes and hashing): call from a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NamedTuple

from isal import isal_zlib

from akoshad.names import SYSTEM_ID_RE
from akoshad.storage.errors import PackError

MiB = 1024 * 1024
PACK_TARGET = 16 * MiB
PACK_MAX = 64 * MiB
READ_MAX_GAP = 1 * MiB  # unread bytes worth fetching to save a request
READ_MAX_SPAN = 16 * MiB  # bytes one coalesced read holds in memory
_PACK_ID_RE = re.compile(r"^[0-9a-f]{64}$")


def pack_key(system_id: str, pack_id: str) -> str:
    """``systems/{system_id}/packs/{pp}/{pack_id}``."""
    if not SYSTEM_ID_RE.match(system_id):
        raise ValueError(f"invalid system_id {system_id!r}")
    if not _PACK_ID_RE.match(pack_id):
        raise ValueError(f"invalid pack id {pack_id!r}")
    return f"systems/{system_id}/packs/{pack_id[:2]}/{pack_id}"


class PackSlot(NamedTuple):
    """Where a chunk body went: ``length`` bytes at ``offset`` of the pack; ``name`` is the
    caller's handle for the body (usually the chunk's sha256)."""

    name: str
    offset: int
    length: int


def layout_id(slots: Iterable[PackSlot], salt: str = "") -> str:
    """A pack's id: the sha256 of its layout (name, offset, length of every body), and of
    ``salt`` when one is given (an upload's id: see :class:`PackWriter`).

    Bodies of one name are encodings of one chunk; a body's length tells its encoding
    apart (``none`` is kept only when compression saves less than 3%, and sealing adds a
    fixed overhead), so equal layouts mean interchangeable packs."""
    digest = hashlib.sha256(b"akoshad-pack-layout-1\n")
    if salt:
        digest.update(f"salt {salt}\n".encode())
    for slot in slots:
        digest.update(f"{slot.name} {slot.offset} {slot.length}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class SealedPack:
    """A finished pack file, ready to upload to ``key`` and delete afterwards."""

    pack_id: str
    key: str
    path: Path
    size: int
    slots: tuple[PackSlot, ...]
    crc32: int  # of the file's bytes (the body checksum S3 is sent)


def _check_private_dir(path: Path) -> None:
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise PackError(f"staging directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PackError(f"staging directory {path} is not a directory")
    if st.st_mode & 0o077 or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        raise PackError(f"staging directory {path} must be private (mode 0700, owned by us)")


class PackWriter:
    """Accumulates chunk bodies into pack files of about ``target`` bytes.

    ``add`` returns the packs it sealed (usually none); ``flush`` seals the partial pack.
    Use as a context manager: an unsealed pack file is removed on exit. An upload passes
    its id as ``salt``: its packs then never take the key of another upload's pack of the
    same layout (after a lost state the chunk table does not know the earlier pack's
    chunks, and a failed upload removes the packs it wrote: it must not remove that one).
    """

    def __init__(
        self,
        staging_dir: Path,
        system_id: str,
        target: int = PACK_TARGET,
        max_size: int = PACK_MAX,
        *,
        salt: str = "",
    ) -> None:
        if not 0 < target <= max_size <= PACK_MAX:
            raise ValueError("pack sizes must satisfy 0 < target <= max <= 64 MiB")
        pack_key(system_id, "0" * 64)  # validates system_id early
        _check_private_dir(staging_dir)
        self.staging_dir = staging_dir
        self.system_id = system_id
        self.target = target
        self.max_size = max_size
        self.salt = salt
        self._fd: int | None = None
        self._tmp: Path | None = None
        self._crc = 0
        self._size = 0
        self._slots: list[PackSlot] = []
        self._serial = 0

    @property
    def pending(self) -> int:
        """Bytes in the pack being filled."""
        return self._size

    def _open(self) -> int:
        self._serial += 1
        tmp = self.staging_dir / f"pack-{os.getpid()}-{id(self):x}-{self._serial}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        self._fd = os.open(tmp, flags | getattr(os, "O_NOFOLLOW", 0), 0o600)
        self._tmp = tmp
        self._crc = 0
        self._size = 0
        self._slots = []
        return self._fd

    def add(self, name: str, body: bytes) -> list[SealedPack]:
        """Append one stored chunk body; returns the packs sealed by this call."""
        if len(body) > self.max_size:
            raise PackError(f"chunk body of {len(body)} bytes exceeds the pack limit")
        sealed: list[SealedPack] = []
        if self._size and self._size + len(body) > self.max_size:
            sealed.append(self._seal())
        try:
            fd = self._fd if self._fd is not None else self._open()
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            self.abort()
            raise PackError(f"writing a pack in {self.staging_dir}: {exc.strerror}") from None
        self._crc = isal_zlib.crc32(body, self._crc)
        self._slots.append(PackSlot(name, self._size, len(body)))
        self._size += len(body)
        if self._size >= self.target:
            sealed.append(self._seal())
        return sealed

    def flush(self) -> SealedPack | None:
        """Seal the pack being filled, if any."""
        return self._seal() if self._fd is not None else None

    def _seal(self) -> SealedPack:
        assert self._fd is not None and self._tmp is not None
        fd, tmp, size, slots, crc = self._fd, self._tmp, self._size, tuple(self._slots), self._crc
        self._fd = self._tmp = None
        self._size, self._slots = 0, []
        # No fsync: a staging file only lives until it is uploaded; after a crash the
        # upload starts over and the leftovers are the caller's to clear.
        os.close(fd)
        pack_id = layout_id(slots, self.salt)
        final = self.staging_dir / pack_id
        try:
            os.replace(tmp, final)  # the same layout if it existed: idempotent
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise PackError(f"sealing a pack in {self.staging_dir}: {exc.strerror}") from None
        return SealedPack(pack_id, pack_key(self.system_id, pack_id), final, size, slots, crc)

    def abort(self) -> None:
        """Drop the pack being filled (its file is removed)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
            self._tmp = None
        self._size = 0
        self._slots = []

    def __enter__(self) -> PackWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


FetchRange = Callable[[int, int], bytes]
"""``fetch(offset, length)``: ``length`` bytes of an object from ``offset`` (a ranged GET)."""


def read_range(source: BinaryIO | FetchRange, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` of a pack, from a seekable stream or a range fetcher;
    :class:`PackError` when fewer bytes come back."""
    if offset < 0 or length < 0:
        raise ValueError("offset and length must not be negative")
    if callable(source):
        data = source(offset, length)
    else:
        source.seek(offset)
        parts: list[bytes] = []
        left = length
        while left:
            part = source.read(left)
            if not part:
                break
            parts.append(part)
            left -= len(part)
        data = b"".join(parts)
    if len(data) != length:
        raise PackError(f"pack read at {offset}: got {len(data)} bytes, expected {length}")
    return data


class Location(NamedTuple):
    """Stored bytes of a chunk: ``length`` bytes at ``offset`` of object ``key``."""

    key: str
    offset: int
    length: int


class RangeRead(NamedTuple):
    """One ranged read ``[start, end)`` of ``key`` covering the chunks at ``items``
    (indexes into the list given to :func:`plan_reads`)."""

    key: str
    start: int
    end: int
    items: tuple[int, ...]

    @property
    def length(self) -> int:
        return self.end - self.start

    def extract(self, data: bytes, loc: Location) -> bytes:
        """The bytes of ``loc`` out of ``data``, the result of this read."""
        if loc.key != self.key or loc.offset < self.start or loc.offset + loc.length > self.end:
            raise ValueError("location is not inside this read")
        if len(data) != self.length:
            raise PackError(f"ranged read of {self.key}: got {len(data)} bytes of {self.length}")
        rel = loc.offset - self.start
        return data[rel : rel + loc.length]


def plan_reads(
    locations: Sequence[Location],
    max_gap: int = READ_MAX_GAP,
    max_span: int = READ_MAX_SPAN,
) -> list[RangeRead]:
    """Group chunk locations into as few ranged reads as possible.

    Locations in the same object merge when the bytes between them are at most ``max_gap``
    and the read stays within ``max_span`` (a single longer chunk gets a read of its own,
    shared only with locations inside it).
    Overlapping or repeated locations share a read. Reads come sorted by key and offset.
    """
    if max_gap < 0 or max_span <= 0:
        raise ValueError("max_gap must be >= 0 and max_span > 0")
    order = sorted(range(len(locations)), key=lambda i: (locations[i][0], locations[i][1]))
    reads: list[RangeRead] = []
    key, start, end, items = "", 0, 0, list[int]()
    for i in order:
        k, offset, length = locations[i]
        if offset < 0 or length < 0:
            raise ValueError(f"location {i} has a negative offset or length")
        stop = offset + length
        inside = stop <= end  # sorted: offset >= start, so this location adds no byte
        if (
            items
            and k == key
            and (inside or (offset - end <= max_gap and stop - start <= max_span))
        ):
            end = max(end, stop)
            items.append(i)
            continue
        if items:
            reads.append(RangeRead(key, start, end, tuple(items)))
        key, start, end, items = k, offset, stop, [i]
    if items:
        reads.append(RangeRead(key, start, end, tuple(items)))
    return reads


def read_planned(
    plan: Iterable[RangeRead], locations: Sequence[Location], fetch: Callable[[RangeRead], bytes]
) -> dict[int, bytes]:
    """Run ``plan`` sequentially with ``fetch`` and return each location's bytes by index
    (a helper for tests and small restores; a parallel restore runs the reads itself)."""
    out: dict[int, bytes] = {}
    for rr in plan:
        data = fetch(rr)
        for i in rr.items:
            out[i] = rr.extract(data, locations[i])
    return out
