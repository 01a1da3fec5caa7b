"""Uploads for prune tests, written into a real target, and a reader that restores them.

Format 1: manifests from ``akoshad.manifest.layout.build_manifest``, objects written by
``Target.put_file`` (gzip); an unchanged file points at the object of the upload that stored
it. Format 2: built by hand: every file cut into fixed 16 KiB chunks, compressed by
``codec``, new chunks of an upload packed into one pack by ``PackWriter``; entries carry
inline ``chunks``, a shared ``chunk_list``, or sit in ``metadata.index`` parts.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from akoshad.manifest.layout import (
    FileEntry,
    build_manifest,
    encode_manifest,
    manifest_key,
    object_name,
)
from akoshad.storage import codec
from akoshad.storage.documents import DOCUMENT_CONTENT_TYPE, DocumentKind, encode_document
from akoshad.storage.fetch import WholeObjectRanges, fetch_file
from akoshad.storage.format2_read import read_entries
from akoshad.storage.packs import PackWriter
from akoshad.storage.refs import ChunkRef
from akoshad.targets.base import Target

CHUNK = 16 * 1024


async def read_all(target: Target, key: str) -> bytes:
    return b"".join([c async for c in target.read(key)])


class Builder:
    """Writes uploads of one system into ``target`` and remembers what each one holds."""

    def __init__(self, target: Target, system_id: str, work: Path) -> None:
        self.target = target
        self.system_id = system_id
        self.work = work
        self.staging = work / "staging"
        self.staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.expected: dict[str, dict[str, bytes]] = {}
        self._f1: dict[str, tuple[str, FileEntry]] = {}  # path -> (sha, entry)
        self._chunks: dict[str, ChunkRef] = {}  # sha256 -> ref (the "ledger")

    async def format1(self, upload_id: str, files: dict[str, bytes], when: datetime) -> None:
        prefix = f"systems/{self.system_id}/uploads/{upload_id}/"
        entries: list[FileEntry] = []
        taken: set[str] = set()
        for path, data in sorted(files.items()):
            sha = hashlib.sha256(data).hexdigest()
            old = self._f1.get(path)
            if old is not None and old[0] == sha:
                entries.append(old[1])
                continue
            name = object_name(path, "gzip", taken)
            src = self.work / "src"
            src.write_bytes(data)
            stored = await self.target.put_file(prefix + name, src, "gzip")
            entry = FileEntry(
                path, name, prefix + name, len(data), sha, stored.stored_size, "gzip", "file"
            )
            self._f1[path] = (sha, entry)
            entries.append(entry)
        manifest = build_manifest(
            system_id=self.system_id,
            upload_id=upload_id,
            entries=entries,
            skipped={},
            uploaded_at=when,
        )
        key = manifest_key(self.system_id, upload_id)
        await self.target.put_bytes(key, encode_manifest(manifest), "application/json")
        self.expected[upload_id] = dict(files)

    async def _pack(self, files: dict[str, bytes]) -> dict[str, list[ChunkRef]]:
        shas: dict[str, list[str]] = {}
        new: dict[str, tuple[str, int]] = {}  # sha -> (compression, size) of new chunks
        with PackWriter(self.staging, self.system_id, 1 << 26, 1 << 26) as writer:
            for path, data in sorted(files.items()):
                shas[path] = []
                for i in range(0, max(len(data), 1), CHUNK):
                    piece = data[i : i + CHUNK]
                    sha = hashlib.sha256(piece).hexdigest()
                    shas[path].append(sha)
                    if sha not in self._chunks and sha not in new:
                        comp, stored = codec.compress(piece)
                        writer.add(sha, stored)
                        new[sha] = (comp, len(piece))
            sealed = writer.flush()
        if sealed is not None:
            await self.target.put_file(sealed.key, sealed.path, "none")
            sealed.path.unlink()
            for slot in sealed.slots:
                comp, size = new[slot.name]  # type: ignore[assignment]
                self._chunks[slot.name] = ChunkRef(
                    slot.name,
                    size,
                    sealed.key,
                    slot.offset,
                    slot.length,
                    comp,
                    "none",  # type: ignore[arg-type]
                )
        return {p: [self._chunks[s] for s in ss] for p, ss in shas.items()}

    async def _doc(self, kind: DocumentKind, doc: dict[str, Any]) -> str:
        key, data = encode_document(self.system_id, kind, doc)
        await self.target.put_bytes(key, data, DOCUMENT_CONTENT_TYPE)
        return key

    async def format2(
        self, upload_id: str, files: dict[str, bytes], when: datetime, style: str
    ) -> None:
        chunks = await self._pack(files)
        entries: list[dict[str, Any]] = []
        for path, data in sorted(files.items()):
            entry: dict[str, Any] = {
                "path": path,
                "name": path.replace("/", "__"),
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "kind": "file",
            }
            refs = [c.to_json() for c in chunks[path]]
            if style != "inline" and len(data) > 2 * CHUNK:
                entry["chunk_list"] = {
                    "key": await self._doc("chunklists", {"chunks": refs}),
                    "compression": "gzip",
                }
            else:
                entry["chunks"] = refs
            entries.append(entry)
        meta: dict[str, Any] = {
            "system_id": self.system_id,
            "upload_id": upload_id,
            "uploader": "akoshad",
            "akoshad_version": "test",
            "format": 2,
            "skipped": [],
        }
        if style == "index":
            half = len(entries) // 2
            parts = [entries[:half], entries[half:]]
            meta["index"] = {
                "parts": [
                    {
                        "key": await self._doc("index", {"files": p}),
                        "compression": "gzip",
                        "encryption": "none",
                    }
                    for p in parts
                ]
            }
        else:
            meta["files"] = entries
        manifest = build_manifest(
            system_id=self.system_id, upload_id=upload_id, entries=[], skipped={}, uploaded_at=when
        )
        manifest["metadata"] = meta
        manifest["total_size_bytes"] = sum(len(d) for d in files.values())
        await self.target.put_bytes(
            manifest_key(self.system_id, upload_id), encode_manifest(manifest), "application/json"
        )
        self.expected[upload_id] = dict(files)


async def restore(target: Target, system_id: str, upload_id: str) -> dict[str, bytes]:
    """Every file of the upload read back from the target through the restore reader
    (``format2_read.read_entries`` + ``fetch.fetch_file``: sizes and sha256 checked)."""
    manifest = json.loads(await read_all(target, manifest_key(system_id, upload_id)))
    ranges = WholeObjectRanges(target)
    out: dict[str, bytes] = {}
    for f in await read_entries(target, manifest, system_id=system_id):
        data = bytearray()
        size, sha = await fetch_file(target, f, data.extend, ranges=ranges)
        assert (size, sha) == (f.size, f.sha256) == (len(data), hashlib.sha256(data).hexdigest())
        out[f.path] = bytes(data)
    return out


def text(seed: int, size: int) -> bytes:
    """Compressible bytes (zstd pays), different per seed."""
    line = f"row {seed} " + "session memory text " * 4 + "\n"
    return (line * (size // len(line) + 1)).encode()[:size]


def noise(seed: int, size: int) -> bytes:
    """Incompressible bytes, different per seed."""
    out = b""
    block = hashlib.sha256(str(seed).encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return out[:size]


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


class Undated:
    """A target that cannot date what it stores: ``inner`` without its dated listing (a
    prune then takes sizes from a HEAD per key, and has no stored times)."""

    def __init__(self, inner: Target) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "list_stored":
            raise AttributeError(name)
        return getattr(self.inner, name)
