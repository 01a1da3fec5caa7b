"""Prune of format-2 uploads made by the format-2 writer (``format2.build_manifest2``, index
parts and a chunk list) on the real local target: retention drops the first upload, the
half-dead pack is repacked, the kept manifest is rewritten, and every kept file restores
through the restore reader (``format2_read.read_entries`` + ``fetch.fetch_file``) with its
sha256, also after a ``kill -9`` at any step and the prune that finishes the job."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from akoshad.manifest.layout import manifest_key, new_upload_id
from akoshad.storage import chunk_parts
from akoshad.storage.documents import (
    DOCUMENT_COMPRESSION,
    DocumentKind,
    decode_document,
    encode_document,
)
from akoshad.storage.fetch import WholeObjectRanges, fetch_file
from akoshad.storage.format2 import build_manifest2
from akoshad.storage.format2_read import read_entries
from akoshad.storage.prune_documents import PruneError
from akoshad.storage.prune_exec import run_prune
from akoshad.targets.local import LocalTarget
from tests.format2_store import Store, write_upload
from tests.helpers import same_document
from tests.prune_child import kill_at_marker, policy
from tests.prune_data import private_dir

SID = "host-a"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
NOTES = 40  # 8 KiB each, one chunk each: all changed by the second upload
NOTE_SIZE = 8 * 1024
BIG_SIZE = 2 * 1024 * 1024  # about 256 chunks of 8 KiB: a chunk list, unchanged


def noise(seed: int, size: int) -> bytes:
    """Incompressible bytes (chunks stored as they are), different per seed."""
    return random.Random(seed).randbytes(size)


def write_tree(root: Path, version: int) -> dict[str, bytes]:
    """The store at ``version``: notes sorted before the big file, so the first pack holds
    the notes and the big file's first chunks; the notes change with the version."""
    files = {f"notes/n{i:02d}.bin": noise(1000 * version + i, NOTE_SIZE) for i in range(NOTES)}
    files["stable.json"] = json.dumps({"kept": "x" * 3000}).encode()
    files["z.duckdb"] = noise(7, BIG_SIZE)
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


@dataclass
class Uploads:
    outbox: Path
    ids: list[str]
    kept: dict[str, bytes]  # path -> content of the kept (second) upload


@pytest.fixture
async def uploads(tmp_path: Path) -> AsyncIterator[Uploads]:
    """Two uploads written by the format-2 writer, an hour apart, both with index parts."""
    outbox, root = tmp_path / "outbox", tmp_path / "data"
    target = LocalTarget(outbox)
    await target.start()
    store = Store(target, SID, private_dir(tmp_path / "store-staging"))
    known: frozenset[str] = frozenset()
    ids: list[str] = []
    files: dict[str, bytes] = {}
    for version in (1, 2):
        when = NOW - timedelta(hours=3 - version)
        upload_id = new_upload_id(when)
        files = await asyncio.to_thread(write_tree, root, version)
        stored = await store.store_tree(root)
        built = build_manifest2(
            system_id=SID,
            upload_id=upload_id,
            files=stored,
            skipped={},
            known_documents=known,
            uploaded_at=when,
            use_index=True,
        )
        assert any("chunk_list" in e for e in _entries_json(built.documents))
        await write_upload(target, SID, upload_id, built)
        known = built.document_keys
        ids.append(upload_id)
    await target.close()
    yield Uploads(outbox, ids, files)


def _entries_json(documents: list[tuple[str, bytes]]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for key, data in documents:
        if "/index/" in key:
            out += decode_document(data, DOCUMENT_COMPRESSION, key, 1 << 26)["files"]
    return out


async def read_json(target: LocalTarget, key: str) -> dict[str, object]:
    doc: dict[str, object] = json.loads(b"".join([p async for p in target.read(key)]))
    return doc


async def check_restorable(target: LocalTarget, upload_id: str, expected: dict[str, bytes]) -> None:
    """Every file of the upload, through the restore reader, byte for byte."""
    manifest = await read_json(target, manifest_key(SID, upload_id))
    entries = await read_entries(target, manifest, system_id=SID)
    assert sorted(f.path for f in entries) == sorted(expected)
    ranges = WholeObjectRanges(target)
    for f in entries:
        got = bytearray()
        size, sha = await fetch_file(target, f, got.extend, ranges=ranges)
        assert bytes(got) == expected[f.path], f.path
        assert (size, sha) == (f.size, f.sha256) == (len(got), hashlib.sha256(got).hexdigest())


async def check_documents_as_written(target: LocalTarget, upload_id: str) -> set[str]:
    """Every index part and chunk list the manifest names is stored exactly as the writer's
    codec makes it (key = sha256 of its canonical JSON, same gzip bytes); returns their keys."""
    manifest = await read_json(target, manifest_key(SID, upload_id))
    meta = manifest["metadata"]
    assert isinstance(meta, dict)
    keys = [p["key"] for p in meta["index"]["parts"]]
    seen: set[str] = set()
    while keys:
        key = keys.pop()
        stored = b"".join([p async for p in target.read(key)])
        doc = decode_document(stored, DOCUMENT_COMPRESSION, key, 1 << 26)
        kind: DocumentKind = "index" if "/index/" in key else "chunklists"
        assert same_document(encode_document(SID, kind, doc), (key, stored))
        keys += [e["chunk_list"]["key"] for e in doc.get("files", []) if "chunk_list" in e]
        keys += [p["key"] for p in doc.get("parts", [])]  # a split chunk list's parts
        seen.add(key)
    return seen


async def nothing_left(target: LocalTarget, staging: Path) -> None:
    again = await run_prune(target, SID, policy(1), staging_dir=staging, now=NOW, dry_run=True)
    assert again.uploads_removed == [] and again.objects_deleted == 0
    assert again.packs_repacked == 0, again.to_json()


async def test_prune_keeps_a_format2_writer_upload_restorable(
    uploads: Uploads, tmp_path: Path
) -> None:
    target = LocalTarget(uploads.outbox)
    await target.start()
    try:
        first, second = uploads.ids
        before = [k async for k in target.list_keys(f"systems/{SID}/")]
        docs_before = await check_documents_as_written(target, second)
        staging = private_dir(tmp_path / "staging")
        result = await run_prune(target, SID, policy(1), staging_dir=staging, now=NOW)
        assert result.uploads_removed == [first] and result.uploads_kept == 1
        assert result.packs_repacked >= 1 and result.packs_written >= 1
        assert result.manifests_rewritten == 1
        after = [k async for k in target.list_keys(f"systems/{SID}/")]
        assert manifest_key(SID, first) not in after
        assert len(after) < len(before) and result.bytes_freed > 0
        assert result.bytes_stored_after <= 1.2 * result.bytes_referenced
        await check_restorable(target, second, uploads.kept)
        docs_after = await check_documents_as_written(target, second)
        # the big file's chunk list and its index part were rewritten (its chunks moved)
        assert {k.split("/")[2] for k in docs_after - docs_before} == {"chunklists", "index"}
        assert not (docs_before - docs_after) & set(after)  # the replaced ones are gone
        await nothing_left(target, staging)
        assert "prune" not in os.listdir(staging)  # a finished prune removes its own dir
    finally:
        await target.close()


@pytest.mark.parametrize(
    ("op", "nth"),
    [
        ("delete_manifest", 1),
        ("delete_object", 1),
        ("write_pack", 1),
        ("rewrite_manifest", 1),
        ("delete_replaced", 1),
        ("delete_replaced", 2),
    ],
)
async def test_kill_9_during_a_format2_prune_leaves_the_kept_upload_restorable(
    uploads: Uploads, tmp_path: Path, op: str, nth: int
) -> None:
    staging = private_dir(tmp_path / "staging")
    args = [str(uploads.outbox), SID, NOW.isoformat(), "1", str(staging), op, str(nth)]
    line = await asyncio.to_thread(kill_at_marker, args)
    assert line.strip() == "AT-STEP", f"the prune never reached {op} #{nth}: {line!r}"
    target = LocalTarget(uploads.outbox)
    await target.start()
    try:
        second = uploads.ids[1]
        await check_restorable(target, second, uploads.kept)
        done = await run_prune(target, SID, policy(1), staging_dir=staging, now=NOW)
        assert set(done.uploads_removed) <= {uploads.ids[0]}
        await check_restorable(target, second, uploads.kept)
        await check_documents_as_written(target, second)
        await nothing_left(target, staging)
        assert manifest_key(SID, uploads.ids[0]) not in [
            k async for k in target.list_keys(f"systems/{SID}/uploads/")
        ]
    finally:
        await target.close()


def _split(doc: dict[str, object]) -> list[str]:
    parts = doc.get("parts")
    assert isinstance(parts, list)
    return [p["key"] for p in parts]


async def _top_list(target: LocalTarget, upload_id: str) -> tuple[str, list[str]]:
    """The big file's split chunk list in ``upload_id``: its key and its parts' keys."""
    manifest = await read_json(target, manifest_key(SID, upload_id))
    meta = manifest["metadata"]
    assert isinstance(meta, dict)
    for part in meta["index"]["parts"]:
        stored = b"".join([p async for p in target.read(part["key"])])
        for e in decode_document(stored, DOCUMENT_COMPRESSION, part["key"], 1 << 26)["files"]:
            if e["path"] == "z.duckdb":
                key = e["chunk_list"]["key"]
                stored = b"".join([p async for p in target.read(key)])
                return key, _split(decode_document(stored, DOCUMENT_COMPRESSION, key, 1 << 26))
    raise AssertionError("no z.duckdb")


@pytest.fixture
async def split_uploads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Uploads]:
    """Two uploads whose big file has its chunk list split into parts (constants lowered),
    its middle changed by the second one (so most parts are shared)."""
    monkeypatch.setattr(chunk_parts, "SPLIT_MIN_CHUNKS", 32)
    monkeypatch.setattr(chunk_parts, "PART_BOUNDARY_BITS", 3)
    monkeypatch.setattr(chunk_parts, "PART_MIN_CHUNKS", 2)
    monkeypatch.setattr(chunk_parts, "PART_MAX_CHUNKS", 16)
    outbox, root = tmp_path / "outbox", tmp_path / "data"
    target = LocalTarget(outbox)
    await target.start()
    store = Store(target, SID, private_dir(tmp_path / "store-staging"))
    known: frozenset[str] = frozenset()
    ids: list[str] = []
    files: dict[str, bytes] = {}
    for version in (1, 2):
        when = NOW - timedelta(hours=3 - version)
        files = await asyncio.to_thread(write_tree, root, version)
        if version == 2:  # 16 KiB in the middle of the big file change
            data = bytearray(files["z.duckdb"])
            data[BIG_SIZE // 2 : BIG_SIZE // 2 + 16384] = noise(99, 16384)
            files["z.duckdb"] = bytes(data)
            (root / "z.duckdb").write_bytes(data)
        upload_id = new_upload_id(when)
        built = build_manifest2(
            system_id=SID,
            upload_id=upload_id,
            files=await store.store_tree(root),
            skipped={},
            known_documents=known,
            uploaded_at=when,
            use_index=True,
        )
        await write_upload(target, SID, upload_id, built)
        known = built.document_keys
        ids.append(upload_id)
    await target.close()
    yield Uploads(outbox, ids, files)


async def test_prune_keeps_shared_chunk_list_parts_and_the_repack_rewrites_moved_ones(
    split_uploads: Uploads, tmp_path: Path
) -> None:
    """The prune drops the first upload and sweeps the chunk-list parts only it named,
    keeps the shared ones, and the repack of the half-dead first pack rewrites the parts
    whose chunks moved (and the top-level list, its index part, the manifest), not the
    others; the kept upload restores byte for byte."""
    target = LocalTarget(split_uploads.outbox)
    await target.start()
    try:
        first, second = split_uploads.ids
        top1, parts1 = await _top_list(target, first)
        top2, parts2 = await _top_list(target, second)
        assert len(parts2) >= 12
        shared, dropped = set(parts1) & set(parts2), set(parts1) - set(parts2)
        assert 1 <= len(dropped) <= 3 and len(shared) >= len(parts2) - 3
        docs_before = await check_documents_as_written(target, second)
        staging = private_dir(tmp_path / "staging")
        result = await run_prune(target, SID, policy(1), staging_dir=staging, now=NOW)
        assert result.uploads_removed == [first] and result.packs_repacked >= 1
        assert result.manifests_rewritten == 1
        after = {k async for k in target.list_keys(f"systems/{SID}/")}
        assert top1 not in after and not dropped & after  # only the dropped upload named them
        await check_restorable(target, second, split_uploads.kept)
        docs_after = await check_documents_as_written(target, second)
        top3, parts3 = await _top_list(target, second)
        rewritten = set(parts3) - set(parts2)
        assert top3 != top2 and top3 in docs_after - docs_before
        # the parts holding chunks of the repacked pack moved; the others are the same objects
        assert 1 <= len(rewritten) < len(parts3) - 3
        assert set(parts3) - rewritten <= set(parts2) and (set(parts3) - rewritten) <= after
        assert not (docs_before - docs_after) & after  # the replaced parts and list are gone
        await nothing_left(target, staging)
    finally:
        await target.close()


@pytest.mark.parametrize(
    ("op", "nth"),
    [("delete_object", 1), ("rewrite_manifest", 1), ("delete_replaced", 1), ("delete_replaced", 3)],
)
async def test_kill_9_during_a_prune_of_split_chunk_lists_leaves_the_kept_upload_restorable(
    split_uploads: Uploads, tmp_path: Path, op: str, nth: int
) -> None:
    staging = private_dir(tmp_path / "staging")
    args = [str(split_uploads.outbox), SID, NOW.isoformat(), "1", str(staging), op, str(nth)]
    line = await asyncio.to_thread(kill_at_marker, args)
    assert line.strip() == "AT-STEP", f"the prune never reached {op} #{nth}: {line!r}"
    target = LocalTarget(split_uploads.outbox)
    await target.start()
    try:
        second = split_uploads.ids[1]
        await check_restorable(target, second, split_uploads.kept)
        await run_prune(target, SID, policy(1), staging_dir=staging, now=NOW)
        await check_restorable(target, second, split_uploads.kept)
        await check_documents_as_written(target, second)
        await nothing_left(target, staging)
    finally:
        await target.close()


async def test_a_kept_manifest_of_a_newer_format_stops_the_prune(
    uploads: Uploads, tmp_path: Path
) -> None:
    """The newest upload written by a newer akoshad (``metadata.format`` 3, its entries
    where this version does not look): the prune found it referenced nothing and swept its
    packs and documents (restore already refused it: "upgrade akoshad to read it"). It now
    stops, naming the manifest, and deletes nothing, the dropped upload included."""
    target = LocalTarget(uploads.outbox)
    await target.start()
    try:
        key = manifest_key(SID, uploads.ids[1])
        manifest = await read_json(target, key)
        meta = manifest["metadata"]
        assert isinstance(meta, dict)
        meta["format"], meta["index_v3"] = 3, meta.pop("index")
        await target.put_bytes(key, json.dumps(manifest).encode(), "application/json")
        before = [k async for k in target.list_keys(f"systems/{SID}/")]
        staging = private_dir(tmp_path / "staging")
        for dry_run in (True, False):
            with pytest.raises(PruneError, match=f"{key}: manifest format 3 is newer.*nothing"):
                await run_prune(
                    target, SID, policy(1), staging_dir=staging, now=NOW, dry_run=dry_run
                )
        assert [k async for k in target.list_keys(f"systems/{SID}/")] == before
    finally:
        await target.close()


async def test_a_kept_manifest_left_without_its_date_deletes_nothing_it_may_use(
    uploads: Uploads, tmp_path: Path
) -> None:
    """The kept manifest overwritten with ``{}`` (valid JSON, no ``uploaded_at``: what
    ``uploads`` lists as DAMAGED and restore refuses): the prune took it for an upload
    referencing nothing and deleted its packs and documents without a word. It is now
    damaged like a manifest that is not JSON: reported, every object stored up to it
    kept, and only the dropped upload's manifest goes."""
    target = LocalTarget(uploads.outbox)
    await target.start()
    try:
        first, second = uploads.ids
        key = manifest_key(SID, second)
        await target.put_bytes(key, b"{}", "application/json")
        before = {k async for k in target.list_keys(f"systems/{SID}/")}
        staging = private_dir(tmp_path / "staging")
        result = await run_prune(target, SID, policy(1), staging_dir=staging, now=NOW)
        assert result.uploads_removed == [first]
        assert result.unreadable == [
            f"upload {second}: manifest {key} has no uploaded_at (missing or not ISO 8601)"
        ]
        after = {k async for k in target.list_keys(f"systems/{SID}/")}
        assert after == before - {manifest_key(SID, first)}
    finally:
        await target.close()
