"""Pack files and ranged-read plans."""

from __future__ import annotations

import io
import itertools
import os
import random
import stat
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from akoshad.storage.errors import PackError
from akoshad.storage.packs import (
    Location,
    PackSlot,
    PackWriter,
    RangeRead,
    layout_id,
    pack_key,
    plan_reads,
    read_planned,
    read_range,
)

PACK_ID = "ab" + "0" * 62


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    d = tmp_path / "staging"
    d.mkdir(mode=0o700)
    d.chmod(0o700)
    return d


def bodies(n: int, size: int, seed: int = 1) -> list[bytes]:
    r = random.Random(seed)
    return [r.randbytes(size) for _ in range(n)]


def test_pack_key_layout() -> None:
    assert pack_key("host-1", PACK_ID) == f"systems/host-1/packs/ab/{PACK_ID}"
    for sid, pid in [("../x", PACK_ID), ("a/b", PACK_ID), ("ok", "AB" * 32), ("ok", "ab")]:
        with pytest.raises(ValueError):
            pack_key(sid, pid)


def test_writer_fills_packs_to_target_and_names_them_by_layout(staging: Path) -> None:
    items = bodies(10, 1000)
    sealed = []
    with PackWriter(staging, "sys", target=3000, max_size=5000) as w:
        for i, body in enumerate(items):
            sealed += w.add(f"c{i}", body)
        assert w.pending == 1000
        last = w.flush()
        assert last is not None
        assert w.pending == 0
        sealed.append(last)
        assert w.flush() is None
    assert [p.size for p in sealed] == [3000, 3000, 3000, 1000]
    got: dict[str, bytes] = {}
    for p in sealed:
        raw = p.path.read_bytes()
        assert p.pack_id == layout_id(p.slots)
        assert p.crc32 == zlib.crc32(raw)
        assert p.path.name == p.pack_id
        assert p.key == pack_key("sys", p.pack_id)
        assert stat.S_IMODE(p.path.stat().st_mode) == 0o600
        assert len(raw) == p.size
        for slot in p.slots:
            got[slot.name] = raw[slot.offset : slot.offset + slot.length]
    assert got == {f"c{i}": b for i, b in enumerate(items)}
    assert sorted(os.listdir(staging)) == sorted(p.pack_id for p in sealed)


def test_a_body_that_would_pass_the_max_starts_a_new_pack(staging: Path) -> None:
    with PackWriter(staging, "sys", target=1000, max_size=1500) as w:
        assert w.add("a", b"a" * 900) == []
        sealed = w.add("b", b"b" * 700)  # 1600 > max: "a" is sealed alone first
        assert len(sealed) == 1 and sealed[0].size == 900
        assert w.pending == 700
        with pytest.raises(PackError):
            w.add("huge", b"x" * 1501)


def test_the_same_bodies_give_the_same_pack(staging: Path) -> None:
    ids = []
    for _ in range(2):
        w = PackWriter(staging, "sys")
        for i, b in enumerate(bodies(3, 500)):
            w.add(str(i), b)
        sealed = w.flush()
        assert sealed is not None
        ids.append(sealed.pack_id)
    assert ids[0] == ids[1]
    assert os.listdir(staging) == [ids[0]]


def test_the_same_bodies_of_two_uploads_give_two_packs(staging: Path) -> None:
    """An upload salts its packs' ids with its own id: the same layout written by two
    uploads makes two keys (a failed upload removes its packs, never another's)."""
    ids = []
    for salt in ("upload-1", "upload-2", "upload-1"):
        w = PackWriter(staging, "sys", salt=salt)
        for i, b in enumerate(bodies(3, 500)):
            w.add(str(i), b)
        sealed = w.flush()
        assert sealed is not None
        assert sealed.pack_id == layout_id(sealed.slots, salt) != layout_id(sealed.slots)
        ids.append(sealed.pack_id)
    assert ids[0] != ids[1] and ids[0] == ids[2]
    assert sorted(os.listdir(staging)) == sorted(ids[:2])


def test_the_id_follows_the_layout_not_the_bytes() -> None:
    """Bodies of one chunk name at one place give one id (any of them serves a reader, who
    checks the chunk's sha256); another name, offset or length gives another id."""
    base = [PackSlot("a", 0, 10), PackSlot("b", 10, 5)]
    assert layout_id(base) == layout_id(list(base))
    assert len(layout_id(base)) == 64
    for other in (
        [PackSlot("a", 0, 10), PackSlot("c", 10, 5)],
        [PackSlot("a", 0, 10), PackSlot("b", 10, 6)],
        [PackSlot("b", 0, 5), PackSlot("a", 5, 10)],
        [PackSlot("a", 0, 10)],
    ):
        assert layout_id(other) != layout_id(base)


def test_abort_and_exit_leave_no_partial_file(staging: Path) -> None:
    with PackWriter(staging, "sys") as w:
        w.add("a", b"abc")
        assert len(os.listdir(staging)) == 1
    assert os.listdir(staging) == []
    w = PackWriter(staging, "sys")
    w.add("a", b"abc")
    w.abort()
    assert os.listdir(staging) == [] and w.pending == 0


def test_staging_dir_must_be_private(tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o755)
    with pytest.raises(PackError, match="private"):
        PackWriter(open_dir, "sys")
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(PackError, match="not a directory"):
        PackWriter(link, "sys")
    with pytest.raises(PackError):
        PackWriter(tmp_path / "missing", "sys")


def test_read_range_from_a_stream_or_a_fetcher() -> None:
    pack = bytes(range(256)) * 10
    assert read_range(io.BytesIO(pack), 300, 20) == pack[300:320]
    calls: list[tuple[int, int]] = []

    def fetch(offset: int, length: int) -> bytes:
        calls.append((offset, length))
        return pack[offset : offset + length]

    assert read_range(fetch, 10, 5) == pack[10:15]
    assert calls == [(10, 5)]
    with pytest.raises(PackError, match="expected 50"):
        read_range(io.BytesIO(pack), len(pack) - 10, 50)
    with pytest.raises(PackError):
        read_range(fetch, len(pack) - 1, 2)


def test_adjacent_chunks_coalesce_into_one_read() -> None:
    locs = [Location("k1", 0, 100), Location("k1", 100, 50), Location("k1", 150, 10)]
    assert plan_reads(locs) == [RangeRead("k1", 0, 160, (0, 1, 2))]


def test_gaps_keys_and_span_split_reads() -> None:
    locs = [
        Location("k2", 0, 10),
        Location("k1", 500, 10),
        Location("k1", 0, 10),  # gap of 490 to the one at 500
        Location("k1", 2000, 10),  # gap over the limit
        Location("k1", 2010, 5000),  # would make the read too long
        Location("k1", 20, 5),  # duplicate region inside the first read
        Location("k1", 0, 10),
    ]
    plan = plan_reads(locs, max_gap=490, max_span=4000)
    assert plan == [
        RangeRead("k1", 0, 510, (2, 6, 5, 1)),
        RangeRead("k1", 2000, 2010, (3,)),
        RangeRead("k1", 2010, 7010, (4,)),
        RangeRead("k2", 0, 10, (0,)),
    ]


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError):
        plan_reads([Location("k", -1, 3)])
    with pytest.raises(ValueError):
        plan_reads([], max_span=0)
    rr = RangeRead("k", 10, 20, (0,))
    with pytest.raises(ValueError):
        rr.extract(b"x" * 10, Location("k", 15, 10))
    with pytest.raises(PackError):
        rr.extract(b"x" * 9, Location("k", 10, 5))


@settings(max_examples=80, deadline=None)
@given(
    spec=st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 5000), st.integers(0, 700)),
        max_size=40,
    ),
    max_gap=st.integers(0, 600),
    max_span=st.integers(1, 3000),
)
def test_every_location_is_served_by_one_read(
    spec: list[tuple[str, int, int]], max_gap: int, max_span: int
) -> None:
    objects = {k: random.Random(k).randbytes(6000) for k in "abc"}
    locs = [Location(*s) for s in spec]
    plan = plan_reads(locs, max_gap=max_gap, max_span=max_span)
    served = sorted(i for rr in plan for i in rr.items)
    assert served == list(range(len(locs)))
    for rr in plan:
        assert rr.length <= max_span or any(locs[i].length == rr.length for i in rr.items)
    for prev, nxt in itertools.pairwise(plan):
        if prev.key == nxt.key:  # a split had a reason: gap or span
            assert nxt.start - prev.end > max_gap or nxt.end - prev.start > max_span
    got = read_planned(plan, locs, lambda rr: objects[rr.key][rr.start : rr.end])
    assert got == {i: objects[k][o : o + n] for i, (k, o, n) in enumerate(locs)}
