"""Bucket format 2 on the real local target: two uploads of a store (small files packed, a
DuckDB database chunked), each read back and restored through the no-follow FileSink."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import duckdb

from akoshad.manifest.layout import manifest_key, validate_manifest
from akoshad.restore.destdir import FileSink, open_dest, parent_dir
from akoshad.storage.fetch import WholeObjectRanges, fetch_file
from akoshad.storage.format2 import Format2Manifest, build_manifest2
from akoshad.storage.format2_read import read_entries
from akoshad.storage.stored import StoredFile
from akoshad.targets.local import LocalTarget
from tests.format2_store import Store, make_duckdb, write_upload

SID = "host-a"
UPLOADS = ("20261130T010000000000Z-aaaaaa", "20261130T020000000000Z-bbbbbb")


def make_store(root: Path) -> None:
    for i in range(250):  # past INDEX_INLINE_MAX: the entries go to index parts
        d = root / "sessions" / f"{i // 50:02d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"state-{i:03d}.json").write_text(json.dumps({"session": i, "notes": "n" * i}))
    make_duckdb(root / "reflection.duckdb", 20000)


def restore(dest: Path, files: list[StoredFile], target: LocalTarget) -> None:
    async def run() -> None:
        ranges = WholeObjectRanges(target)
        dest_fd = open_dest(dest)
        try:
            for f in files:
                dir_fd = parent_dir(dest_fd, f.path, False)
                sink = FileSink(dir_fd, f.path.rsplit("/", 1)[-1], f.mode)
                try:
                    await fetch_file(target, f, sink, ranges=ranges)
                finally:
                    os.close(dir_fd)
        finally:
            os.close(dest_fd)

    asyncio.run(run())


def read_manifest(target: LocalTarget, upload_id: str) -> dict[str, object]:
    async def run() -> bytes:
        return b"".join([p async for p in target.read(manifest_key(SID, upload_id))])

    out: dict[str, object] = json.loads(asyncio.run(run()))
    return out


def test_two_uploads_restore_identically_and_share_documents(tmp_path: Path) -> None:
    root, outbox = tmp_path / "data", tmp_path / "outbox"
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    make_store(root)
    target = LocalTarget(outbox)
    asyncio.run(target.start())
    store = Store(target, SID, staging)
    built: list[Format2Manifest] = []
    for n, upload_id in enumerate(UPLOADS):
        if n == 1:  # a session later: one small file changed, a few rows checkpointed
            (root / "sessions" / "03" / "state-170.json").write_text('{"session": 170}')
            make_duckdb(root / "reflection.duckdb", 40, tag="later")
        files = asyncio.run(store.store_tree(root))
        known = built[-1].document_keys if built else frozenset()
        b = build_manifest2(
            system_id=SID, upload_id=upload_id, files=files, skipped={}, known_documents=known
        )
        assert validate_manifest(b.manifest) == []
        asyncio.run(write_upload(target, SID, upload_id, b))
        built.append(b)
        manifest = read_manifest(target, upload_id)
        entries = asyncio.run(read_entries(target, manifest))
        assert len(entries) == 251
        dest = tmp_path / f"restore-{n}"
        restore(dest, entries, target)
        for f in entries:
            assert (dest / f.path).read_bytes() == (root / f.path).read_bytes(), f.path
        con = duckdb.connect(str(dest / "reflection.duckdb"), read_only=True)
        rows = con.execute("SELECT count(*) FROM conversations").fetchone()
        con.close()
        assert rows == (20000 + 40 * n,)
    first, second = built
    parts1 = {p["key"] for p in first.manifest["metadata"]["index"]["parts"]}
    parts2 = {p["key"] for p in second.manifest["metadata"]["index"]["parts"]}
    assert len(parts2 - parts1) <= 2  # the changed file's part, and the database's
    assert len(parts1 & parts2) >= len(parts1) - 2
    assert {k for k, _ in second.documents} <= (second.document_keys - first.document_keys)
    print(
        f"\nsecond upload: {len(second.documents)} new documents, "
        f"{second.document_bytes} bytes, of {len(second.document_keys)} referenced"
    )
