"""Finishing what a crash left: uploads whose manifest landed are committed (ledger and
chunk table from the manifest), the objects and packs of the others are removed (shared
documents are left to prune); after a lost state database the ledger and the chunk table
are seeded from the newest manifest in the target (format 1 or 2). An encrypted manifest
that landed but cannot be read here (no identity) is kept as the completed upload it is,
and its files are sent again; only a manifest that is itself invalid or unreadable is
removed with its attempt's objects.

An encrypted upload's entries are in sealed index parts: they are read with the identity
(``encryption.identity_file``) when it is readable here, and its sealed chunks enter the
ledger and the chunk table under their keyed names (``NameKey.name``) with the target's
name key, once that key is shown to be the one the upload was sealed with (its first index
part's name is the key's name of its contents). Without the identity, or when the upload
was sealed under another key (another recipient list), nothing is seeded and one line
says why: the store is then sent again once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from loguru import logger

from akoshad.errors import PermanentError, TransientError
from akoshad.fileio import LiveStat
from akoshad.manifest.layout import (
    ManifestError,
    in_future,
    manifest_key,
    upload_prefix,
    validate_manifest,
)
from akoshad.pipeline.plan import ledger_row
from akoshad.pipeline.sealing import Sealing, SealingSource
from akoshad.storage.crypto import Identities, IdentityError
from akoshad.storage.format2_read import is_encrypted
from akoshad.storage.prune_plan import upload_id_time
from akoshad.storage.refs import ChunkRef
from akoshad.storage.stored import StoredFile
from akoshad.store.db import StateDB
from akoshad.targets.base import Target


class Discarder:
    """Removes the objects of uploads that did not complete. An outage fails every
    attempt's cleanup alike: WARNING once, then DEBUG until a cleanup or an upload works."""

    def __init__(self, system_id: str) -> None:
        self.system_id = system_id
        self._failing = False

    def ok(self) -> None:
        """An upload went through: the next cleanup failure is news again."""
        self._failing = False

    async def discard(self, target: Target, upload_id: str, packs: Sequence[str] = ()) -> None:
        """Delete the objects of a failed or interrupted upload, and ``packs`` (its packs
        no committed chunk lives in); best effort."""
        prefix = upload_prefix(self.system_id, upload_id)
        manifest = manifest_key(self.system_id, upload_id)
        try:
            keys = [k async for k in target.list_keys(prefix)] + list(packs)
            if manifest in keys:  # landed after all (an answer lost): it goes first, alone,
                # so that a deletion failing half-way never leaves it naming deleted objects
                await target.delete_keys([manifest])
                keys.remove(manifest)
            if keys:
                await target.delete_keys(keys)
        except (TransientError, PermanentError, OSError) as exc:
            # an outage fails every attempt's cleanup alike: WARNING once, then DEBUG until
            # an upload or a cleanup succeeds (prune removes what is left behind); an
            # outbox's listing raises the OSError itself (a disk failing, its path no
            # directory): the upload's failure, not a broken state_dir's
            level = "DEBUG" if self._failing else "WARNING"
            self._failing = True
            logger.log(level, "could not remove objects of failed upload {}: {}", upload_id, exc)
            return
        self._failing = False


async def discard_attempt(
    state: StateDB, discarder: Discarder, target: Target, upload_id: str
) -> None:
    """Remove what a lost attempt wrote: its upload folder and the packs it sealed that no
    chunk-table row references; its pack records go (prune sweeps what is left)."""
    packs = await state.orphan_packs(target.name, upload_id)
    await discarder.discard(target, upload_id, packs)
    await state.transaction(lambda c: StateDB.forget_upload_packs(c, upload_id))


class Recovery:
    """Settles a crash's leftovers at start, before anything new is uploaded."""

    def __init__(
        self,
        state: StateDB,
        system_id: str,
        discarder: Discarder,
        sealing: SealingSource | None = None,
    ) -> None:
        self.state = state
        self.system_id = system_id
        self.discarder = discarder
        self.sealing = sealing

    # ---- recovery ----------------------------------------------------------------------
    async def recover(self, targets: dict[str, Target]) -> None:
        """Settle uploads a crash interrupted: commit those whose manifest landed,
        delete the objects of the others. In-flight queue rows go back to pending."""
        await self.state.recover_in_flight()
        for upload_id, target_name, plan in await self.state.in_progress_uploads():
            target = targets.get(target_name)
            if target is None:
                continue
            key = manifest_key(self.system_id, upload_id)
            manifest = await _read_json(target, key)
            if manifest is not None and is_encrypted(manifest):
                await self._recover_sealed(target, upload_id, plan, manifest)
                continue
            files = None if manifest is None else await self._files(target, manifest)
            if files is not None:
                await self._commit_recovered(target_name, upload_id, plan, files)
                logger.info("recovered upload {} (its manifest had landed)", upload_id)
            else:
                await discard_attempt(self.state, self.discarder, target, upload_id)
                await self.state.transaction(
                    functools.partial(
                        StateDB.finish_upload,
                        upload_id=upload_id,
                        outcome="abandoned",
                        error="interrupted before its manifest",
                    )
                )
                logger.info("discarded the objects of interrupted upload {}", upload_id)

    async def _recover_sealed(
        self, target: Target, upload_id: str, plan: dict[str, Any], manifest: dict[str, Any]
    ) -> None:
        """An encrypted upload whose manifest landed is a completed upload, never deleted:
        committed from its sealed index when the identity is readable here (and the target's
        name key is the one it was sealed with), else kept as it is, its files sent again
        (the ledger does not know them)."""
        again = "it is kept, and its files will be sent again"
        found = await self._sealed_files(target, upload_id, manifest, again=again)
        if found is not None:
            _, files, sealing = found
            await self._commit_recovered(target.name, upload_id, plan, files, sealing)
            logger.info("recovered upload {} (its manifest had landed)", upload_id)
            return

        def keep(c: sqlite3.Connection) -> None:
            StateDB.forget_upload_packs(c, upload_id)
            StateDB.finish_upload(c, upload_id=upload_id, outcome="completed", files=0)

        await self.state.transaction(keep)

    async def _files(
        self, target: Target, manifest: dict[str, Any], identities: Identities | None = None
    ) -> list[StoredFile] | None:
        """The files of a landed manifest (index parts and chunk lists read, sealed ones
        with ``identities``), or None when it cannot be read whole (the attempt is then
        discarded). A file whose chunk list is missing or damaged is left out: not known
        as stored, it is sent again (with its list)."""
        from akoshad.storage.format2_read import Unreadable, read_entries

        lost: list[Unreadable] = []
        try:
            files = await read_entries(
                target, manifest, system_id=self.system_id, identities=identities, lost=lost
            )
        except ManifestError as exc:
            logger.warning("manifest of an interrupted upload is unreadable: {}", exc)
            return None
        except IdentityError:  # encrypted: the daemon holds no identity (sent again)
            logger.info("an encrypted manifest is not read without the identity")
            return None
        for u in lost:
            logger.warning("{}: it will be sent again", u.reason)
        return files

    async def _commit_recovered(
        self,
        target: str,
        upload_id: str,
        plan: dict[str, Any],
        files: list[StoredFile],
        sealing: Sealing | None = None,
    ) -> None:
        live = plan.get("live", {})
        groups = plan.get("groups", {})
        rows = [
            ledger_row(
                target,
                f,
                group=groups.get(f.path, f.path),
                live=_live(live.get(f.path), f.size),
                upload_id=upload_id,
                chunk_ids=_chunk_ids(f, sealing),
            )
            for f in files
            if f.path in live
        ]
        chunks = _chunk_table(files, sealing)
        removed = list(plan.get("removed", []))
        new = len(plan.get("new", []))

        def commit(c: sqlite3.Connection) -> None:
            StateDB.write_ledger(c, target, rows, removed)
            StateDB.write_chunks(c, target, chunks)
            StateDB.forget_upload_packs(c, upload_id)
            StateDB.finish_upload(c, upload_id=upload_id, outcome="completed", files=new)

        await self.state.transaction(commit)

    async def rebuild_lost_ledger(self, target: Target) -> int:
        """:meth:`rebuild_ledger` after the state database was found corrupt, and says so."""
        n = await self.rebuild_ledger(target)
        logger.warning("ledger rebuilt from {}: {} file(s) known", target.name, n)
        return n

    async def rebuild_ledger(self, target: Target) -> int:
        """After a lost state database: seed the ledger from the newest manifest in the
        target (an encrypted one read with the identity: see the module docstring). Stat
        identities are unknown, so reconcile hashes every file and uploads only what
        differs. Returns the number of entries restored."""
        try:
            found = await self._newest_files(target)
        except (TransientError, PermanentError) as exc:
            logger.warning("could not read earlier manifests from {}: {}", target.name, exc)
            return 0
        if found is None:
            return 0
        upload_id, files, sealing = found
        paths = {f.path for f in files}
        rows = [
            ledger_row(
                target.name,
                f,
                group=_group_of(f, paths),
                live=LiveStat(-1, 0, 0, 0),
                upload_id=upload_id,
                chunk_ids=_chunk_ids(f, sealing),
            )
            for f in files
        ]
        chunks = _chunk_table(files, sealing)

        made = upload_id_time(upload_id)
        at = made.timestamp() if made is not None else time.time()

        def seed(c: sqlite3.Connection) -> None:
            StateDB.write_ledger(c, target.name, rows, [])
            StateDB.write_chunks(c, target.name, chunks)
            StateDB.adopt_upload(c, upload_id, target.name, at)  # the ledger is its files

        await self.state.transaction(seed)
        return len(rows)

    async def _newest_files(
        self, target: Target
    ) -> tuple[str, list[StoredFile], Sealing | None] | None:
        """The newest upload not dated in the future whose manifest (format 1 or 2) reads
        whole, with its files (and the sealing its chunks are keyed with when it is
        encrypted); a malformed newer one is skipped with a warning. The newest readable
        one encrypted, and not readable here: None, after one line saying why."""
        from akoshad.manifest.read import list_uploads

        for upload_id in reversed(await list_uploads(target, self.system_id)):
            if in_future(upload_id):
                logger.warning("ignoring upload {}: it is dated in the future", upload_id)
                continue
            manifest = await _read_json(target, manifest_key(self.system_id, upload_id))
            problems = [] if manifest is None else validate_manifest(manifest, now=None)
            problems = [
                p for p in problems if "out of range" not in p
            ]  # Akosha's bounds: read all the same
            if manifest is not None and not problems and is_encrypted(manifest):
                return await self._sealed_files(target, upload_id, manifest)
            files = None if manifest is None or problems else await self._files(target, manifest)
            if files is not None:
                return upload_id, files, None
            logger.warning("ignoring upload {}: its manifest is unreadable or invalid", upload_id)
        return None

    async def _sealed_files(
        self,
        target: Target,
        upload_id: str,
        manifest: dict[str, Any],
        *,
        again: str = "so the whole store will be sent again once",
    ) -> tuple[str, list[StoredFile], Sealing] | None:
        """The files of the encrypted upload ``upload_id`` read with the identity, and the
        target's sealing when its name key is the one the upload was sealed with; else
        None, after one warning that ends with ``again`` (what follows from it)."""
        from akoshad.pipeline.sealed_ledger import sealed_with

        if self.sealing is None:  # its chunks could not be reused by a clear upload anyway
            logger.warning(
                "upload {} is encrypted and encryption is off here (no "
                "encryption.recipients): the uploads made here are NOT encrypted (configure "
                "the recipients it was sealed to, to go on encrypted); the ledger is not "
                "rebuilt from it, {}",
                upload_id,
                again,
            )
            return None
        identities = await asyncio.to_thread(self.sealing.identities_here)
        if identities is None:
            logger.warning(
                "upload {} is encrypted and no identity is readable here "
                "(encryption.identity_file): the ledger cannot be rebuilt from it, {}",
                upload_id,
                again,
            )
            return None
        try:
            files = await self._files(target, manifest, identities)
            sealing = await self.sealing.for_target(target)
            same_key = sealing is not None and await sealed_with(
                target, self.system_id, manifest, sealing, identities
            )
        except IdentityError as exc:
            logger.warning("upload {} cannot be read here ({}), {}", upload_id, exc, again)
            return None
        if files is None or sealing is None or not same_key:
            why = "cannot be read whole" if files is None else "was sealed under another name key"
            logger.warning("upload {} {} (another recipient list?), {}", upload_id, why, again)
            return None
        return upload_id, files, sealing


def _chunk_id(ref: ChunkRef, sealing: Sealing | None) -> str:
    """A chunk's identity in the ledger and chunk table: its keyed name when sealed."""
    return (
        ref.sha256 if sealing is None or ref.encryption != "age" else sealing.chunk_id(ref.sha256)
    )


def _chunk_ids(f: StoredFile, sealing: Sealing | None) -> list[tuple[str, int]] | None:
    """A file's chunk identities for its ledger row when they are not their sha256 (sealed
    chunks: their keyed names); None otherwise."""
    return None if sealing is None else [(_chunk_id(c, sealing), c.size) for c in f.chunks]


def _chunk_table(files: list[StoredFile], sealing: Sealing | None) -> dict[str, ChunkRef]:
    """The chunk-table rows of ``files``, by identity."""
    return {_chunk_id(c, sealing): c for f in files for c in f.chunks}


def _group_of(f: StoredFile, paths: set[str]) -> str:
    """The capture group of a file: a DuckDB WAL belongs to its database."""
    base = f.path[: -len(".wal")]
    return base if f.kind == "duckdb-wal" and base in paths else f.path


def _live(live: list[int] | None, size: int) -> LiveStat:
    live_size, mtime_ns, ctime_ns, inode = live or [size, 0, 0, 0]
    return LiveStat(live_size, mtime_ns, ctime_ns, inode)


async def _read_json(target: Target, key: str) -> dict[str, Any] | None:
    from akoshad.manifest.read import read_manifest_bytes

    try:
        data = await read_manifest_bytes(target, key)
    except (KeyError, ManifestError):
        return None
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: absurd nesting
        return None
    return parsed if isinstance(parsed, dict) else None
