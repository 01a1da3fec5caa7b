"""Reading an encrypted (sealed) format-2 upload back with an identity, for tests: the
sealed index parts and chunk lists opened (``sealed_documents``), every chunk opened and
checked (``crypto.decode_sealed_chunk``), each file's size and sha256 checked."""

from __future__ import annotations

import hashlib
from typing import Any

from akoshad.storage.crypto import Identities, decode_sealed_chunk
from akoshad.storage.format2_read import parse_entry
from akoshad.storage.refs import chunk_list_from_json
from akoshad.storage.sealed_documents import document_encryption, read_document_sealed
from akoshad.storage.stored import StoredFile
from akoshad.targets.base import Target


async def _object(target: Target, key: str, cache: dict[str, bytes]) -> bytes:
    if key not in cache:
        cache[key] = b"".join([piece async for piece in target.read(key)])
    return cache[key]


async def sealed_files(
    target: Target, manifest: dict[str, Any], identities: Identities | None
) -> tuple[list[StoredFile], list[Any]]:
    """The files of an encrypted upload and its skipped list."""
    index = manifest["metadata"]["index"]
    files: list[StoredFile] = []
    for part in index["parts"]:
        doc = await read_document_sealed(
            target, part["key"], part["compression"], part["encryption"], identities
        )
        for i, raw in enumerate(doc["files"]):
            pending = parse_entry(raw, f"files[{i}]")
            f = pending.file
            if pending.chunk_list is not None:
                key = pending.chunk_list.key
                listed = await read_document_sealed(
                    target, key, "gzip", document_encryption(key), identities
                )
                chunks = tuple(chunk_list_from_json(listed, key))
                f = StoredFile(f.path, f.kind, f.size, f.sha256, chunks, f.mode, f.facts, f.name)
            files.append(f)
    skipped: list[Any] = []
    if "skipped" in index:
        ref = index["skipped"]
        doc = await read_document_sealed(
            target, ref["key"], ref["compression"], ref["encryption"], identities
        )
        skipped = doc["skipped"]
    return files, skipped


async def restore_sealed(
    target: Target, manifest: dict[str, Any], identities: Identities | None
) -> dict[str, bytes]:
    """Every file of an encrypted upload, opened with ``identities`` and checked."""
    files, _ = await sealed_files(target, manifest, identities)
    cache: dict[str, bytes] = {}
    out: dict[str, bytes] = {}
    for f in files:
        pieces: list[bytes] = []
        for ref in f.chunks:
            assert ref.encryption == "age", f.path
            pack = await _object(target, ref.key, cache)
            stored = pack[ref.offset : ref.offset + ref.length]
            pieces.append(decode_sealed_chunk(stored, ref, identities))
        data = b"".join(pieces)
        assert (len(data), hashlib.sha256(data).hexdigest()) == (f.size, f.sha256), f.path
        out[f.path] = data
    return out
