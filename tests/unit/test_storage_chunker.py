"""Content-defined chunking: coverage, stability under edits, bounded memory."""

from __future__ import annotations

import hashlib
import io
import os
import random
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyfastcdc import FastCDC

from akoshad.storage.chunker import (
    CHUNK_MAX,
    CHUNK_MIN,
    CHUNK_MIN_FILE,
    ChunkParams,
    iter_file_chunks,
    iter_stream_chunks,
)

MiB = 1024 * 1024


def rand(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


class ReadOnly:
    """A stream with ``read`` but no ``readinto`` (a pipe-like object)."""

    def __init__(self, data: bytes) -> None:
        self._b = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._b.read(min(n, 4096))  # short reads on purpose


def test_small_file_is_one_chunk(tmp_path: Path) -> None:
    data = rand(CHUNK_MIN_FILE - 1)
    path = tmp_path / "small"
    path.write_bytes(data)
    chunks = list(iter_file_chunks(path))
    assert len(chunks) == 1
    c = chunks[0]
    assert (c.offset, c.length, c.data) == (0, len(data), data)
    assert c.sha256 == hashlib.sha256(data).hexdigest()


def test_empty_file_has_no_chunk(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    assert list(iter_file_chunks(tmp_path / "empty")) == []


def test_large_file_chunks_cover_it_in_order(tmp_path: Path) -> None:
    data = rand(6 * MiB + 12345)
    path = tmp_path / "big"
    path.write_bytes(data)
    chunks = list(iter_file_chunks(path))
    assert len(chunks) > 6
    pos = 0
    for i, c in enumerate(chunks):
        assert c.offset == pos
        assert c.length == len(c.data)
        assert c.sha256 == hashlib.sha256(c.data).hexdigest()
        assert c.length <= CHUNK_MAX
        if i < len(chunks) - 1:
            assert c.length >= CHUNK_MIN
        pos += c.length
    assert b"".join(c.data for c in chunks) == data


def test_file_of_exactly_min_file_is_cut() -> None:
    data = rand(CHUNK_MIN_FILE)
    chunks = list(iter_stream_chunks(io.BytesIO(data)))
    assert len(chunks) > 1
    assert b"".join(c.data for c in chunks) == data


def test_path_stream_and_read_only_stream_agree_with_the_library(tmp_path: Path) -> None:
    data = rand(5 * MiB, seed=7)
    path = tmp_path / "f"
    path.write_bytes(data)
    by_path = [(c.offset, c.length, c.sha256) for c in iter_file_chunks(path)]
    with path.open("rb") as fh:
        by_stream = [(c.offset, c.length, c.sha256) for c in iter_file_chunks(fh)]
    by_read = [(c.offset, c.length, c.sha256) for c in iter_stream_chunks(ReadOnly(data))]  # type: ignore[arg-type]
    p = ChunkParams()
    cdc = FastCDC(p.avg_size, min_size=p.min_size, max_size=p.max_size)
    reference = [
        (c.offset, c.length, hashlib.sha256(c.data).hexdigest()) for c in cdc.cut_buf(data)
    ]
    assert by_path == by_stream == by_read == reference


@settings(max_examples=15, deadline=None)
@given(
    at=st.integers(min_value=0, max_value=512 * 1024),
    insert=st.binary(min_size=1, max_size=4096),
)
def test_an_insert_near_the_start_changes_only_nearby_chunks(at: int, insert: bytes) -> None:
    data = rand(8 * MiB, seed=3)
    edited = data[:at] + insert + data[at:]
    old = {c.sha256 for c in iter_stream_chunks(io.BytesIO(data))}
    new = [c for c in iter_stream_chunks(io.BytesIO(edited))]
    changed = [c for c in new if c.sha256 not in old]
    assert len(old) >= 20
    assert len(changed) <= 3  # the edited chunk and at most its neighbours
    assert all(c.offset < at + len(insert) + 2 * CHUNK_MAX for c in changed)


def test_an_overwrite_in_the_middle_keeps_the_rest() -> None:
    data = bytearray(rand(8 * MiB, seed=4))
    old = {c.sha256 for c in iter_stream_chunks(io.BytesIO(bytes(data)))}
    data[4 * MiB : 4 * MiB + 100] = b"\0" * 100
    new = list(iter_stream_chunks(io.BytesIO(bytes(data))))
    survived = sum(c.sha256 in old for c in new)
    assert survived >= len(new) - 2


def test_memory_stays_bounded_on_a_large_file(tmp_path: Path) -> None:
    path = tmp_path / "large"
    block = rand(MiB, seed=5)
    with path.open("wb") as fh:
        for i in range(48):
            fh.write(block[i:] + block[:i])
    tracemalloc.start()
    try:
        total = 0
        for c in iter_file_chunks(path):
            total += c.length
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 48 * MiB
    assert peak < 8 * MiB, f"peak {peak / MiB:.1f} MiB"


def test_a_symlink_is_refused_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    target.write_bytes(b"x" * 100)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(OSError):
        list(iter_file_chunks(link))


def test_a_seed_moves_the_boundaries() -> None:
    data = rand(4 * MiB, seed=6)
    plain = [c.length for c in iter_stream_chunks(io.BytesIO(data))]
    keyed = [c.length for c in iter_stream_chunks(io.BytesIO(data), ChunkParams(seed=12345))]
    assert plain != keyed
    assert sum(keyed) == len(data)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_size": 32, "avg_size": 256, "max_size": 1024},
        {"min_size": 4096, "avg_size": 1024, "max_size": 8192},
        {"max_size": 32 * MiB},
        {"seed": -1},
        {"min_file": -1},
    ],
)
def test_bad_params_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        ChunkParams(**kwargs)


def test_custom_small_file_threshold() -> None:
    data = os.urandom(300 * 1024)
    params = ChunkParams(avg_size=16384, min_size=4096, max_size=65536, min_file=4096)
    chunks = list(iter_stream_chunks(io.BytesIO(data), params))
    assert len(chunks) > 3
    assert b"".join(c.data for c in chunks) == data
