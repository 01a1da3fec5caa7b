"""Format-2 uploads for ``bench/prune_bench.py``, made as the format-2 writer makes them
(PackWriter packs, ChunkRefs, ``build_manifest2`` with its index parts and chunk lists,
the documents before the manifest), straight into a local outbox; and simulated days of
uploads with the real ``run_prune`` every ``prune_interval_hours``. Not run on its own."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from akoshad.manifest.layout import encode_manifest, manifest_key, new_upload_id
from akoshad.storage.format2 import build_manifest2
from akoshad.storage.packs import PackWriter
from akoshad.storage.prune_exec import run_prune
from akoshad.storage.prune_result import PruneHooks, PruneResult
from akoshad.storage.refs import ChunkRef
from akoshad.storage.retention import Retention
from akoshad.storage.stored import StoredFile
from akoshad.targets.local import LocalTarget

MiB = 1024 * 1024


class Store:
    """A store of one chunked DuckDB file and small one-chunk files, and what the target
    holds of it: the chunk table (sha256 -> ref), kept true through prunes by the hooks."""

    def __init__(
        self, root: Path, system_id: str, db_chunks: int, chunk_size: int, small: int
    ) -> None:
        self.root = root
        self.system_id = system_id
        self.rng = random.Random(42)
        self.chunk_size = chunk_size
        self.db = [self.rng.randbytes(chunk_size) for _ in range(db_chunks)]
        self.small = {f"sessions/{i:05d}/state.json": self._small(i) for i in range(small)}
        self.table: dict[str, ChunkRef] = {}
        self.documents: frozenset[str] = frozenset()
        self.last_id: str | None = None
        self.added = 0  # bytes every upload ever wrote (no prune)
        self.staging = root.parent / "pack-staging"
        self.staging.mkdir(mode=0o700, exist_ok=True)

    def _small(self, i: int) -> bytes:
        return f'{{"session": {i}, "rev": {self.rng.random()}, "pad": "{"x" * 300}"}}'.encode()

    def change(self, churn: int, small_changes: int = 3) -> None:
        """``churn`` chunks of the DuckDB file and ``small_changes`` small files change."""
        for i in self.rng.sample(range(len(self.db)), min(churn, len(self.db))):
            self.db[i] = self.rng.randbytes(self.chunk_size)
        for path in self.rng.sample(sorted(self.small), min(small_changes, len(self.small))):
            self.small[path] = self._small(self.rng.randrange(1 << 20))

    def hooks(self) -> PruneHooks:
        async def forget(key: str) -> None:
            self.table = {s: r for s, r in self.table.items() if r.key != key}

        async def record(moved: list[ChunkRef]) -> None:
            self.table.update({r.sha256: r for r in moved})

        return PruneHooks(forget_pack=forget, record_chunks=record)

    def _write(self, key: str, data: bytes | Path) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if isinstance(data, Path):
            os.replace(data, path)
        else:
            path.write_bytes(data)
        self.added += path.stat().st_size

    def upload(self, when: datetime) -> str:
        """One upload of the whole store at ``when``: new chunks in one pack, then the
        documents not stored yet, then the manifest."""
        upload_id = new_upload_id(when, after=self.last_id)
        files: list[tuple[str, str, list[bytes]]] = [("reflection.duckdb", "duckdb", self.db)]
        files += [(p, "file", [d]) for p, d in self.small.items()]
        pending: dict[str, int] = {}
        stored: list[tuple[str, str, int, str, list[tuple[str, int]]]] = []
        with PackWriter(self.staging, self.system_id) as writer:
            for path, kind, chunks in files:
                ids = []
                for data in chunks:
                    sha = hashlib.sha256(data).hexdigest()
                    ids.append((sha, len(data)))
                    if sha not in self.table and sha not in pending:
                        pending[sha] = len(data)
                        for sealed in writer.add(sha, data):
                            self._pack(sealed, pending)
                whole = hashlib.sha256(b"".join(chunks)).hexdigest()
                stored.append((path, kind, sum(len(c) for c in chunks), whole, ids))
            last = writer.flush()
            if last is not None:
                self._pack(last, pending)
        entries = [
            StoredFile(path, kind, size, sha, tuple(self.table[c] for c, _ in ids))
            for path, kind, size, sha, ids in stored
        ]
        known = frozenset(k for k in self.documents if (self.root / k).exists())
        built = build_manifest2(
            system_id=self.system_id,
            upload_id=upload_id,
            files=entries,
            skipped={},
            known_documents=known,
            uploaded_at=when,
        )
        for key, data in built.documents:
            self._write(key, data)
        self._write(manifest_key(self.system_id, upload_id), encode_manifest(built.manifest))
        self.documents = built.document_keys
        self.last_id = upload_id
        return upload_id

    def _pack(self, sealed: object, pending: dict[str, int]) -> None:
        from akoshad.storage.packs import SealedPack

        assert isinstance(sealed, SealedPack)
        self._write(sealed.key, sealed.path)
        for slot in sealed.slots:
            size = pending[slot.name]
            self.table[slot.name] = ChunkRef(
                slot.name, size, sealed.key, slot.offset, slot.length, "none", "none"
            )

    def stored_bytes(self) -> int:
        base = self.root / "systems" / self.system_id
        return sum(p.stat().st_size for p in base.rglob("*") if p.is_file())


def work_times(start: datetime, days: int, every: timedelta) -> list[datetime]:
    """Upload times: every ``every`` from 9:00 to 18:00, Monday to Friday."""
    out, now, end = [], start, start + timedelta(days=days)
    while now < end:
        if now.weekday() < 5 and 9 <= now.hour < 18:
            out.append(now)
        now += every
    return out


async def simulate_days(
    store: Store,
    times: list[datetime],
    churn: int,
    policy: Retention,
    report: Callable[[datetime, int, PruneResult, int], None],
) -> None:
    """Upload at each of ``times``; prune (the real ``run_prune``) every
    ``prune_interval_hours`` of simulated time; ``report`` after each prune."""
    target = LocalTarget(store.root)
    await target.start()
    interval = timedelta(hours=policy.prune_interval_hours or 24)
    next_prune = times[0] + interval
    made = 0
    for when in [*times, times[-1] + interval]:
        while when >= next_prune:
            result = await run_prune(
                target,
                store.system_id,
                policy,
                staging_dir=store.staging.parent,
                now=next_prune,
                hooks=store.hooks(),
            )
            report(next_prune, made, result, store.stored_bytes())
            next_prune += interval
        if made < len(times):
            store.change(churn)
            store.upload(when)
            made += 1
