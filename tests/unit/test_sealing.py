"""The writer side of encryption: sealed format-2 manifests (no name or plaintext hash in
the manifest, documents sealed and keyed, skips in a sealed document), the scope of the
chunks an encrypted upload may reference, and the chunk table keyed by identity."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest
from pyrage import x25519

from akoshad.manifest.layout import validate_manifest
from akoshad.pipeline.sealing import Sealing, chunk_id, in_scope, seal_file
from akoshad.storage.crypto import (
    Identities,
    NotForThisIdentity,
    Recipients,
    is_sealed,
    open_sealed,
)
from akoshad.storage.format2 import build_manifest2
from akoshad.storage.name_key import new_name_key
from akoshad.storage.refs import ChunkRef
from akoshad.storage.sealed_documents import decode_document_sealed
from akoshad.storage.stored import StoredFile
from akoshad.store.db import StateDB

SID = "box-1"
UP = "20261130T010000000000Z-aaaaaa"


def keys() -> tuple[Recipients, Identities]:
    ident = x25519.Identity.generate()
    public = str(ident.to_public())
    return Recipients.parse([public]), Identities(Path("id.txt"), (public,), (), (ident,))


def files(n: int = 40) -> list[StoredFile]:
    pack = f"systems/{SID}/packs/ab/{'ab' * 32}"
    out = []
    for i in range(n):
        path = f"sessions/secret-project-{i:03d}.json"
        sha = hashlib.sha256(path.encode()).hexdigest()
        ref = ChunkRef(sha, 900, pack, i * 1000, 1000, "zstd", "age")
        out.append(StoredFile(path, "file", 900, sha, (ref,), mode=0o600))
    return out


def test_sealed_manifest_names_nothing_and_its_documents_open_with_the_identity() -> None:
    recipients, identities = keys()
    key = new_name_key(SID, recipients)
    stored = files()
    built = build_manifest2(
        system_id=SID,
        upload_id=UP,
        files=stored,
        skipped={"notes/left-out.md": "unreadable"},
        name_key=key,
        recipients=recipients,
    )
    text = json.dumps(built.manifest)
    assert validate_manifest(built.manifest) == []
    assert built.manifest["files"] == []
    for f in stored:
        assert f.path not in text and f.sha256 not in text
    assert "left-out" not in text and "skipped" not in built.manifest["metadata"]
    index = built.manifest["metadata"]["index"]
    assert "files" not in built.manifest["metadata"]
    assert all(p["encryption"] == "age" for p in index["parts"])
    docs = dict(built.documents)
    assert all(k.endswith(".json.gz.age") and is_sealed(v) for k, v in docs.items())
    for k in docs:  # keyed names: not the sha256 of any document's plaintext
        assert not any(f.sha256 in k for f in stored)
    entries = []
    for part in index["parts"]:  # one part, held in the manifest: sealed, no object
        assert set(part) == {"name", "inline", "compression", "encryption"}
        assert part["name"] not in docs and part["name"] not in built.document_keys
        sealed = base64.b64decode(part["inline"], validate=True)
        doc = decode_document_sealed(sealed, "gzip", "age", "part", identities)
        entries += doc["files"]
    assert [e["path"] for e in entries] == sorted(f.path for f in stored)
    skip = index["skipped"]
    doc = decode_document_sealed(docs[skip["key"]], "gzip", "age", "skips", identities)
    assert doc == {"skipped": [{"path": "notes/left-out.md", "reason": "unreadable"}]}
    _, other = keys()
    with pytest.raises(NotForThisIdentity):
        decode_document_sealed(docs[skip["key"]], "gzip", "age", "skips", other)

    # the next upload with one file changed: the same keyed names, only its part is new
    changed = [*stored[:-1], replace(stored[-1], mode=0o644)]
    again = build_manifest2(
        system_id=SID,
        upload_id=UP,
        files=changed,
        skipped={"notes/left-out.md": "unreadable"},
        known_documents=built.document_keys,
        name_key=key,
        recipients=recipients,
    )
    assert again.documents == [] and again.document_keys == built.document_keys
    assert again.manifest["metadata"]["index"]["parts"] != index["parts"]
    # another name key (another recipient list): every name differs
    other_key = new_name_key(SID, recipients)
    third = build_manifest2(
        system_id=SID,
        upload_id=UP,
        files=stored,
        skipped={},
        name_key=other_key,
        recipients=recipients,
    )
    assert not third.document_keys & built.document_keys


def test_in_scope_keeps_only_chunks_sealed_under_the_name_key() -> None:
    recipients, _ = keys()
    sealing = Sealing(recipients, new_name_key(SID, recipients))
    other = Sealing(recipients, new_name_key(SID, recipients))
    pack = f"systems/{SID}/packs/ab/{'ab' * 32}"
    plain = ChunkRef("1" * 64, 10, pack, 0, 10, "none", "none")
    mine = ChunkRef("2" * 64, 10, pack, 10, 300, "none", "age")
    theirs = ChunkRef("3" * 64, 10, pack, 310, 300, "none", "age")
    table = {
        plain.sha256: plain,
        chunk_id(mine.sha256, sealing): mine,
        chunk_id(theirs.sha256, other): theirs,
    }
    assert in_scope(table, None) == {plain.sha256: plain}
    assert in_scope(table, sealing) == {sealing.chunk_id(mine.sha256): mine}
    assert in_scope(table, other) == {other.chunk_id(theirs.sha256): theirs}


def test_chunk_table_keeps_identity_and_plaintext_sha(tmp_path: Path) -> None:
    recipients, _ = keys()
    sealing = Sealing(recipients, new_name_key(SID, recipients))
    pack = f"systems/{SID}/packs/ab/{'ab' * 32}"
    sealed = ChunkRef("2" * 64, 10, pack, 10, 300, "zstd", "age")
    plain = ChunkRef("1" * 64, 10, pack, 0, 10, "none", "none")
    ident = sealing.chunk_id(sealed.sha256)

    async def run() -> dict[str, ChunkRef]:
        state = StateDB(tmp_path / "state.db")
        await state.open()
        try:
            await state.transaction(
                lambda c: StateDB.write_chunks(c, "local", {ident: sealed, plain.sha256: plain})
            )
            return await state.chunks_of("local")
        finally:
            await state.close()

    assert asyncio.run(run()) == {ident: sealed, plain.sha256: plain}


def test_seal_file_streams_to_a_private_age_file(tmp_path: Path) -> None:
    recipients, identities = keys()
    src = tmp_path / ".memories-x.json"
    src.write_text(json.dumps({"conversations": ["private words"] * 1000}))
    out = seal_file(src, recipients)
    assert out.name == ".memories-x.json.age" and not src.exists()
    assert out.stat().st_mode & 0o777 == 0o600
    data = out.read_bytes()
    assert is_sealed(data) and b"private words" not in data
    assert b"private words" in open_sealed(data, identities, 10 * 1024 * 1024)
