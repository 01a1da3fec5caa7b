"""Units of work for restore and verify: small files packed together are read together.

In format 2 a small file is one chunk in a pack shared with many others; fetching each on
its own costs one request per file. :func:`work_units` groups such files by pack: files
whose chunks lie close together in one pack (``packs.plan_reads``: gaps of at most
:data:`GROUP_GAP`, spans of at most :data:`GROUP_SPAN`, at most :data:`GROUP_FILES` files)
make one unit served by one ranged read (:class:`SpanReader`), which then holds at most
:data:`GROUP_SPAN` bytes. Every other file (several chunks, a whole object of format 1) is
a unit of its own. A unit weighs its stored bytes (``parallel.weight_of``) in the restore's
byte budget. Each file is still fetched and checked on its own by ``fetch_file``, so a
missing or damaged pack is named in the problem of every file it holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from akoshad.storage.errors import PackError
from akoshad.storage.fetch import RangeReader
from akoshad.storage.packs import Location, plan_reads
from akoshad.storage.stored import StoredFile

MiB = 1024 * 1024
GROUP_SPAN = 4 * MiB
GROUP_GAP = 256 * 1024
GROUP_FILES = 64


class SpanReader:
    """A :class:`RangeReader` that reads ``length`` bytes at ``start`` of ``key`` once (on
    the first read) and serves the ranges inside them; anything else goes to ``inner``. A
    failed read fails every read it would have served, the same way."""

    def __init__(self, inner: RangeReader, key: str, start: int, length: int) -> None:
        self.inner = inner
        self.key = key
        self.start = start
        self.length = length
        self._lock = asyncio.Lock()
        self._data: bytes | None = None
        self._error: KeyError | PackError | None = None

    async def _load(self) -> bytes:
        async with self._lock:
            if self._error is not None:
                raise self._error
            if self._data is None:
                try:
                    self._data = await self.inner.read_range(self.key, self.start, self.length)
                except (KeyError, PackError) as exc:
                    self._error = exc
                    raise
            return self._data

    async def load(self) -> bytes:
        """The span's bytes (read once); ``KeyError``/``PackError`` when the read fails."""
        return await self._load()

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        end = self.start + self.length
        if key != self.key or offset < self.start or offset + length > end:
            return await self.inner.read_range(key, offset, length)
        data = await self._load()
        return data[offset - self.start : offset - self.start + length]

    def release(self) -> None:
        """Drop the bytes held (the unit is done)."""
        self._data = None


@dataclass(frozen=True)
class Unit:
    """Files fetched together: one file, or small files read by one ranged read."""

    files: tuple[tuple[int, StoredFile], ...]  # (index in the manifest's order, file)
    reader: SpanReader | None = None

    @property
    def stored_size(self) -> int:
        if self.reader is not None:
            return self.reader.length
        return sum(f.stored_size for _, f in self.files)


def _groupable(f: StoredFile) -> bool:
    return f.whole is None and len(f.chunks) == 1 and f.chunks[0].length <= GROUP_SPAN


def _split(items: Sequence[int], locs: Sequence[Location]) -> list[list[int]]:
    """``items`` in pack order, cut every :data:`GROUP_FILES` files."""
    ordered = sorted(items, key=lambda i: locs[i].offset)
    return [ordered[n : n + GROUP_FILES] for n in range(0, len(ordered), GROUP_FILES)]


def work_units(files: Sequence[StoredFile], ranges: RangeReader) -> list[Unit]:
    """``files`` as units (see the module docstring); every file in exactly one unit."""
    units: list[Unit] = []
    small: list[int] = []
    for i, f in enumerate(files):
        if _groupable(f):
            small.append(i)
        else:
            units.append(Unit(((i, f),)))
    locs = [
        Location(files[i].chunks[0].key, files[i].chunks[0].offset, files[i].chunks[0].length)
        for i in small
    ]
    for rr in plan_reads(locs, max_gap=GROUP_GAP, max_span=GROUP_SPAN):
        for part in _split(rr.items, locs):
            if len(part) == 1:
                units.append(Unit(((small[part[0]], files[small[part[0]]]),)))
                continue
            start = min(locs[j].offset for j in part)
            end = max(locs[j].offset + locs[j].length for j in part)
            reader = SpanReader(ranges, rr.key, start, end - start)
            units.append(Unit(tuple((small[j], files[small[j]]) for j in part), reader))
    return units
