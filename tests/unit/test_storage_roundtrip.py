"""A real DuckDB file through the whole storage engine and back:
chunk -> compress -> pack -> refs (JSON) -> planned ranged reads -> decompress -> file."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import pytest

from akoshad.storage.chunker import iter_file_chunks
from akoshad.storage.codec import compress, decode_chunk
from akoshad.storage.errors import CorruptChunk
from akoshad.storage.packs import Location, PackWriter, SealedPack, plan_reads, read_range
from akoshad.storage.refs import ChunkCompression, ChunkRef, check_file_chunks, chunks_from_json


def make_duckdb(path: Path, rows: int, tag: str = "") -> None:
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE IF NOT EXISTS conversations (id VARCHAR, content VARCHAR, project VARCHAR)"
    )
    con.execute(
        "INSERT INTO conversations SELECT 'c' || i || ?, "
        "repeat('session text about chunk ' || (i % 97) || ' ', 20) || md5(i::VARCHAR), "
        "'project-' || (i % 7) FROM range(?) t(i)",
        [tag, rows],
    )
    con.execute("CHECKPOINT")
    con.close()


class Bucket:
    """The pack objects as a target would hold them (key -> bytes), counting range reads."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads = 0

    def put(self, pack: SealedPack) -> None:
        self.objects[pack.key] = pack.path.read_bytes()
        pack.path.unlink()

    def fetch(self, key: str, offset: int, length: int) -> bytes:
        self.reads += 1
        return self.objects[key][offset : offset + length]


def store_file(
    path: Path, writer: PackWriter, bucket: Bucket, known: dict[str, ChunkRef]
) -> list[dict[str, object]]:
    """Store ``path`` chunk by chunk, once per distinct chunk; return its refs as JSON."""
    pending: dict[
        str, tuple[int, ChunkCompression]
    ] = {}  # sha -> (size, compression) in open packs
    order: list[str] = []

    def sealed(packs: list[SealedPack]) -> None:
        for pack in packs:
            bucket.put(pack)
            for slot in pack.slots:
                size, comp = pending.pop(slot.name)
                known[slot.name] = ChunkRef(
                    slot.name, size, pack.key, slot.offset, slot.length, comp, "none"
                )

    for chunk in iter_file_chunks(path):
        order.append(chunk.sha256)
        if chunk.sha256 in known or chunk.sha256 in pending:
            continue
        comp, body = compress(chunk.data)
        pending[chunk.sha256] = (chunk.length, comp)
        sealed(writer.add(chunk.sha256, body))
    last = writer.flush()
    sealed([last] if last else [])
    return [known[sha].to_json() for sha in order]


def restore_file(refs_json: list[dict[str, object]], bucket: Bucket, out: Path) -> None:
    refs = chunks_from_json(json.loads(json.dumps(refs_json)))
    locations = [Location(r.key, r.offset, r.length) for r in refs]
    plan = plan_reads(locations)
    data: dict[int, bytes] = {}
    for rr in plan:

        def fetch(offset: int, length: int, key: str = rr.key) -> bytes:
            return bucket.fetch(key, offset, length)

        raw = read_range(fetch, rr.start, rr.length)
        for i in rr.items:
            data[i] = decode_chunk(rr.extract(raw, locations[i]), refs[i])
    with out.open("wb") as fh:
        for i in range(len(refs)):
            fh.write(data[i])


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    d = tmp_path / "staging"
    d.mkdir(mode=0o700)
    return d


def test_a_duckdb_file_round_trips_and_a_second_version_shares_chunks(
    tmp_path: Path, staging: Path
) -> None:
    db = tmp_path / "reflection.duckdb"
    make_duckdb(db, 40000)
    v1 = tmp_path / "v1.duckdb"
    shutil.copyfile(db, v1)
    assert v1.stat().st_size > 2 * 1024 * 1024
    bucket, known = Bucket(), dict[str, ChunkRef]()
    writer = PackWriter(staging, "host-1", target=1024 * 1024)
    refs1 = store_file(v1, writer, bucket, known)
    stored1 = sum(map(len, bucket.objects.values()))
    assert stored1 < v1.stat().st_size * 0.7  # zstd pays on DuckDB pages
    check_file_chunks(chunks_from_json(refs1), v1.stat().st_size)

    make_duckdb(db, 300, tag="new")  # a checkpoint after a few rows
    v2 = tmp_path / "v2.duckdb"
    shutil.copyfile(db, v2)
    refs2 = store_file(v2, writer, bucket, known)
    added = sum(map(len, bucket.objects.values())) - stored1
    assert added < stored1 / 2  # most chunks are shared with v1

    for refs, original in ((refs1, v1), (refs2, v2)):
        out = tmp_path / f"restored-{original.name}"
        bucket.reads = 0
        restore_file(refs, bucket, out)
        assert (
            hashlib.sha256(out.read_bytes()).digest()
            == hashlib.sha256(original.read_bytes()).digest()
        )
        assert bucket.reads <= len({r["key"] for r in refs}) * 2  # coalesced reads
    con = duckdb.connect(str(tmp_path / "restored-v2.duckdb"), read_only=True)
    count = con.execute("SELECT count(*) FROM conversations").fetchone()
    con.close()
    assert count == (40300,)


def test_a_damaged_pack_is_caught_by_the_chunk_hash(tmp_path: Path, staging: Path) -> None:
    db = tmp_path / "r.duckdb"
    make_duckdb(db, 20000)
    bucket = Bucket()
    refs = store_file(db, PackWriter(staging, "host-1"), bucket, {})
    ref = refs[-1]
    key = str(ref["key"])
    blob = bytearray(bucket.objects[key])
    at = int(str(ref["offset"])) + int(str(ref["length"])) // 2
    blob[at] ^= 0xFF
    bucket.objects[key] = bytes(blob)
    with pytest.raises(CorruptChunk):
        restore_file(refs, bucket, tmp_path / "out")
