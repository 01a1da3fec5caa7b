"""Restore's reads of packs on real S3 (SeaweedFS): a pack whose chunks a file wants is one
streamed GET, a damaged chunk inside the stream is still named by file and chunk, sealed
chunks open with the identity, and a body that breaks mid-way goes on where it stopped."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import akoshad.targets.s3.ranges as s3ranges
from akoshad.errors import IntegrityError
from akoshad.storage.codec import compress
from akoshad.storage.crypto import Recipients, load_identity, seal_chunk, write_new_identity
from akoshad.storage.fetch import fetch_file
from akoshad.storage.packs import pack_key
from akoshad.storage.refs import ChunkRef
from akoshad.storage.stored import StoredFile
from akoshad.targets.s3.target import S3Target
from tests.s3server import WeedServer

pytestmark = pytest.mark.s3
KiB = 1024
MiB = 1024 * KiB


@pytest.fixture
async def target(s3: WeedServer, system_id: str) -> AsyncIterator[S3Target]:
    t = s3.s3_target(system_id, retry_backoff=0.05, max_retries=2)
    await t.start()
    yield t
    await t.close()


def _pack(
    system_id: str, bodies: list[tuple[bytes, bytes, str, str]], n: int = 1
) -> tuple[str, bytes, list[ChunkRef]]:
    """A pack of ``(plain, stored, compression, encryption)`` chunks and their refs."""
    key = pack_key(system_id, f"{n:x}" * 64)
    refs: list[ChunkRef] = []
    at = 0
    for plain, stored, comp, enc in bodies:
        sha = hashlib.sha256(plain).hexdigest()
        refs.append(ChunkRef(sha, len(plain), key, at, len(stored), comp, enc))  # type: ignore[arg-type]
        at += len(stored)
    return key, b"".join(b[1] for b in bodies), refs


def _file(path: str, plains: list[bytes], refs: list[ChunkRef]) -> StoredFile:
    data = b"".join(plains)
    return StoredFile(path, "other", len(data), hashlib.sha256(data).hexdigest(), tuple(refs))


def _mixed(count: int) -> list[tuple[bytes, bytes, str, str]]:
    out = []
    for i in range(count):
        if i % 2:
            plain = os.urandom(200 * KiB + i)
            out.append((plain, plain, "none", "none"))
        else:
            plain = (b"akoshad %d " % i) * 20_000
            used, stored = compress(plain, "zstd")
            out.append((plain, stored, used, "none"))
    return out


async def test_a_pack_whose_chunks_are_all_wanted_is_one_get(
    target: S3Target, system_id: str
) -> None:
    bodies = _mixed(60)  # ~6 MiB stored: more than a step of the decoder
    key, pack, refs = _pack(system_id, bodies)
    await target.put_bytes(key, pack, "application/octet-stream")
    f = _file("big.bin", [b[0] for b in bodies], refs)
    for check in (True, False):
        out: list[bytes] = []
        before = target.requests
        size, sha = await fetch_file(target, f, out.append, check_chunks=check)
        assert target.requests - before == 1
        assert (size, sha) == (f.size, f.sha256)
        assert b"".join(out) == b"".join(b[0] for b in bodies)


@pytest.mark.parametrize("check", [True, False])
async def test_a_damaged_chunk_in_a_streamed_span_is_named(
    target: S3Target, system_id: str, check: bool
) -> None:
    bodies = _mixed(12)
    key, pack, refs = _pack(system_id, bodies)
    flip = refs[7].offset + 150_000  # inside chunk 8 of 12 (plain), past its first piece
    damaged = pack[:flip] + bytes([pack[flip] ^ 1]) + pack[flip + 1 :]
    await target.put_bytes(key, damaged, "application/octet-stream")
    f = _file("sessions/db.bin", [b[0] for b in bodies], refs)
    with pytest.raises(IntegrityError) as caught:
        await fetch_file(target, f, None, check_chunks=check)
    assert "sessions/db.bin: chunk 8 of 12" in str(caught.value)
    assert "damaged" in str(caught.value)
    await target.put_bytes(key, pack[: refs[10].offset + 5], "application/octet-stream")
    with pytest.raises(IntegrityError) as short:
        await fetch_file(target, f, None, check_chunks=check)
    assert "sessions/db.bin: chunk 11 of 12" in str(short.value)


async def test_sealed_chunks_open_with_the_identity(
    target: S3Target, system_id: str, tmp_path: Path
) -> None:
    public = write_new_identity(tmp_path / "identity.txt")
    identities = load_identity(tmp_path / "identity.txt")
    recipients = Recipients.parse([public])
    bodies = []
    for plain in [os.urandom(300 * KiB), b"x" * 500_000, os.urandom(10)]:
        used, stored = seal_chunk(plain, recipients)
        bodies.append((plain, stored, used, "age"))
    key, pack, refs = _pack(system_id, bodies, 2)  # type: ignore[arg-type]
    await target.put_bytes(key, pack, "application/octet-stream")
    f = _file("sealed.bin", [b[0] for b in bodies], refs)
    out: list[bytes] = []
    before = target.requests
    await fetch_file(target, f, out.append, identities=identities, check_chunks=False)
    assert target.requests - before == 1
    assert b"".join(out) == b"".join(b[0] for b in bodies)


async def test_stream_range_pieces_and_a_body_that_breaks(
    target: S3Target, system_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(3 * MiB + 333)
    key = pack_key(system_id, "c" * 64)
    await target.put_bytes(key, data, "application/octet-stream")
    for offset, length in [(0, len(data)), (12345, 2 * MiB + 1), (len(data) - 1, 1)]:
        pieces = [p async for p in target.stream_range(key, offset, length)]
        assert b"".join(pieces) == data[offset : offset + length]
        assert max(len(p) for p in pieces) <= 1 * MiB
    with pytest.raises(KeyError):
        _ = [p async for p in target.stream_range(pack_key(system_id, "d" * 64), 0, 10)]

    real = s3ranges._next_piece
    calls = 0

    async def breaking(body: object, limit: int) -> bytes:
        nonlocal calls
        calls += 1
        if calls in (2, 4):  # two bodies break, each after a piece
            raise ConnectionResetError("connection reset by peer")
        return await real(body, limit)

    monkeypatch.setattr(s3ranges, "_next_piece", breaking)
    before = target.requests
    got = b"".join([p async for p in target.stream_range(key, 100, 2 * MiB + 5)])
    assert got == data[100 : 100 + 2 * MiB + 5]
    assert target.requests - before == 3  # two broken bodies, each resumed where it stopped
