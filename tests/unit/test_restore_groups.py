"""Restore units: small files of one pack read together, everything else on its own."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from akoshad.restore import groups
from akoshad.restore.groups import SpanReader, work_units
from akoshad.storage.errors import PackError
from akoshad.storage.refs import ChunkRef
from akoshad.storage.stored import StoredFile, WholeObject

PACK_A = "systems/s/packs/aa/" + "a" * 64
PACK_B = "systems/s/packs/bb/" + "b" * 64
SHA = hashlib.sha256(b"").hexdigest()


def chunk(key: str, offset: int, length: int) -> ChunkRef:
    return ChunkRef(SHA, length, key, offset, length, "none", "none")


def small(path: str, key: str, offset: int, length: int = 100) -> StoredFile:
    return StoredFile(path, "file", length, SHA, (chunk(key, offset, length),))


class Recorder:
    def __init__(self, fail: BaseException | None = None) -> None:
        self.reads: list[tuple[str, int, int]] = []
        self.fail = fail

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        self.reads.append((key, offset, length))
        if self.fail is not None:
            raise self.fail
        return bytes(length)


def test_small_files_of_a_pack_share_a_unit_and_big_ones_stand_alone() -> None:
    files = [
        small("a", PACK_A, 0),
        StoredFile("big", "file", 200, SHA, (chunk(PACK_A, 100, 100), chunk(PACK_A, 200, 100))),
        small("b", PACK_A, 300),
        small("c", PACK_B, 0),
        small("d", PACK_A, 50 * 1024 * 1024),  # far away in the same pack
        StoredFile(
            "old", "file", 10, SHA, (WholeObject("systems/s/uploads/u/old", 10, "none", 10, SHA),)
        ),
        StoredFile("empty", "file", 0, SHA, ()),
    ]
    units = work_units(files, Recorder())
    by_paths = {tuple(f.path for _, f in u.files): u for u in units}
    assert set(by_paths) == {("a", "b"), ("big",), ("c",), ("d",), ("old",), ("empty",)}
    ab = by_paths[("a", "b")]
    assert ab.reader is not None
    assert (ab.reader.key, ab.reader.start, ab.reader.length) == (PACK_A, 0, 400)
    assert ab.stored_size == 400
    assert [i for i, _ in ab.files] == [0, 2]
    assert all(by_paths[p].reader is None for p in [("big",), ("c",), ("d",), ("old",)])
    assert sorted(i for u in units for i, _ in u.files) == list(range(len(files)))


def test_a_unit_holds_at_most_group_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(groups, "GROUP_FILES", 3)
    files = [small(f"f{i}", PACK_A, i * 100) for i in range(7)]
    units = work_units(files, Recorder())
    assert [len(u.files) for u in units] == [3, 3, 1]
    assert [u.reader.start if u.reader else None for u in units] == [0, 300, None]


async def test_span_reader_reads_once_and_serves_ranges_inside() -> None:
    inner = Recorder()
    reader = SpanReader(inner, PACK_A, 1000, 500)
    got = await asyncio.gather(*(reader.read_range(PACK_A, 1000 + 100 * i, 50) for i in range(5)))
    assert inner.reads == [(PACK_A, 1000, 500)]
    assert all(len(g) == 50 for g in got)
    await reader.read_range(PACK_A, 1400, 200)  # past the span: read by the inner reader
    assert inner.reads[-1] == (PACK_A, 1400, 200)
    reader.release()
    await reader.read_range(PACK_A, 1000, 10)
    assert inner.reads.count((PACK_A, 1000, 500)) == 2


@pytest.mark.parametrize("error", [KeyError(PACK_A), PackError("short")])
async def test_span_reader_fails_every_read_alike(error: BaseException) -> None:
    inner = Recorder(fail=error)
    reader = SpanReader(inner, PACK_A, 0, 500)
    for offset in (0, 100, 200):
        with pytest.raises(type(error)):
            await reader.read_range(PACK_A, offset, 10)
    assert len(inner.reads) == 1
