"""Bucket format 2: the manifest writer, the reader (format 1 and 2 alike) and fetch_file."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import re
import shutil
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from akoshad import __version__
from akoshad.errors import IntegrityError, TransientError
from akoshad.manifest.facts import Facts
from akoshad.manifest.layout import (
    ManifestError,
    encode_manifest,
    manifest_key,
    validate_manifest,
)
from akoshad.storage import format2_read
from akoshad.storage.crypto import IdentityNeeded
from akoshad.storage.document_puts import build_and_put, missing_documents
from akoshad.storage.documents import canonical_json, document_key
from akoshad.storage.fetch import WholeObjectRanges, fetch_file
from akoshad.storage.format2 import (
    CHUNKS_INLINE_MAX,
    DocumentSink,
    Format2Manifest,
    build_manifest2,
)
from akoshad.storage.format2_read import read_entries
from akoshad.storage.refs import ChunkRef
from akoshad.storage.stored import StoredFile
from akoshad.targets.local import LocalTarget
from tests.format2_store import MemTarget, Store, make_duckdb, write_upload

SID = "box-1"
UP1 = "20261130T010000000000Z-aaaaaa"
UP2 = "20261130T020000000000Z-bbbbbb"
FIXTURE = Path(__file__).parents[1] / "data" / "drill" / "outbox"


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    d = tmp_path / "staging"
    d.mkdir(mode=0o700)
    return d


def make_store(root: Path, small: int = 30) -> None:
    (root / "sessions").mkdir(parents=True)
    for i in range(small):
        (root / "sessions" / f"s{i:03d}.json").write_text(json.dumps({"n": i, "t": "x" * i}))
    (root / "empty.txt").write_bytes(b"")
    make_duckdb(root / "reflection.duckdb", 12000)


async def manifest_back(target: MemTarget | LocalTarget, upload_id: str) -> dict[str, Any]:
    data = b"".join([p async for p in target.read(manifest_key(SID, upload_id))])
    out: dict[str, Any] = json.loads(data)
    return out


async def fetch_bytes(target: Any, f: StoredFile, ranges: WholeObjectRanges | None = None) -> bytes:
    out = bytearray()
    await fetch_file(target, f, out.extend, ranges=ranges)
    return bytes(out)


def fake_file(i: int, pack: str, tag: str = "") -> StoredFile:
    """A small file stored as one chunk at slot ``i`` of ``pack`` (no bytes behind it)."""
    path = f"sessions/{i // 100:03d}/conversation-{i:05d}.json"
    sha = hashlib.sha256(f"{path}{tag}".encode()).hexdigest()
    ref = ChunkRef(sha, 900 + i % 50, pack, i * 400, 380, "zstd", "none")
    return StoredFile(path, "file", ref.size, sha, (ref,), mode=0o600)


def pack_key(n: int) -> str:
    h = hashlib.sha256(str(n).encode()).hexdigest()
    return f"systems/{SID}/packs/{h[:2]}/{h}"


async def test_round_trip_small_files_packed_and_duckdb_chunked(
    tmp_path: Path, staging: Path
) -> None:
    root = tmp_path / "data"
    make_store(root)
    target = MemTarget()
    files = await Store(target, SID, staging).store_tree(root)
    packs = [k for k in target.objects if "/packs/" in k]
    assert len(packs) < 10  # 32 files, a few packs
    db = next(f for f in files if f.path == "reflection.duckdb")
    assert len(db.chunks) > CHUNKS_INLINE_MAX

    built = build_manifest2(
        system_id=SID,
        upload_id=UP1,
        files=files,
        skipped={"bad": "unreadable"},
        has_memories=True,
        conversation_count=3,
        use_index=True,
    )
    assert validate_manifest(built.manifest) == []
    m = built.manifest
    assert m["files"] == ["memories.json"] and m["compressed"] is False
    assert m["compression_format"] is None and m["version"] == "1.0"
    assert m["total_size_bytes"] == sum(f.size for f in files)
    assert m["conversation_count"] == 3
    meta = m["metadata"]
    assert meta["format"] == 2 and "files" not in meta and meta["index"]["parts"]
    assert meta["skipped"] == [{"path": "bad", "reason": "unreadable"}]
    lists = [k for k, _ in built.documents if "/chunklists/" in k]
    assert len(lists) == 1 and lists[0].startswith(f"systems/{SID}/chunklists/")
    for key, data in built.documents:  # named by the sha256 of their plaintext JSON
        sha = hashlib.sha256(gzip.decompress(data)).hexdigest()
        kind = "chunklists" if key in lists else "index"
        assert key == f"systems/{SID}/{kind}/{sha[:2]}/{sha}.json.gz"
    await write_upload(target, SID, UP1, built)

    back = await read_entries(target, await manifest_back(target, UP1))
    assert [(f.path, f.size, f.sha256, f.parts, f.mode) for f in back] == [
        (f.path, f.size, f.sha256, f.parts, f.mode) for f in sorted(files, key=lambda f: f.path)
    ]
    ranges = WholeObjectRanges(target)
    for f in back:
        assert await fetch_bytes(target, f, ranges) == (root / f.path).read_bytes()
    assert ranges.loads <= len(packs) + 1  # a pack is read once for the files it holds


async def test_small_store_lists_entries_inline(tmp_path: Path, staging: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.json").write_text("{}")
    (root / "b.db").write_bytes(b"sqlite" * 100)
    target = MemTarget()
    files = await Store(target, SID, staging).store_tree(root)
    files[0] = replace(files[0], facts=Facts(json_ok=True), mode=0o640)
    built = build_manifest2(system_id=SID, upload_id=UP1, files=files, skipped={"a.json": "x"})
    meta = built.manifest["metadata"]
    assert built.documents == [] and "index" not in meta
    assert [e["path"] for e in meta["files"]] == ["a.json", "b.db"]
    assert meta["files"][0]["chunks"][0]["key"].startswith(f"systems/{SID}/packs/")
    assert meta["skipped"] == []  # a stale skip of a stored file is dropped
    assert built.manifest["files"] == []
    assert validate_manifest(built.manifest) == []
    await write_upload(target, SID, UP1, built)
    back = await read_entries(target, await manifest_back(target, UP1), system_id=SID)
    assert (back[0].facts, back[0].mode, back[1].facts) == (Facts(json_ok=True), 0o640, None)
    assert back[0].name == "a.json" and back[1].kind == "sqlite"
    assert [await fetch_bytes(target, f) for f in back] == [b"{}", b"sqlite" * 100]


async def test_a_bad_entry_is_named_once(tmp_path: Path, staging: Path) -> None:
    """The error of a malformed entry names its path once (before: "metadata.files[0]
    ('a.json') ('a.json'): mode must be ...")."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.json").write_text("{}")
    target = MemTarget()
    files = await Store(target, SID, staging).store_tree(root)
    manifest = build_manifest2(system_id=SID, upload_id=UP1, files=files, skipped={}).manifest
    manifest["metadata"]["files"][0]["mode"] = 0o107777
    with pytest.raises(ManifestError) as caught:
        await read_entries(target, manifest, system_id=SID)
    assert str(caught.value) == "metadata.files[0] ('a.json'): mode must be an integer in 0..511"


@pytest.mark.parametrize("bad", ["1600000000", True, 1.5, 1 << 63, -(1 << 63) - 1])
async def test_a_recorded_mtime_reads_back_and_a_bad_one_is_one_line(
    tmp_path: Path, staging: Path, bad: object
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (root / "a.json").write_text("{}")
    target = MemTarget()
    files = await Store(target, SID, staging).store_tree(root)
    files[0] = replace(files[0], mtime_ns=-1_000_000_001)  # before 1970: kept as it is
    manifest = build_manifest2(system_id=SID, upload_id=UP1, files=files, skipped={}).manifest
    assert manifest["metadata"]["files"][0]["mtime_ns"] == -1_000_000_001
    [back] = await read_entries(target, manifest, system_id=SID)
    assert back.mtime_ns == -1_000_000_001
    del manifest["metadata"]["files"][0]["mtime_ns"]  # an entry of an earlier version
    assert [f.mtime_ns for f in await read_entries(target, manifest, system_id=SID)] == [None]
    manifest["metadata"]["files"][0]["mtime_ns"] = bad
    with pytest.raises(ManifestError) as caught:
        await read_entries(target, manifest, system_id=SID)
    assert str(caught.value) == (
        "metadata.files[0] ('a.json'): mtime_ns must be an integer (nanoseconds since the epoch)"
    )


def test_index_parts_shared_when_one_file_changes() -> None:
    files = [fake_file(i, pack_key(i // 500)) for i in range(3000)]
    first = build_manifest2(system_id=SID, upload_id=UP1, files=files, skipped={})
    changed = list(files)
    changed[1234] = replace(fake_file(1234, pack_key(99), tag="v2"))
    second = build_manifest2(
        system_id=SID,
        upload_id=UP2,
        files=changed,
        skipped={},
        known_documents=first.document_keys,
    )
    keys1 = [p["key"] for p in first.manifest["metadata"]["index"]["parts"]]
    keys2 = [p["key"] for p in second.manifest["metadata"]["index"]["parts"]]
    assert len(keys1) == len(keys2) > 20
    differ = [i for i, (a, b) in enumerate(zip(keys1, keys2, strict=True)) if a != b]
    assert len(differ) == 1
    assert [k for k, _ in second.documents] == [keys2[differ[0]]]
    # a new file changes its own part (split in two at most); the others stay
    added = [*files, fake_file(5000, pack_key(7))]
    third = build_manifest2(
        system_id=SID, upload_id=UP2, files=added, skipped={}, known_documents=first.document_keys
    )
    assert 1 <= len(third.documents) <= 2
    keys3 = {p["key"] for p in third.manifest["metadata"]["index"]["parts"]}
    assert len(set(keys1) - keys3) == 1


def test_chunk_list_shared_for_an_unchanged_large_file() -> None:
    big_chunks = tuple(
        ChunkRef(
            hashlib.sha256(b"%d" % i).hexdigest(), 1000, pack_key(1), i * 500, 500, "zstd", "none"
        )
        for i in range(200)
    )
    big = StoredFile("reflection.duckdb", "duckdb", 200_000, "a" * 64, big_chunks)
    small = fake_file(1, pack_key(2))
    first = build_manifest2(system_id=SID, upload_id=UP1, files=[big, small], skipped={})
    entry = next(e for e in first.manifest["metadata"]["files"] if e["path"] == big.path)
    assert "chunks" not in entry and entry["chunk_list"]["compression"] == "gzip"
    assert [k for k, _ in first.documents] == [entry["chunk_list"]["key"]]
    expected = document_key(
        SID, "chunklists", canonical_json({"chunks": [c.to_json() for c in big_chunks]})
    )
    assert entry["chunk_list"]["key"] == expected
    second = build_manifest2(
        system_id=SID,
        upload_id=UP2,
        files=[big, fake_file(1, pack_key(3), "v2")],
        skipped={},
        known_documents=first.document_keys,
    )
    entry2 = next(e for e in second.manifest["metadata"]["files"] if e["path"] == big.path)
    assert entry2["chunk_list"] == entry["chunk_list"] and second.documents == []


def test_ten_thousand_files_one_change_costs_under_64_kib() -> None:
    files = [fake_file(i, pack_key(i // 2000)) for i in range(10_000)]
    first = build_manifest2(system_id=SID, upload_id=UP1, files=files, skipped={})
    changed = list(files)
    changed[4321] = fake_file(4321, pack_key(77), tag="v2")
    second = build_manifest2(
        system_id=SID,
        upload_id=UP2,
        files=changed,
        skipped={},
        known_documents=first.document_keys,
    )
    manifest_bytes = len(encode_manifest(second.manifest))
    total = manifest_bytes + second.document_bytes
    first_total = len(encode_manifest(first.manifest)) + first.document_bytes
    parts = len(second.manifest["metadata"]["index"]["parts"])
    print(
        f"\n10,000 files, {parts} index parts: first upload {first_total} bytes of manifest and "
        f"index; one change: manifest {manifest_bytes} + index {second.document_bytes} = "
        f"{total} bytes"
    )
    assert len(second.documents) == 1
    assert total <= 64 * 1024


def _manifest_with(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "uploaded_at": "2026-11-30T01:00:00+00:00",
        "conversation_count": 0,
        "version": "1.0",
        "files": [],
        "metadata": {"system_id": SID, "upload_id": UP1, "format": 2, "files": entries},
    }


def _entry(path: str, size: int = 10, key: str | None = None) -> dict[str, Any]:
    ref = ChunkRef("b" * 64, 10, key or pack_key(1), 0, 10, "none", "none").to_json()
    return {
        "path": path,
        "name": "n",
        "kind": "file",
        "size": size,
        "sha256": "c" * 64,
        "chunks": [ref],
    }


@pytest.mark.parametrize(
    ("entries", "said"),
    [
        ([_entry("../etc/passwd")], "unsafe path '../etc/passwd'"),
        ([_entry("a"), _entry("a")], "path 'a' is listed twice"),
        ([_entry("a"), _entry("a/b")], "'a' is listed as a file and as a directory"),
        ([_entry("a", size=11)], "chunk sizes add up to 10, the file has 11 bytes"),
        ([_entry("a", key="systems/other/packs/aa/x")], "is not under systems/box-1/"),
        ([{**_entry("a"), "key": "k"}], "needs exactly one of chunks, chunk_list or key"),
    ],
)
async def test_validation_errors_are_one_clear_line(
    entries: list[dict[str, Any]], said: str
) -> None:
    with pytest.raises(ManifestError) as err:
        await read_entries(MemTarget(), _manifest_with(entries))
    assert said in str(err.value) and "\n" not in str(err.value)
    assert "metadata.files[" in str(err.value) or "listed" in str(err.value)


def test_the_writer_refuses_what_the_reader_would() -> None:
    f = fake_file(1, pack_key(1))
    g = fake_file(2, pack_key(1))
    outside = replace(g.chunks[0], key="systems/other/packs/aa/x")
    elsewhere = replace(g, path="sessions/other.json", parts=(outside,))
    for bad, said in [
        ([f, f], "listed twice"),
        # each key is checked (a good one only once): another file's good key lets none by
        ([f, g, elsewhere], r"file 3 .*: chunk 1: key .* is not under systems/box-1/"),
        ([replace(f, path="/abs")], "unsafe path"),
        ([replace(f, size=f.size + 1)], "chunk sizes add up"),
    ]:
        with pytest.raises(ManifestError, match=said):
            build_manifest2(system_id=SID, upload_id=UP1, files=bad, skipped={})


async def test_oversize_missing_and_bomb_documents_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = MemTarget()
    files = [fake_file(i, pack_key(0)) for i in range(300)]
    built = build_manifest2(system_id=SID, upload_id=UP1, files=files, skipped={})
    await write_upload(target, SID, UP1, built)
    manifest = await manifest_back(target, UP1)
    first_part = manifest["metadata"]["index"]["parts"][0]["key"]
    size = len(target.objects[first_part])
    monkeypatch.setattr(format2_read, "MAX_DOCUMENT_BYTES", size - 1)
    with pytest.raises(ManifestError, match=f"index part {first_part} is over the {size - 1}"):
        await read_entries(target, manifest)
    monkeypatch.undo()
    target.objects[first_part] = gzip.compress(b" " * (65 * 1024 * 1024))  # a bomb
    with pytest.raises(ManifestError, match="decodes to more than 67108864 bytes"):
        await read_entries(target, manifest)
    del target.objects[first_part]
    with pytest.raises(ManifestError, match=f"index part {first_part} is missing"):
        await read_entries(target, manifest)
    assert await missing_documents(target, built.documents) == [
        d for d in built.documents if d[0] == first_part
    ]


async def test_a_damaged_or_missing_chunk_names_the_file_and_the_chunk(
    tmp_path: Path, staging: Path
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    make_duckdb(root / "reflection.duckdb", 3000)
    target = MemTarget()
    (db,) = await Store(target, SID, staging).store_tree(root)
    shas = [c.sha256 for c in db.chunks]
    n = next(i for i in range(5, len(shas)) if shas.count(shas[i]) == 1)  # a distinct chunk
    ref = db.chunks[n]
    pack = bytearray(target.objects[ref.key])
    pack[ref.offset + ref.length // 2] ^= 0xFF
    target.objects[ref.key] = bytes(pack)

    class Recorder:
        def __init__(self) -> None:
            self.written = 0
            self.done = ""

        def write(self, data: bytes) -> None:
            self.written += len(data)

        def commit(self, size: int, shown: str) -> None:
            self.done = "commit"

        def discard(self) -> None:
            self.done = "discard"

    sink = Recorder()
    with pytest.raises(IntegrityError) as err:
        await fetch_file(target, db, sink, max_in_flight=2, memory_budget=64 * 1024)  # type: ignore[arg-type]
    said = str(err.value)
    assert said.startswith(
        f"reflection.duckdb: chunk {n + 1} of {len(db.chunks)} (sha256 {ref.sha256[:12]}"
    )
    assert "is damaged" in said and "\n" not in said
    assert sink.done == "discard"
    del target.objects[ref.key]
    with pytest.raises(IntegrityError, match=r"reflection.duckdb: chunk 1 of \d+ .* is missing"):
        await fetch_file(target, db)


async def test_reads_run_in_parallel_within_the_memory_budget(
    tmp_path: Path, staging: Path
) -> None:
    root = tmp_path / "data"
    root.mkdir()
    make_duckdb(root / "reflection.duckdb", 12000)
    target = MemTarget()
    (db,) = await Store(target, SID, staging).store_tree(root)
    inner = WholeObjectRanges(target)
    state = {"now": 0, "peak": 0, "bytes": 0, "peak_bytes": 0}

    class Counting:
        async def read_range(self, key: str, offset: int, length: int) -> bytes:
            state["now"] += 1
            state["bytes"] += length
            state["peak"] = max(state["peak"], state["now"])
            state["peak_bytes"] = max(state["peak_bytes"], state["bytes"])
            try:
                await asyncio.sleep(0.002)  # network latency: reads overlap
                return await inner.read_range(key, offset, length)
            finally:
                state["now"] -= 1
                state["bytes"] -= length

    budget = 256 * 1024
    out = bytearray()
    await fetch_file(
        target, db, out.extend, ranges=Counting(), max_in_flight=4, memory_budget=budget
    )
    assert bytes(out) == (root / "reflection.duckdb").read_bytes()
    assert 1 < state["peak"] <= 4
    assert state["peak_bytes"] <= budget


async def test_a_format1_upload_reads_and_fetches_through_the_same_path(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    shutil.copytree(FIXTURE, outbox)
    target = LocalTarget(outbox)
    (mkey,) = [
        k
        async for k in target.list_keys("systems/drillfixture/uploads/")
        if k.endswith("manifest.json")
    ]
    manifest = json.loads(b"".join([p async for p in target.read(mkey)]))
    files = await read_entries(target, manifest)
    assert len(files) == 6 and all(f.whole is not None for f in files)
    for f in files:
        size, sha = await fetch_file(target, f)
        assert (size, sha) == (f.size, f.sha256)
    # a format-2 upload keeps those objects as whole-object entries
    built = build_manifest2(system_id="drillfixture", upload_id=UP2, files=files, skipped={})
    entry = built.manifest["metadata"]["files"][0]
    assert entry["key"] == files[0].parts[0].key and "chunks" not in entry
    again = await read_entries(target, json.loads(encode_manifest(built.manifest)))
    assert [(f.path, f.parts) for f in again] == [(f.path, f.parts) for f in files]
    # a damaged format-1 object names the file and the object
    whole = files[0].whole
    assert whole is not None
    path = outbox / whole.key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=f"{files[0].path}: "):
        await fetch_file(target, files[0])


def test_format2_manifest_type(tmp_path: Path) -> None:
    built = build_manifest2(system_id=SID, upload_id=UP1, files=[], skipped={})
    assert isinstance(built, Format2Manifest)
    assert built.manifest["metadata"]["files"] == [] and built.manifest["total_size_bytes"] == 0


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (
            {"format": 3, "akoshad_version": "9.1"},
            f"manifest format 3 is newer than this akoshad {__version__} reads (written by "
            "akoshad 9.1): upgrade akoshad to read it",
        ),
        ({"format": 0}, "unsupported manifest format 0"),
        ({"format": True}, "unsupported manifest format True"),
        ({"index": {"parts": []}}, "metadata has both files and index"),
        ({"system_id": "other"}, "metadata.system_id 'other' is not 'box-1'"),
        ({"files": {}}, "metadata.files is not a list"),
    ],
)
async def test_manifest_level_errors_are_one_clear_line(change: dict[str, Any], said: str) -> None:
    manifest = _manifest_with([_entry("a")])
    manifest["metadata"].update(change)
    with pytest.raises(ManifestError, match=re.escape(said)):
        await read_entries(MemTarget(), manifest, system_id=SID)


async def test_encrypted_or_foreign_index_parts_are_refused() -> None:
    key = f"systems/{SID}/index/aa/" + "a" * 64 + ".json.gz"
    sealed = _manifest_with([])
    del sealed["metadata"]["files"]
    sealed["metadata"]["index"] = {
        "parts": [{"key": key, "compression": "gzip", "encryption": "age"}]
    }
    with pytest.raises(IdentityNeeded, match="this upload is encrypted: pass --identity"):
        await read_entries(MemTarget(), sealed)  # nothing read without the identity
    for part, said in [
        (
            {"key": "systems/x/index/aa/b.json.gz", "compression": "gzip", "encryption": "none"},
            "key is not under systems/box-1/",
        ),
        ({"key": key, "compression": "gzip"}, "missing field encryption"),
    ]:
        manifest = _manifest_with([])
        del manifest["metadata"]["files"]
        manifest["metadata"]["index"] = {"parts": [part]}
        target = MemTarget()
        target.objects[key] = gzip.compress(b'{"files":[]}')
        with pytest.raises(ManifestError, match=re.escape(said)):
            await read_entries(target, manifest)


class _PutsSeen(MemTarget):
    """Counts PUTs; the ``fail_at``-th one fails (``failed`` is set once the step that
    saw it fail has ended)."""

    def __init__(self, fail_at: int = 0) -> None:
        super().__init__()
        self.seen = threading.Event()
        self.failed = threading.Event()
        self.calls = 0
        self.fail_at = fail_at

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        self.calls += 1
        self.seen.set()
        if self.calls == self.fail_at:
            asyncio.get_running_loop().call_soon(self.failed.set)
            raise TransientError("the target went away")
        return await super().put_bytes(key, data, content_type)


async def test_documents_go_up_while_the_rest_are_made() -> None:
    """build_and_put PUTs each document as soon as it is made: the build waits (in its
    thread) after its first document until that one reached the target; in the end the
    target holds exactly the documents a plain build returns."""
    files = [fake_file(i, pack_key(0)) for i in range(2000)]
    target = _PutsSeen()
    made: list[str] = []

    def build(sink: DocumentSink) -> Format2Manifest:
        def first_waits(key: str, data: bytes) -> None:
            sink(key, data)
            made.append(key)
            if len(made) == 1:  # never seen: the documents wait for the end of the build
                assert target.seen.wait(30), "the first document was not sent during the build"

        return build_manifest2(
            system_id=SID, upload_id=UP1, files=files, skipped={}, sink=first_waits
        )

    built, sent = await build_and_put(target, build)
    plain = build_manifest2(system_id=SID, upload_id=UP1, files=files, skipped={})
    assert built.documents == [] and built.manifest == {**plain.manifest, "uploaded_at": ANY}
    assert target.objects == dict(plain.documents) and sent == plain.document_bytes
    assert made == [k for k, _ in plain.documents] and len(made) > 20


async def test_a_failed_document_put_stops_the_build() -> None:
    """A failed PUT is raised once every PUT in flight and the build have ended; the build
    stops at its next document and nothing more is sent."""
    files = [fake_file(i, pack_key(0)) for i in range(2000)]
    target = _PutsSeen(fail_at=3)
    made: list[str] = []

    def build(sink: DocumentSink) -> Format2Manifest:
        def after_the_failure(key: str, data: bytes) -> None:
            if len(made) == 3:  # the first three go up meanwhile, the third fails
                assert target.failed.wait(30)
            sink(key, data)
            made.append(key)

        return build_manifest2(
            system_id=SID, upload_id=UP1, files=files, skipped={}, sink=after_the_failure
        )

    with pytest.raises(TransientError, match="went away"):
        await build_and_put(target, build)
    assert len(made) == 3 and target.calls == 3 and len(target.objects) == 2
    with pytest.raises(ManifestError, match="listed twice"):
        await build_and_put(
            target,
            lambda sink: build_manifest2(
                system_id=SID, upload_id=UP1, files=[files[0], files[0]], skipped={}, sink=sink
            ),
        )
    assert target.calls == 3
