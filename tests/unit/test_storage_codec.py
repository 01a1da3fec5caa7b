"""Per-chunk codecs: round trips, 'none' when it doesn't pay, bounded decompression."""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import sys
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from isal import isal_zlib

from akoshad.errors import AkoshadError
from akoshad.storage import codec
from akoshad.storage.codec import compress, decode_chunk, decompress
from akoshad.storage.errors import CorruptChunk, DecompressionBomb, StorageError
from akoshad.storage.refs import MAX_CHUNK_SIZE, ChunkRef

if sys.version_info >= (3, 14):  # pragma: no cover
    from compression import zstd
else:
    from backports import zstd

MiB = 1024 * 1024
GiB = 1024 * MiB
TEXT = b"".join(b"%d the quick brown fox jumps over the lazy dog\n" % i for i in range(6000))


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_compressible_chunk_round_trips(codec: str) -> None:
    used, stored = compress(TEXT, codec)  # type: ignore[arg-type]
    assert used == codec
    assert len(stored) < len(TEXT) // 3
    assert decompress(stored, used, len(TEXT)) == TEXT


def test_default_codec_is_zstd() -> None:
    used, stored = compress(TEXT)
    assert used == "zstd"
    assert stored.startswith(b"\x28\xb5\x2f\xfd")


def test_each_zstd_chunk_is_a_frame_of_its_own() -> None:
    """The thread's compressor is reused: every chunk still comes out as one whole frame,
    the same bytes as a fresh compressor makes, decoding on its own (also after a call
    that failed, and in another thread)."""
    chunks = [TEXT[i : i + n] for i, n in ((0, 100), (7, 5000), (0, len(TEXT)), (3, 300))]
    outs = [compress(c, "zstd") for c in chunks]
    with pytest.raises(TypeError):
        codec._zstd_frame(object())  # type: ignore[arg-type]
    outs.append(compress(chunks[1], "zstd"))
    with ThreadPoolExecutor(1) as pool:
        outs.append(pool.submit(compress, chunks[2], "zstd").result())
    for data, (used, stored) in zip([*chunks, chunks[1], chunks[2]], outs, strict=True):
        assert used == "zstd"
        assert stored == zstd.compress(data, level=codec.ZSTD_LEVEL)
        assert decompress(stored, "zstd", len(data)) == data


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_incompressible_chunk_is_stored_as_is(codec: str) -> None:
    data = random.Random(1).randbytes(256 * 1024)
    assert compress(data, codec) == ("none", data)  # type: ignore[arg-type]


def test_tiny_chunk_and_none_are_stored_as_is() -> None:
    assert compress(b"a" * 10) == ("none", b"a" * 10)
    assert compress(TEXT, "none") == ("none", TEXT)
    with pytest.raises(ValueError):
        compress(TEXT, "lz4")  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=20000), codec=st.sampled_from(["zstd", "gzip", "none"]))
def test_any_bytes_round_trip(data: bytes, codec: str) -> None:
    used, stored = compress(data, codec)  # type: ignore[arg-type]
    assert decompress(stored, used, len(data)) == data


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_declared_size_too_small_is_a_bomb(codec: str) -> None:
    used, stored = compress(TEXT, codec)  # type: ignore[arg-type]
    with pytest.raises(DecompressionBomb):
        decompress(stored, used, len(TEXT) - 1)


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
def test_damaged_chunks_raise_corrupt(codec: str) -> None:
    used, stored = compress(TEXT, codec)  # type: ignore[arg-type]
    with pytest.raises(CorruptChunk, match="decodes to"):
        decompress(stored, used, len(TEXT) + 1)
    with pytest.raises(CorruptChunk, match="truncated"):
        decompress(stored[: len(stored) // 2], used, len(TEXT))
    with pytest.raises(CorruptChunk, match="trailing"):
        decompress(stored + stored, used, len(TEXT))
    with pytest.raises(CorruptChunk):
        decompress(b"\x00garbage" * 10, used, len(TEXT))


def test_none_and_unknown_compression_checks() -> None:
    assert decompress(b"abc", "none", 3) == b"abc"
    with pytest.raises(CorruptChunk):
        decompress(b"abc", "none", 4)
    with pytest.raises(CorruptChunk, match="unknown compression"):
        decompress(b"abc", "lz4", 3)
    with pytest.raises(CorruptChunk, match="out of range"):
        decompress(b"abc", "zstd", MAX_CHUNK_SIZE + 1)
    assert issubclass(DecompressionBomb, AkoshadError)


def _zstd_bomb() -> bytes:
    comp = zstd.ZstdCompressor(level=1)
    zeros = bytes(MiB)
    parts = [comp.compress(zeros) for _ in range(1024)]
    parts.append(comp.flush())
    return b"".join(parts)


def _gzip_bomb() -> bytes:
    comp = isal_zlib.compressobj(1, isal_zlib.DEFLATED, 31)
    zeros = bytes(MiB)
    parts = [bytes(comp.compress(zeros)) for _ in range(1024)]
    parts.append(bytes(comp.flush()))
    return b"".join(parts)


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {"zstd": _zstd_bomb(), "gzip": _gzip_bomb()}


@pytest.mark.parametrize("codec", ["zstd", "gzip"])
@pytest.mark.parametrize("declared", [10, MAX_CHUNK_SIZE])
def test_a_1_gib_bomb_stops_at_the_declared_size(
    bombs: dict[str, bytes], codec: str, declared: int
) -> None:
    bomb = bombs[codec]
    assert len(bomb) <= 2 * MiB  # inflates to 1 GiB
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        with pytest.raises(DecompressionBomb):
            decompress(bomb, codec, declared)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - t0 < 2.0
    # at most declared + 1 bytes come out (the zstd binding may size its buffer up to
    # twice that); the rest is the decoder's copy of its input: never the 1 GiB
    assert peak < 2 * (declared + 1) + len(bomb) + 2 * MiB, f"peak {peak / MiB:.1f} MiB"


def test_a_zstd_frame_asking_for_a_huge_window_is_refused() -> None:
    options = {
        int(zstd.CompressionParameter.compression_level): 1,
        int(zstd.CompressionParameter.window_log): 27,
    }
    comp = zstd.ZstdCompressor(options=options)
    data = random.Random(2).randbytes(64 * 1024) * 4
    frame = comp.compress(data) + comp.flush()  # streamed: the header keeps window_log 27
    with pytest.raises(CorruptChunk):
        decompress(frame, "zstd", len(data))


def _ref(data: bytes, stored: bytes, compression: str, encryption: str = "none") -> ChunkRef:
    return ChunkRef(
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        key="systems/s/packs/ab/" + "ab" * 32,
        offset=0,
        length=len(stored),
        compression=compression,  # type: ignore[arg-type]
        encryption=encryption,  # type: ignore[arg-type]
    )


def test_decode_chunk_checks_hash_length_and_encryption() -> None:
    used, stored = compress(TEXT)
    ref = _ref(TEXT, stored, used)
    assert decode_chunk(stored, ref) == TEXT
    other = TEXT.replace(b"fox", b"cat", 1)
    _, stored2 = compress(other)
    with pytest.raises(CorruptChunk, match="sha256"):
        decode_chunk(stored2, _ref(TEXT, stored2, used))
    with pytest.raises(CorruptChunk, match="stored bytes"):
        decode_chunk(stored[:-1], ref)
    with pytest.raises(StorageError, match="encrypted"):
        decode_chunk(stored, _ref(TEXT, stored, used, "age"))


def test_gzip_output_is_plain_gzip() -> None:
    _, stored = compress(TEXT, "gzip")
    assert stored[:2] == b"\x1f\x8b"
    assert gzip.decompress(stored) == TEXT  # readable by any gunzip


def test_the_probe_stops_offering_incompressible_chunks_then_tries_again() -> None:
    probe = codec.CompressionProbe("zstd")
    give_up, skip = probe.GIVE_UP_AFTER, probe.SKIP_CHUNKS
    for _ in range(give_up):
        assert probe.choose() == "zstd"
        probe.record("zstd", "none")
    skipped = [probe.choose() for _ in range(skip)]
    assert skipped == ["none"] * skip
    for tried in skipped:
        probe.record(tried, "none")  # a chunk stored as-is without trying teaches nothing
    assert probe.choose() == "zstd"  # probes again


def test_one_compressible_chunk_resets_the_count() -> None:
    probe = codec.CompressionProbe("zstd")
    for _ in range(50):
        for used in ["none"] * (probe.GIVE_UP_AFTER - 1) + ["zstd"]:
            assert probe.choose() == "zstd"
            probe.record("zstd", used)  # type: ignore[arg-type]


def test_the_probe_never_offers_a_codec_that_is_off() -> None:
    probe = codec.CompressionProbe("none")
    for _ in range(10):
        assert probe.choose() == "none"
        probe.record("none", "none")


def test_random_data_is_mostly_not_offered_to_zstd() -> None:
    """What the packer does with a file of noise: a few chunks of each run are tried."""
    probe = codec.CompressionProbe("zstd")
    tried = 0
    for _ in range(200):
        choice = probe.choose()
        used, _ = codec.compress(os.urandom(4096), choice)
        probe.record(choice, used)
        tried += choice == "zstd"
    assert tried <= 200 * (probe.GIVE_UP_AFTER + 1) // (probe.GIVE_UP_AFTER + probe.SKIP_CHUNKS) + 4
