"""Test helpers for bucket format 2: store a directory into packs of a target, an in-memory
target, and writing an upload (documents first, manifest last)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb

from akoshad.manifest.layout import encode_manifest, manifest_key
from akoshad.storage.chunker import ChunkParams, iter_file_chunks
from akoshad.storage.codec import compress
from akoshad.storage.errors import PackError
from akoshad.storage.format2 import Format2Manifest
from akoshad.storage.packs import PackWriter, SealedPack
from akoshad.storage.refs import ChunkCompression, ChunkRef
from akoshad.storage.stored import StoredFile
from akoshad.targets.base import Compression, StoredObject, Target

# small CDC parameters, so a DuckDB file of a few MiB has well over 64 chunks
SMALL_CHUNKS = ChunkParams(avg_size=8192, min_size=2048, max_size=32768, min_file=32768)


class MemTarget:
    """Objects in a dict (key -> bytes), read back in 64 KiB pieces like a real target."""

    name = "mem"

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads: dict[str, int] = {}

    async def start(self, *, clean_up: bool = True) -> None:
        return None

    async def close(self) -> None:
        return None

    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        data = await asyncio.to_thread(source.read_bytes)
        self.objects[key] = data
        sha = hashlib.sha256(data).hexdigest()
        return StoredObject(key, len(data), compression, len(data), sha)

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        data = await asyncio.to_thread(source.read_bytes)
        assert len(data) == size
        self.objects[key] = data
        return size

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        self.objects[key] = bytes(data)
        return len(data)

    async def read(self, key: str) -> AsyncIterator[bytes]:  # type: ignore[override]
        if key not in self.objects:
            raise KeyError(key)
        self.reads[key] = self.reads.get(key, 0) + 1
        data = self.objects[key]
        for start in range(0, len(data), 65536):
            yield data[start : start + 65536]

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        if key not in self.objects:
            raise KeyError(key)
        self.reads[key] = self.reads.get(key, 0) + 1
        data = self.objects[key][offset : offset + length]
        if len(data) != length:
            raise PackError(f"object {key} is too short")
        return data

    async def head(self, key: str) -> int | None:
        data = self.objects.get(key)
        return None if data is None else len(data)

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield key

    async def delete_keys(self, keys: list[str]) -> None:
        for key in keys:
            self.objects.pop(key, None)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def kind_of(path: str) -> str:
    if path.endswith(".duckdb"):
        return "duckdb"
    if path.endswith(".duckdb.wal"):
        return "duckdb-wal"
    if path.endswith(".db"):
        return "sqlite"
    return "file"


class Store:
    """Stores files chunk by chunk into packs of ``target``, each distinct chunk once."""

    def __init__(self, target: Target, system_id: str, staging: Path) -> None:
        self.target = target
        self.system_id = system_id
        self.staging = staging
        self.known: dict[str, ChunkRef] = {}
        self.packs: list[str] = []

    async def _put(self, packs: list[SealedPack], pending: dict[str, tuple[int, str]]) -> None:
        for pack in packs:
            await self.target.put_file(pack.key, pack.path, "none")
            pack.path.unlink()
            self.packs.append(pack.key)
            for slot in pack.slots:
                size, comp = pending.pop(slot.name)
                c: ChunkCompression = "zstd" if comp == "zstd" else "none"
                self.known[slot.name] = ChunkRef(
                    slot.name, size, pack.key, slot.offset, slot.length, c, "none"
                )

    async def store_tree(self, root: Path, params: ChunkParams = SMALL_CHUNKS) -> list[StoredFile]:
        """Every regular file under ``root``, small ones packed together."""
        writer = PackWriter(self.staging, self.system_id, target=1024 * 1024)
        pending: dict[str, tuple[int, str]] = {}
        order: dict[str, list[str]] = {}
        for path in await asyncio.to_thread(_files, root):
            rel = path.relative_to(root).as_posix()
            order[rel] = []
            for chunk in iter_file_chunks(path, params):
                order[rel].append(chunk.sha256)
                if chunk.sha256 in self.known or chunk.sha256 in pending:
                    continue
                comp, body = compress(chunk.data)
                pending[chunk.sha256] = (chunk.length, comp)
                await self._put(writer.add(chunk.sha256, body), pending)
        last = writer.flush()
        await self._put([last] if last else [], pending)
        out = []
        for rel, shas in order.items():
            data = (root / rel).read_bytes()
            out.append(
                StoredFile(
                    path=rel,
                    kind=kind_of(rel),
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    parts=tuple(self.known[s] for s in shas),
                    mode=os.stat(root / rel).st_mode & 0o777,
                )
            )
        return out


async def write_upload(
    target: Target, system_id: str, upload_id: str, built: Format2Manifest
) -> int:
    """The documents, then the manifest last; bytes written."""
    sent = 0
    for key, data in built.documents:
        sent += await target.put_bytes(key, data, "application/gzip")
    sent += await target.put_bytes(
        manifest_key(system_id, upload_id), encode_manifest(built.manifest), "application/json"
    )
    return sent


def make_duckdb(path: Path, rows: int, tag: str = "") -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE IF NOT EXISTS conversations (id VARCHAR, content VARCHAR)")
    con.execute(
        "INSERT INTO conversations SELECT 'c' || i || ?, "
        "repeat('session text about chunk ' || (i % 97) || ' ', 8) || md5(i::VARCHAR) "
        "FROM range(?) t(i)",
        [tag, rows],
    )
    con.execute("CHECKPOINT")
    con.close()
