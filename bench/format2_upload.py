"""Writing a store into a target in bucket format 2 with the storage engine (packs of
``PACK_TARGET`` bytes, content-defined chunks, index parts, chunk lists), for the restore
benchmark; the uploader's own code is not needed. Not a test helper: sizes are the real
defaults."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

from akoshad.manifest.layout import encode_manifest, manifest_key, new_upload_id
from akoshad.storage.chunker import iter_file_chunks
from akoshad.storage.codec import compress
from akoshad.storage.format2 import build_manifest2
from akoshad.storage.packs import PackWriter, SealedPack
from akoshad.storage.refs import ChunkCompression, ChunkRef
from akoshad.storage.stored import StoredFile
from akoshad.targets.base import Target


def _kind(path: str) -> str:
    if path.endswith(".duckdb"):
        return "duckdb"
    if path.endswith(".duckdb.wal"):
        return "duckdb-wal"
    return "sqlite" if path.endswith(".db") else "file"


def prepare(root: Path, system_id: str, staging: Path) -> tuple[list[StoredFile], list[SealedPack]]:
    """Chunk, compress and pack every regular file under ``root`` (blocking): its files,
    and the sealed packs to PUT."""
    known: dict[str, ChunkRef] = {}
    pending: dict[str, tuple[int, ChunkCompression]] = {}
    order: dict[str, list[str]] = {}
    packs: list[SealedPack] = []

    def sealed(new: list[SealedPack]) -> None:
        for pack in new:
            packs.append(pack)
            for slot in pack.slots:
                size, comp = pending.pop(slot.name)
                known[slot.name] = ChunkRef(
                    slot.name, size, pack.key, slot.offset, slot.length, comp, "none"
                )

    writer = PackWriter(staging, system_id)
    paths = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    for path in paths:
        rel = path.relative_to(root).as_posix()
        order[rel] = []
        for chunk in iter_file_chunks(path):
            order[rel].append(chunk.sha256)
            if chunk.sha256 in known or chunk.sha256 in pending:
                continue
            comp, body = compress(chunk.data)
            pending[chunk.sha256] = (chunk.length, comp)
            sealed(writer.add(chunk.sha256, body))
    last = writer.flush()
    sealed([last] if last else [])
    files = []
    for rel, shas in order.items():
        digest = hashlib.sha256()
        with open(root / rel, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        st = os.stat(root / rel)
        files.append(
            StoredFile(
                path=rel,
                kind=_kind(rel),
                size=st.st_size,
                sha256=digest.hexdigest(),
                parts=tuple(known[s] for s in shas),
                mode=st.st_mode & 0o777,
            )
        )
    return files, packs


async def upload_format2(target: Target, system_id: str, root: Path, staging: Path) -> str:
    """Every regular file under ``root`` as one format-2 upload (packs four at a time,
    documents, manifest last); its upload id."""
    files, packs = await asyncio.to_thread(prepare, root, system_id, staging)
    gate = asyncio.Semaphore(4)

    async def put(pack: SealedPack) -> None:
        async with gate:
            await target.put_file(pack.key, pack.path, "none")
        await asyncio.to_thread(pack.path.unlink)

    await asyncio.gather(*(put(p) for p in packs))
    upload_id = new_upload_id(datetime.now(UTC))
    built = build_manifest2(system_id=system_id, upload_id=upload_id, files=files, skipped={})
    for key, data in built.documents:
        await target.put_bytes(key, data, "application/gzip")
    manifest = encode_manifest(built.manifest)
    await target.put_bytes(manifest_key(system_id, upload_id), manifest, "application/json")
    return upload_id
