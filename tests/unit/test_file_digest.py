"""The whole-file sha256 taken beside the chunking (``pipeline.file_digest``)."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from akoshad.pipeline.file_digest import FileDigest


def _digest_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "akoshad-digest"]


@pytest.mark.parametrize("parallel_min", [0, 1 << 40], ids=["in-a-thread", "inline"])
def test_the_digest_of_many_chunks_is_the_sha256_of_the_file(parallel_min: int) -> None:
    chunks = [os.urandom(n) for n in (70_000, 1, 300_000, 0, 5_000, 1 << 20)]
    with FileDigest(sum(map(len, chunks)), parallel_min=parallel_min) as digest:
        for chunk in chunks:
            digest.update(chunk, hashlib.sha256(chunk).hexdigest())
        got = digest.hexdigest()
    assert got == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert _digest_threads() == []


def test_a_file_of_one_chunk_has_its_chunks_sha256_without_a_second_hash() -> None:
    marker = "ab" * 32  # not the sha256 of the data: proves it is taken, not computed
    with FileDigest(3, parallel_min=0) as digest:
        digest.update(b"abc", marker)
        assert digest.hexdigest() == marker
    assert _digest_threads() == []


def test_an_empty_file_has_the_sha256_of_nothing() -> None:
    with FileDigest(0, parallel_min=0) as digest:
        assert digest.hexdigest() == hashlib.sha256(b"").hexdigest()


def test_the_digest_thread_ends_when_the_chunking_stops_midway() -> None:
    with pytest.raises(RuntimeError), FileDigest(1 << 30, parallel_min=0) as digest:
        for _ in range(50):  # more than the queue holds
            digest.update(os.urandom(1 << 16), "")
        assert _digest_threads() != []
        raise RuntimeError("stopped")
    assert _digest_threads() == []
