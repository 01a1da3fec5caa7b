"""``storage.span_stream``: a file's chunks read as streamed pack spans, cut into chunks
whatever pieces the bytes arrive in, in file order, one read per run, within the memory
bound; a read that breaks is named at the chunk it stopped at."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from akoshad.storage import span_stream
from akoshad.storage.chunk_decode import Stored, chunk_decoder, joined, parts
from akoshad.storage.errors import PackError, StorageError
from akoshad.storage.packs import pack_key
from akoshad.storage.refs import ChunkRef
from akoshad.storage.span_stream import RunFailed, plan_runs, stream_runs

KiB = 1024
MiB = 1024 * KiB
SID = "span-stream"
PACK_A = pack_key(SID, "a" * 64)
PACK_B = pack_key(SID, "b" * 64)


def ref(data: bytes, key: str, offset: int) -> ChunkRef:
    return ChunkRef(
        hashlib.sha256(data).hexdigest(), len(data), key, offset, len(data), "none", "none"
    )


class Packs:
    """Objects in memory, streamed in pieces of ``piece`` bytes; counts reads and the most
    bytes handed out but not yet consumed."""

    def __init__(self, objects: dict[str, bytes], piece: int) -> None:
        self.objects = objects
        self.piece = piece
        self.reads: list[tuple[str, int, int]] = []
        self.out = 0
        self.consumed = 0
        self.most_held = 0
        self.fail_at: int | None = None

    async def stream_range(self, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        self.reads.append((key, offset, length))
        if key not in self.objects:
            raise KeyError(key)
        data = self.objects[key]
        for at in range(offset, offset + length, self.piece):
            if self.fail_at is not None and at >= self.fail_at:
                raise PackError(f"object {key} ends at {at}")
            piece = data[at : min(at + self.piece, offset + length)]
            self.out += len(piece)
            self.most_held = max(self.most_held, self.out - self.consumed)
            await asyncio.sleep(0)
            yield piece


def layout(sizes: list[int]) -> tuple[bytes, list[bytes], list[ChunkRef]]:
    chunks = [os.urandom(n) for n in sizes]
    pack = b"".join(chunks)
    refs, at = [], 0
    for c in chunks:
        refs.append(ref(c, PACK_A, at))
        at += len(c)
    return pack, chunks, refs


def collect(
    source: Packs, refs: list[ChunkRef], budget: int = 16 * MiB, runs: int = 4
) -> tuple[list[bytes], list[int]]:
    got: list[bytes] = []
    steps: list[int] = []

    async def handle(first: int, bodies: list[Stored]) -> None:
        assert first == len(got)  # in file order
        steps.append(len(bodies))
        got.extend(bytes(joined(b)) for b in bodies)
        source.consumed += sum(len(p) for b in bodies for p in parts(b))

    asyncio.run(stream_runs(source, refs, handle, budget, runs))
    return got, steps


@pytest.mark.parametrize("piece", [7, 4096, 100_000, 64 * MiB])
def test_a_pack_whose_chunks_are_all_wanted_is_one_read(piece: int) -> None:
    pack, chunks, refs = layout([1, 300_000, 5, 200_000, 131_072, 70_000] * 4)
    source = Packs({PACK_A: pack}, piece)
    got, steps = collect(source, refs)
    assert got == chunks
    assert source.reads == [(PACK_A, 0, len(pack))]
    assert len(steps) < len(chunks)  # several chunks per hop to the decoder


def test_gaps_keys_order_and_span_cut_runs() -> None:
    _, chunks, _ = layout([1000, 2000, 3000, 4000])
    offsets = [0, 1000, 3000, 6000]
    a = [ref(c, PACK_A, o) for c, o in zip(chunks, offsets, strict=True)]
    far = ref(chunks[0], PACK_A, 6000 + 4000 + span_stream.RUN_GAP + 1)
    b = ref(chunks[1], PACK_B, 0)
    runs = plan_runs([a[0], a[1], a[3], b, a[2], far])
    assert [(r.key, r.start, r.end, r.chunks) for r in runs] == [
        (PACK_A, 0, 10_000, range(0, 3)),  # a gap of 3000 bytes is read through
        (PACK_B, 0, 2000, range(3, 4)),
        (PACK_A, 3000, 6000, range(4, 5)),  # backwards: a new read
        (PACK_A, far.offset, far.offset + 1000, range(5, 6)),
    ]
    assert len(plan_runs(a, max_span=3000)) == 3


def test_chunks_out_of_pack_order_and_gaps_come_out_in_file_order() -> None:
    pack, chunks, refs = layout([50_000, 60_000, 70_000, 80_000])
    skip = ref(chunks[1], PACK_A, refs[1].offset)
    wanted = [refs[3], refs[0], refs[2], skip, refs[0]]  # backwards, a gap, a repeat
    source = Packs({PACK_A: pack}, 9_999)
    got, _ = collect(source, wanted)
    assert got == [chunks[3], chunks[0], chunks[2], chunks[1], chunks[0]]
    assert [r[1:] for r in source.reads] == [
        (refs[3].offset, 80_000),
        (0, 180_000),  # chunks 0 and 2, chunk 1 between them read through
        (refs[1].offset, 60_000),
        (0, 50_000),
    ]


def test_memory_held_stays_within_the_bound() -> None:
    """What was read and not yet handed to the decoder stays within the runs' bounds
    that fit the budget (one run, when one run's bound is the budget)."""
    sizes = [256 * KiB] * 200  # 50 MiB in 4 packs of ~12.5 MiB
    chunks = [os.urandom(n) for n in sizes]
    objects: dict[str, bytes] = {}
    refs: list[ChunkRef] = []
    for p in range(4):
        key = pack_key(SID, f"{p:x}" * 64)
        part = chunks[p * 50 : (p + 1) * 50]
        objects[key] = b"".join(part)
        refs += [ref(c, key, i * 256 * KiB) for i, c in enumerate(part)]
    one = plan_runs(refs)[0].bound(span_stream.STEP_BYTES)
    for budget, runs in ((one, 1), (2 * one, 2)):
        source = Packs(objects, 64 * KiB)
        got, _ = collect(source, refs, budget=budget)
        assert got == chunks
        assert len(source.reads) == 4
        assert source.most_held <= runs * one
    assert one < 8 * MiB


def test_a_read_that_breaks_names_the_chunk_it_stopped_at() -> None:
    pack, _, refs = layout([100_000] * 10)
    source = Packs({PACK_A: pack}, 30_000)
    source.fail_at = 450_000  # inside chunk 4 (0-based)
    with pytest.raises(RunFailed) as caught:
        collect(source, refs)
    assert caught.value.index == 4
    assert isinstance(caught.value.cause, PackError)
    gone = Packs({}, 30_000)
    with pytest.raises(RunFailed) as missing:
        collect(gone, refs)
    assert missing.value.index == 0 and isinstance(missing.value.cause, KeyError)


def test_an_object_shorter_than_the_run_is_damage() -> None:
    pack, _, refs = layout([100_000] * 3)
    source = Packs({PACK_A: pack[:250_000]}, 64 * KiB)
    with pytest.raises(RunFailed) as caught:
        collect(source, refs)
    assert caught.value.index == 2 and isinstance(caught.value.cause, PackError)


@pytest.mark.parametrize("check", [True, False])
def test_a_chunk_across_pieces_is_not_copied_and_still_checked(check: bool) -> None:
    """A plain chunk that arrives in several pieces comes out as views of them (no join);
    its length is checked, and its sha256 over the pieces when chunks are checked."""
    pack, chunks, refs = layout([300_000, 5, 250_000])
    source = Packs({PACK_A: pack}, 64 * KiB)
    seen: list[Stored] = []

    async def handle(first: int, bodies: list[Stored]) -> None:
        seen.extend(bodies)

    asyncio.run(stream_runs(source, refs, handle, 16 * MiB, 4))
    assert isinstance(seen[0], tuple) and all(isinstance(p, memoryview) for p in seen[0])
    decode = chunk_decoder(None, check=check)
    assert [bytes(joined(decode(b, r))) for b, r in zip(seen, refs, strict=True)] == chunks
    first = seen[0]
    assert isinstance(first, tuple)
    bad = bytearray(first[1])
    bad[7] ^= 1
    damaged = (first[0], memoryview(bytes(bad)), *first[2:])
    if check:
        with pytest.raises(StorageError, match="does not match its sha256"):
            decode(damaged, refs[0])
    with pytest.raises(StorageError, match="stored bytes"):
        decode(first[:-1], refs[0])
