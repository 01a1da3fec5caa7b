"""Index parts of format 2 (``metadata.index``): how the entries are cut, and what one
session-sized upload on a 10,000-file store writes besides file data."""

from __future__ import annotations

import hashlib
import json
import random
import weakref
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pyrage import x25519

from akoshad.manifest.facts import Facts
from akoshad.manifest.layout import encode_manifest, manifest_key, validate_manifest
from akoshad.storage.crypto import Identities, Recipients
from akoshad.storage.documents import decode_document
from akoshad.storage.format2 import (
    INDEX_INLINE_MAX,
    PART_MAX_ENTRIES,
    PART_MIN_ENTRIES,
    Format2Manifest,
    build_manifest2,
    iter_parts,
    path_boundary,
)
from akoshad.storage.format2_read import read_entries
from akoshad.storage.name_key import new_name_key
from akoshad.storage.refs import MAX_INLINE_PART_BYTES, ChunkRef
from akoshad.storage.stored import StoredFile
from akoshad.targets.local import LocalTarget
from tests.format2_store import write_upload
from tests.sealed_read import sealed_files

SID = "bench-sessions"
KiB = 1024
# session-buddy's own files at the top of its data directory (databases, WAL, log)
TOP = (
    "activity.db",
    "akosha_sync_state.json",
    "knowledge_graph.duckdb",
    "reflection.duckdb",
    "reflection.duckdb.wal",
    "session_log.jsonl",
)


def upload_id(n: int) -> str:
    return f"20261130T{n:02d}0000000000Z-aaaaaa"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def pack(n: int) -> str:
    h = sha(f"pack {n}")
    return f"systems/{SID}/packs/{h[:2]}/{h}"


def session_file(sid: str, rev: int, offset: int) -> StoredFile:
    """``sessions/<id>/state.json`` packed as one chunk, as a sync of the store stores it."""
    digest = sha(f"{sid} {rev}")
    ref = ChunkRef(digest, 440 + rev % 7, pack(rev), offset, 170, "zstd", "none")
    return StoredFile(
        f"sessions/{sid}/state.json",
        "file",
        ref.size,
        digest,
        (ref,),
        mode=0o644,
        facts=Facts(json_ok=True),
    )


def top_file(path: str, rev: int, chunks: int) -> StoredFile:
    refs = tuple(
        ChunkRef(sha(f"{path} {rev} {i}"), 300_000, pack(rev), i * 90_000, 90_000, "zstd", "none")
        for i in range(chunks)
    )
    kind = "duckdb-wal" if path.endswith(".wal") else "file"
    return StoredFile(path, kind, 300_000 * chunks, sha(f"{path} {rev}"), refs, mode=0o644)


def store(n: int, seed: int = 13) -> dict[str, StoredFile]:
    """``n`` session files (uuid-like ids) and session-buddy's top-level files."""
    rng = random.Random(seed)
    files = {}
    for i in range(n):
        f = session_file(f"{rng.getrandbits(128):032x}", 0, i * 170)
        files[f.path] = f
    for path in TOP:
        files[path] = top_file(path, 0, 15 if path == "reflection.duckdb" else 1)
    return files


def build(
    files: dict[str, StoredFile], n: int, known: Any = frozenset(), **kw: Any
) -> Format2Manifest:
    return build_manifest2(
        system_id=SID,
        upload_id=upload_id(n),
        files=list(files.values()),
        skipped={},
        known_documents=known,
        **kw,
    )


def written(built: Format2Manifest) -> int:
    """What an upload writes besides file data: the manifest and the new documents."""
    return len(encode_manifest(built.manifest)) + built.document_bytes


def part_paths(built: Format2Manifest, key: str) -> list[str]:
    doc = decode_document(dict(built.documents)[key], "gzip", key, 1 << 26)
    return [e["path"] for e in doc["files"]]


def test_a_session_sized_upload_on_10000_files_stays_well_under_64_kib() -> None:
    files = store(10_000)
    first = build(files, 0)
    assert validate_manifest(first.manifest) == []
    known = first.document_keys
    rng = random.Random(5)
    sessions = sorted(p for p in files if p.startswith("sessions/"))
    costs = []
    for n in range(1, 10):
        # a commit (the WAL grows; at every third sync a checkpoint rewrites the database
        # instead) and three session files rewritten, as in bench/sessions_bench.py
        files["reflection.duckdb.wal"] = top_file("reflection.duckdb.wal", n, 1 + n % 2)
        if n % 3 == 0:
            files["reflection.duckdb"] = top_file("reflection.duckdb", n, 15)
        for path in rng.sample(sessions, 3):
            sid = path.split("/")[1]
            files[path] = session_file(sid, n, rng.randrange(1 << 20))
        built = build(files, n, known)
        known = built.document_keys
        assert validate_manifest(built.manifest) == []
        # three parts for the session files, one for the store's own files
        assert len(built.documents) <= 4
        costs.append(written(built))
    print(f"\nmanifest and index bytes per upload: {sorted(costs)}")
    assert max(costs) <= 48 * KiB


def test_the_stores_own_files_keep_to_a_part_of_their_own() -> None:
    files = store(2000)
    files["workflow_metrics.db"] = top_file("workflow_metrics.db", 0, 1)  # after sessions/
    first = build(files, 0)
    parts = [part_paths(first, p["key"]) for p in first.manifest["metadata"]["index"]["parts"]]
    assert parts[0] == sorted(TOP)
    assert parts[-1] == ["workflow_metrics.db"]
    assert all(p.startswith("sessions/") for part in parts[1:-1] for p in part)
    # a commit: the WAL changes, and only the small part of the top-level files is new
    files["reflection.duckdb.wal"] = top_file("reflection.duckdb.wal", 1, 2)
    second = build(files, 1, first.document_keys)
    ((key, _),) = second.documents
    assert part_paths(second, key) == sorted(TOP)


def test_parts_hold_between_the_minimum_and_the_maximum_entries() -> None:
    entries = [{"path": f"sessions/{sha(str(i))}/state.json"} for i in range(10_000)]
    parts = list(iter_parts(entries))
    assert [e for p in parts for e in p] == entries
    assert all(PART_MIN_ENTRIES <= len(p) <= PART_MAX_ENTRIES for p in parts[:-1])
    assert 10_000 / PART_MAX_ENTRIES < len(parts) < 10_000 / (PART_MIN_ENTRIES + 4)


def test_files_beside_directories_of_the_same_name_make_no_small_parts() -> None:
    # "<id>.json" sorts right before "<id>/...": a top-level file after every few entries
    paths = sorted(p for i in range(3000) for p in (f"{i:05d}.json", f"{i:05d}/state.json"))
    parts = list(iter_parts({"path": p} for p in paths))
    assert [e["path"] for p in parts for e in p] == paths
    # the top-level files the list starts with have their part; no other part is small
    assert [e["path"] for e in parts[0]] == ["00000.json"]
    assert all(len(p) >= PART_MIN_ENTRIES for p in parts[1:-1])
    assert len(parts) < 6000 / (PART_MIN_ENTRIES + 4)


def test_a_file_added_or_removed_rewrites_at_most_two_parts() -> None:
    files = store(5000)
    first = build(files, 0)
    keys1 = {p["key"] for p in first.manifest["metadata"]["index"]["parts"]}
    sessions = sorted(p for p in files if p.startswith("sessions/"))
    for n, path in enumerate(sessions[100:4900:400], start=1):
        changed = dict(files)
        del changed[path]
        changed[path + ".new/state.json"] = replace(files[path], path=path + ".new/state.json")
        again = build(changed, n, first.document_keys)
        keys2 = {p["key"] for p in again.manifest["metadata"]["index"]["parts"]}
        assert 1 <= len(again.documents) <= 2
        assert len(keys1 - keys2) <= 2


def keys() -> tuple[Recipients, Identities]:
    ident = x25519.Identity.generate()
    public = str(ident.to_public())
    return Recipients.parse([public]), Identities(Path("id.txt"), (public,), (), (ident,))


def test_sealed_cuts_follow_the_keyed_name_of_the_path() -> None:
    recipients, _ = keys()
    keyed = path_boundary(new_name_key(SID, recipients))
    paths = [f"sessions/{sha(str(i))}/state.json" for i in range(2000)]
    plain = [p for p in paths if path_boundary()(p)]
    assert plain != [p for p in paths if keyed(p)]
    assert 150 < len(plain) < 350  # about one path in 8


@pytest.fixture
async def target(tmp_path: Path) -> LocalTarget:
    t = LocalTarget(tmp_path / "outbox")
    await t.start()
    return t


async def manifest_of(target: LocalTarget, n: int) -> dict[str, Any]:
    data = b"".join([p async for p in target.read(manifest_key(SID, upload_id(n)))])
    out: dict[str, Any] = json.loads(data)
    return out


async def test_uploads_cut_the_new_way_read_back_after_one_cut_the_old_way(
    target: LocalTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    from akoshad.storage import format2

    files = store(1500)
    # an upload made before this cut: parts end after one path in 64, whatever their size
    old_cut = format2.iter_parts

    def old(entries: Any, ends: Any = None) -> Any:
        return old_cut(entries, 128, min_entries=1, ends=lambda p: int(sha(p)[-2:], 16) % 64 == 0)

    monkeypatch.setattr(format2, "iter_parts", old)
    first = build(files, 0)
    monkeypatch.undo()
    await write_upload(target, SID, upload_id(0), first)
    files["reflection.duckdb.wal"] = top_file("reflection.duckdb.wal", 1, 2)
    second = build(files, 1, first.document_keys)
    assert second.documents  # the new cuts: new parts, written once
    await write_upload(target, SID, upload_id(1), second)
    want = sorted(files.values(), key=lambda f: f.path)
    back = await read_entries(target, await manifest_of(target, 1), system_id=SID)
    assert [replace(f, name=None) for f in back] == [replace(f, name=None) for f in want]  # type: ignore[arg-type]
    older = await read_entries(target, await manifest_of(target, 0), system_id=SID)
    assert {f.path for f in older} == {f.path for f in want}


async def test_each_index_part_is_parsed_and_let_go_as_it_is_read(
    target: LocalTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading an upload of 100,000 files (uploads, verify, restore, prune) held the JSON
    of all its index parts at once before parsing any (~300 MB): each part's JSON is now
    parsed as soon as it is read, so at most the parts in flight are held."""
    from akoshad.storage import format2, format2_read
    from akoshad.storage.chunk_lists_read import FETCH_IN_FLIGHT

    files = store(1500)
    cut = format2.iter_parts
    monkeypatch.setattr(format2, "iter_parts", lambda e, ends=None: cut(e, 40, min_entries=1))
    built = build(files, 0)
    monkeypatch.undo()
    await write_upload(target, SID, upload_id(0), built)
    manifest = await manifest_of(target, 0)
    assert len(manifest["metadata"]["index"]["parts"]) > 3 * FETCH_IN_FLIGHT

    class Doc(dict):  # type: ignore[type-arg]
        pass  # an entry that a weak reference can follow

    alive, most = [0], [0]
    read, parse = format2_read._read, format2_read.parse_entry

    def gone() -> None:
        alive[0] -= 1

    async def tracked(*args: Any) -> Any:
        doc = await read(*args)
        doc["files"] = [Doc(e) for e in doc["files"]]
        for entry in doc["files"]:
            alive[0] += 1
            weakref.finalize(entry, gone)
        return doc

    def parse_entry(raw: object, place: str, index: int | None = None) -> Any:
        most[0] = max(most[0], alive[0])
        return parse(raw, place, index)

    monkeypatch.setattr(format2_read, "_read", tracked)
    monkeypatch.setattr(format2_read, "parse_entry", parse_entry)
    back = await read_entries(target, manifest, system_id=SID)
    assert len(back) == len(files)
    assert 1 <= most[0] <= (FETCH_IN_FLIGHT + 1) * 40  # entries of the parts in flight


def test_a_parsed_entry_names_where_it_is_listed_only_when_asked() -> None:
    """Every entry of an upload read back held the name errors give it (~200 bytes, 20 MB
    for 100,000 files): it is made from the part's shared name and the index instead."""
    from akoshad.storage.format2 import entry_json
    from akoshad.storage.format2_read import parse_entry

    f = next(iter(store(1).values()))
    raw = json.loads(json.dumps(entry_json(f, "n")))
    place = "index part K: files"
    a, b = parse_entry(raw, place, 3), parse_entry(raw, place, 4)
    assert not hasattr(a, "__dict__") and a.place is b.place
    assert a.where == f"index part K: files[3] ({f.path!r})"
    assert parse_entry(raw, "x").where == f"x ({f.path!r})"


async def test_sealed_index_parts_read_back_with_the_identity(target: LocalTarget) -> None:
    recipients, identities = keys()
    name_key = new_name_key(SID, recipients)
    files = store(600)
    built = build(files, 0, name_key=name_key, recipients=recipients)
    parts = built.manifest["metadata"]["index"]["parts"]
    assert len(parts) > 4 and all(p["encryption"] == "age" for p in parts)
    assert not any(s in encode_manifest(built.manifest).decode() for s in files)
    await write_upload(target, SID, upload_id(0), built)
    back, _ = await sealed_files(target, await manifest_of(target, 0), identities)
    assert [f.path for f in back] == sorted(files)


async def test_a_small_sealed_list_is_held_in_the_manifest_so_a_session_adds_no_put(
    target: LocalTarget,
) -> None:
    """Unsealed, up to INDEX_INLINE_MAX entries go inline in the manifest (no PUT of
    their own); sealed, they are one part held in the manifest too (sealed, base64): a
    session's upload makes no PUT more than unsealed. No list of stored objects names it."""
    recipients, identities = keys()
    name_key = new_name_key(SID, recipients)
    files = store(INDEX_INLINE_MAX - len(TOP))
    assert "files" in build(files, 0).manifest["metadata"]  # unsealed: inline
    first = build(files, 0, name_key=name_key, recipients=recipients)
    index = first.manifest["metadata"]["index"]
    [part] = index["parts"]
    assert set(part) == {"name", "inline", "compression", "encryption"}
    assert part["name"] not in first.document_keys and part["name"] not in index["objects"]
    assert not any(k.startswith(f"systems/{SID}/index/") for k, _ in first.documents)
    files["reflection.duckdb.wal"] = top_file("reflection.duckdb.wal", 1, 2)
    session = build(files, 1, first.document_keys, name_key=name_key, recipients=recipients)
    assert session.documents == []  # the part is in the manifest, rewritten there
    assert session.manifest["metadata"]["index"]["parts"][0]["name"] != part["name"]
    await write_upload(target, SID, upload_id(1), session)
    back, _ = await sealed_files(target, await manifest_of(target, 1), identities)
    assert [f.path for f in back] == sorted(files)
    files = store(INDEX_INLINE_MAX - len(TOP) + 1)  # past the inline size: cut as unsealed
    cut = build(files, 0, name_key=name_key, recipients=recipients)
    assert len(cut.manifest["metadata"]["index"]["parts"]) > 1
    assert all("key" in p for p in cut.manifest["metadata"]["index"]["parts"])


async def test_a_small_sealed_list_over_the_inline_bound_is_a_stored_part(
    target: LocalTarget,
) -> None:
    """200 entries of 60 chunks each seal to far more than MAX_INLINE_PART_BYTES: the one
    part is stored, as before, and named in the objects list."""
    recipients, identities = keys()
    name_key = new_name_key(SID, recipients)
    files = {}
    for i in range(INDEX_INLINE_MAX):
        refs = tuple(
            ChunkRef(sha(f"{i} {j}"), 300, pack(0), (i * 60 + j) * 200, 200, "zstd", "none")
            for j in range(60)
        )
        f = StoredFile(f"big/{i:03d}.bin", "file", 300 * 60, sha(f"{i}"), refs, mode=0o644)
        files[f.path] = f
    built = build(files, 0, name_key=name_key, recipients=recipients)
    index = built.manifest["metadata"]["index"]
    [part] = index["parts"]
    assert set(part) == {"key", "compression", "encryption"}
    assert len(dict(built.documents)[part["key"]]) > MAX_INLINE_PART_BYTES
    assert part["key"] in built.document_keys and part["key"] in index["objects"]
    await write_upload(target, SID, upload_id(0), built)
    back, _ = await sealed_files(target, await manifest_of(target, 0), identities)
    assert len(back) == INDEX_INLINE_MAX
