"""Finishing what a crash left: uploads whose manifest landed are committed, the objects
of the others are removed; after a lost state database the ledger is seeded from the
newest manifest in the target.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from typing import Any

from loguru import logger

from akoshad.errors import PermanentError, TransientError
from akoshad.manifest.layout import (
    FileEntry,
    ManifestError,
    entries_of,
    manifest_key,
    upload_prefix,
)
from akoshad.store.db import LedgerEntry, StateDB
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

    async def discard(self, target: Target, upload_id: str) -> None:
        """Delete the objects of a failed or interrupted upload (best effort)."""
        prefix = upload_prefix(self.system_id, upload_id)
        try:
            keys = [k async for k in target.list_keys(prefix)]
            if keys:
                await target.delete_keys(keys)
        except (TransientError, PermanentError) as exc:
            # an outage fails every attempt's cleanup alike: WARNING once, then DEBUG until
            # an upload or a cleanup succeeds (prune removes what is left behind)
            level = "DEBUG" if self._failing else "WARNING"
            self._failing = True
            logger.log(level, "could not remove objects of failed upload {}: {}", upload_id, exc)
            return
        self._failing = False


class Recovery:
    """Settles a crash's leftovers at start, before anything new is uploaded."""

    def __init__(self, state: StateDB, system_id: str, discarder: Discarder) -> None:
        self.state = state
        self.system_id = system_id
        self.discarder = discarder

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
            if manifest is not None:
                entries = entries_of(manifest)
                live = plan.get("live", {})
                groups = plan.get("groups", {})
                ledger_rows = [
                    _ledger_row(
                        target_name, e, groups.get(e.path, e.path), live.get(e.path), upload_id
                    )
                    for e in entries
                    if e.path in live
                ]
                await self.state.transaction(
                    functools.partial(
                        _commit_recovered,
                        target=target_name,
                        rows=ledger_rows,
                        removed=list(plan.get("removed", [])),
                        upload_id=upload_id,
                        files=len(plan.get("new", [])),
                    )
                )
                logger.info("recovered upload {} (its manifest had landed)", upload_id)
            else:
                await self.discarder.discard(target, upload_id)
                await self.state.transaction(
                    functools.partial(
                        StateDB.finish_upload,
                        upload_id=upload_id,
                        outcome="abandoned",
                        error="interrupted before its manifest",
                    )
                )
                logger.info("discarded the objects of interrupted upload {}", upload_id)

    async def rebuild_ledger(self, target: Target) -> int:
        """After a lost state database: seed the ledger from the newest manifest in the
        target. Stat identities are unknown, so reconcile hashes every file and uploads
        only what differs. Returns the number of entries restored."""
        from akoshad.manifest.read import newest_valid_manifest

        try:
            found = await newest_valid_manifest(target, self.system_id)
        except (TransientError, PermanentError) as exc:
            logger.warning("could not read earlier manifests from {}: {}", target.name, exc)
            return 0
        if found is None:
            return 0
        upload_id, manifest = found
        entries = entries_of(manifest)
        groups = {e.path for e in entries}
        rows = [
            _ledger_row(
                target.name,
                e,
                e.path[: -len(".wal")]
                if e.kind == "duckdb-wal" and e.path[: -len(".wal")] in groups
                else e.path,
                [-1, 0, 0, 0],
                upload_id,
            )
            for e in entries
        ]
        await self.state.transaction(lambda c: StateDB.write_ledger(c, target.name, rows, []))
        return len(rows)


def _commit_recovered(
    c: sqlite3.Connection,
    *,
    target: str,
    rows: list[LedgerEntry],
    removed: list[str],
    upload_id: str,
    files: int,
) -> None:
    StateDB.write_ledger(c, target, rows, removed)
    StateDB.finish_upload(c, upload_id=upload_id, outcome="completed", files=files)


def _ledger_row(
    target: str, e: FileEntry, group: str, live: list[int] | None, upload_id: str
) -> LedgerEntry:
    live_size, mtime_ns, ctime_ns, inode = live or [e.size, 0, 0, 0]
    parts = e.key.split("/")  # systems/{system_id}/uploads/{upload_id}/{name}
    return LedgerEntry(
        target=target,
        path=e.path,
        group_path=group,
        size=e.size,
        live_size=live_size,
        mtime_ns=mtime_ns,
        ctime_ns=ctime_ns,
        inode=inode,
        sha256=e.sha256,
        key=e.key,
        name=e.name,
        stored_size=e.stored_size,
        compression=e.compression,
        kind=e.kind,
        upload_id=parts[3] if len(parts) == 5 else upload_id,
        facts=None if e.facts is None else e.facts.to_json(),
        mode=e.mode,
    )


async def _read_json(target: Target, key: str) -> dict[str, Any] | None:
    from akoshad.manifest.read import read_manifest_bytes

    try:
        data = await read_manifest_bytes(target, key)
    except (KeyError, ManifestError):
        return None
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None
