"""An in-process rig for the format-2 writer: the real drain, uploader, state database and a
real target (the local outbox, or SeaweedFS), synced pass after pass; uploads are read back
with the storage engine (``format2_read.read_entries`` + ``fetch.fetch_file``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from akoshad.config import Settings
from akoshad.manifest.layout import manifest_key
from akoshad.manifest.read import list_uploads, read_manifest_bytes
from akoshad.pipeline.capture.snapshot import Snapshotter
from akoshad.pipeline.drain import Drain
from akoshad.pipeline.feed import ChangeFeed
from akoshad.pipeline.report import PassReport
from akoshad.pipeline.stats import Stats
from akoshad.pipeline.upload import Uploader
from akoshad.storage.fetch import WholeObjectRanges, fetch_file
from akoshad.storage.format2_read import read_entries
from akoshad.storage.stored import StoredFile
from akoshad.store.db import StateDB
from akoshad.targets.base import Compression, StoredObject, Target
from akoshad.targets.local import LocalTarget


class CountingTarget(LocalTarget):
    """The local target, counting the PUTs (put_file and put_bytes) by key."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.puts: list[str] = []

    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        self.puts.append(key)
        return await super().put_file(key, source, compression)

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        self.puts.append(key)
        return await super().put_object_file(key, source, size, crc32)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        self.puts.append(key)
        return await super().put_bytes(key, data, content_type)


class HeldPuts(CountingTarget):
    """A counting local outbox whose PUTs of keys that ``held`` picks wait, once ``hold``
    is armed, for ``go`` (``holding`` is set when one waits)."""

    def __init__(self, root: Path, held: Callable[[str], bool]) -> None:
        super().__init__(root)
        self.held = held
        self.hold = False
        self.holding = asyncio.Event()
        self.go = asyncio.Event()

    async def _maybe_hold(self, key: str) -> None:
        if self.hold and self.held(key):
            self.holding.set()
            await self.go.wait()

    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        await self._maybe_hold(key)
        return await super().put_file(key, source, compression)

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        await self._maybe_hold(key)
        return await super().put_object_file(key, source, size, crc32)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        await self._maybe_hold(key)
        return await super().put_bytes(key, data, content_type)


@dataclass
class Rig:
    """One store synced to one target through the real pipeline."""

    settings: Settings
    store: Path
    state: StateDB
    target: Target
    feed: ChangeFeed
    drain: Drain
    uploader: Uploader
    reports: list[PassReport] = field(default_factory=list)
    # the plan each upload attempt recorded first, by upload id (a finished row keeps none)
    plans: dict[str, str] = field(default_factory=dict)

    @property
    def system_id(self) -> str:
        return self.settings.cloud_sync.system_id

    def write(self, rel: str, data: bytes) -> None:
        path = self.store / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    async def sync(self) -> list[PassReport]:
        """Queue what changed on disk and drain it; the pass reports."""
        await self.feed.reconcile()
        _ok, reports = await self.drain.until_empty()
        self.reports += reports
        return reports

    async def uploads(self) -> list[str]:
        return await list_uploads(self.target, self.system_id)

    async def manifest(self, upload_id: str) -> dict[str, Any]:
        data = await read_manifest_bytes(self.target, manifest_key(self.system_id, upload_id))
        parsed: dict[str, Any] = json.loads(data)
        return parsed

    async def files(self, upload_id: str) -> dict[str, StoredFile]:
        manifest = await self.manifest(upload_id)
        identities = self.settings.encryption.identities_if_set()  # None: none configured
        files = await read_entries(
            self.target, manifest, system_id=self.system_id, identities=identities
        )
        return {f.path: f for f in files}

    async def restore(self, upload_id: str) -> dict[str, bytes]:
        """Every file of the upload, fetched and checked by the storage engine."""
        ranges = WholeObjectRanges(self.target)
        identities = self.settings.encryption.identities_if_set()  # None: none configured
        out: dict[str, bytes] = {}
        for path, f in (await self.files(upload_id)).items():
            pieces: list[bytes] = []
            await fetch_file(self.target, f, pieces.append, ranges=ranges, identities=identities)
            out[path] = b"".join(pieces)
        return out

    def on_disk(self) -> dict[str, bytes]:
        return {
            p.relative_to(self.store).as_posix(): p.read_bytes()
            for p in sorted(self.store.rglob("*"))
            if p.is_file()
        }


async def open_rig(settings: Settings, target: Target, state_path: Path) -> Rig:
    """A rig over ``target`` (started here) with the state database at ``state_path``."""
    state = StateDB(state_path)
    await state.open()
    await target.start()
    stats = Stats()
    snapshotter = Snapshotter(settings.data_dir, settings.state_dir / "staging")
    cs = settings.cloud_sync
    uploader = Uploader(
        state=state,
        snapshotter=snapshotter,
        system_id=cs.system_id,
        stats=stats,
        staging_dir=settings.state_dir / "packs",
        enable_compression=cs.enable_compression,
        enable_deduplication=cs.enable_deduplication,
        retry_backoff_seconds=0.01,
    )
    drain = Drain(
        state=state,
        snapshotter=snapshotter,
        uploader=uploader,
        stats=stats,
        local=target,
        retry_backoff=0.01,
    )
    feed = ChangeFeed(settings, state, target, stats)
    rig = Rig(settings, settings.data_dir, state, target, feed, drain, uploader)
    begin = state.begin_upload

    async def begin_kept(
        upload_id: str, target: str, method: str, manifest: dict[str, Any]
    ) -> None:
        rig.plans[upload_id] = json.dumps(manifest)
        await begin(upload_id, target, method, manifest)

    state.begin_upload = begin_kept  # type: ignore[method-assign]
    return rig


def in_progress_again(c: sqlite3.Connection, plans: dict[str, str], *ids: str) -> int:
    """Inside a transaction: the history rows of ``ids`` (default: every upload of
    ``plans``) as a process killed between the manifest's PUT and the commit left them: in
    progress, with the plan they began with. Returns how many."""
    return c.executemany(
        "UPDATE uploads SET outcome = 'in_progress', manifest = ? WHERE upload_id = ?",
        [(plans[u], u) for u in ids or plans],
    ).rowcount


def killed_before_the_commit(c: sqlite3.Connection, plans: dict[str, str]) -> None:
    """Inside a transaction: the state as a process killed between the manifest's PUT and
    the commit left it (no ledger, no chunk table, every upload of ``plans`` in progress
    with its plan)."""
    c.execute("DELETE FROM ledger")
    c.execute("DELETE FROM chunks")
    in_progress_again(c, plans)


def rig_settings(tmp: Path, system_id: str, **overrides: Any) -> Settings:
    """Settings of a rig in ``tmp``: the store ``tmp/store`` (created), the state and the
    local outbox beside it, uploads for ``system_id``; ``overrides`` on top."""
    from akoshad.config import load_settings

    (tmp / "store").mkdir(exist_ok=True)
    tree: dict[str, Any] = {
        "data_dir": str(tmp / "store"),
        "state_dir": str(tmp / "state"),
        "local_target_dir": str(tmp / "outbox"),
        "cloud_sync": {"system_id": system_id},
        **overrides,
    }
    return load_settings(None, overrides=tree, environ={"HOME": str(tmp)})


async def open_sealed_rig(tmp_path: Path, system_id: str, *, with_identity: bool = False) -> Rig:
    """A rig over the local outbox in ``tmp_path`` whose uploads are sealed to a new
    identity (``tmp_path / "id.txt"``); the store is ``tmp_path / "store"`` (created).
    ``with_identity``: the identity is configured too (``encryption.identity_file``)."""
    from akoshad.pipeline.sealing import SealingSource
    from akoshad.storage.crypto import write_new_identity

    public = write_new_identity(tmp_path / "id.txt")
    encryption: dict[str, object] = {"recipients": [public]}
    if with_identity:
        encryption["identity_file"] = str(tmp_path / "id.txt")
    settings = rig_settings(tmp_path, system_id, encryption=encryption)
    rig = await open_rig(settings, LocalTarget(tmp_path / "outbox"), tmp_path / "state/state.db")
    rig.uploader.sealing = SealingSource(settings.encryption, tmp_path / "state", system_id)
    return rig


async def close_rig(rig: Rig) -> None:
    await rig.target.close()
    await rig.state.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
