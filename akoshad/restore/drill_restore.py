"""A drill's restore: every file of an upload fetched into the drill's private directory,
every SHA-256 checked, and what it found (:class:`DrillResult`, the ``last_drill`` object).

A file whose read meets a missing or damaged object is read once more, from the target
itself, before the loss counts (:func:`_fetch_confirmed`).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from akoshad.errors import (
    AkoshadError,
    IntegrityError,
    PermanentError,
    RestoreError,
    TransientError,
)
from akoshad.manifest.read import load_files
from akoshad.restore.destdir import DestError, open_dest
from akoshad.restore.groups import work_units
from akoshad.restore.parallel import weight_of
from akoshad.restore.readback import sink_for
from akoshad.storage.crypto import Identities
from akoshad.storage.fetch import RangeReader, fetch_file
from akoshad.storage.format2_read import Unreadable
from akoshad.storage.stored import StoredFile
from akoshad.targets import Target


@dataclass
class DrillResult:
    """What one drill found (``as_dict``: the ``last_drill`` object)."""

    upload_id: str
    ok: bool = False
    at: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    needs_identity: bool = False  # an encrypted upload, and no usable identity here
    # the stored objects found missing or damaged (the daemon sends their files again),
    # and whether the upload's documents could not be read (the next upload rewrites them)
    damaged_objects: set[str] = field(default_factory=set)
    documents_unreadable: bool = False
    identity_error: bool = False  # the identity was missing or did not open the upload

    def as_dict(self) -> dict[str, Any]:
        """``{at, ok, upload_id, problems}`` and the details (notes, files, bytes, seconds)."""
        rest = asdict(self)
        del rest["damaged_objects"], rest["documents_unreadable"], rest["identity_error"]
        head = {k: rest.pop(k) for k in ("at", "ok", "upload_id", "problems")}
        return {**head, **rest}


async def restore_all(
    target: Target,
    system_id: str,
    upload_id: str,
    root: Path,
    result: DrillResult,
    identities: Identities | None = None,
) -> list[StoredFile]:
    """Restore every file of the upload under ``root``, checking each SHA-256. Problems go
    into ``result``; returns the files restored intact. ``IdentityError`` (an encrypted
    upload, no or the wrong identity) is raised."""
    lost: list[Unreadable] = []
    try:
        _, entries = await load_files(target, system_id, upload_id, identities, lost=lost)
    except (RestoreError, ValueError, KeyError, TypeError) as exc:
        result.problems.append(f"manifest of {upload_id}: {exc}")
        result.documents_unreadable = True
        return []
    if lost:  # each such file a problem; the next upload writes its chunk list again
        result.problems += [u.reason for u in lost]
        result.documents_unreadable = True
    restored: list[StoredFile] = []
    dest_fd = await asyncio.to_thread(open_dest, root)
    try:
        await _restore_entries(target, entries, dest_fd, result, restored, identities)
    finally:
        os.close(dest_fd)
    return restored


async def _restore_entries(
    target: Target,
    entries: list[StoredFile],
    dest_fd: int,
    result: DrillResult,
    restored: list[StoredFile],
    identities: Identities | None = None,
) -> None:
    """One file after another (small files of a pack read together, ``groups``); a
    damaged file is a problem of its own. A target that fails, or a state_dir that takes
    no more (its disk full), is raised: the drill could not run, which says nothing of the
    upload (the daemon tries again later, ``drill_not_run``), not a failed drill."""
    done: dict[int, StoredFile] = {}
    for unit in work_units(entries, target):
        try:
            for i, entry in unit.files:
                reader = unit.reader or target
                if await _restore_one(target, reader, entry, dest_fd, result, identities):
                    done[i] = entry
        finally:
            if unit.reader is not None:
                unit.reader.release()
            restored[:] = [done[i] for i in sorted(done)]


async def _restore_one(
    target: Target,
    ranges: RangeReader,
    entry: StoredFile,
    dest_fd: int,
    result: DrillResult,
    identities: Identities | None = None,
) -> bool:
    """Restore one file into the drill directory: True when restored intact, False when it
    is a problem of its own; the target's errors and the disk's (``OSError``) are raised."""
    try:
        size = await _fetch_confirmed(target, ranges, entry, dest_fd, result, identities)
    except DestError as exc:
        result.problems.append(f"{entry.path}: {exc}")
        return False
    except AkoshadError as exc:
        if isinstance(exc, TransientError | PermanentError):
            raise
        result.problems.append(str(exc))  # IntegrityError names the path
        if isinstance(exc, IntegrityError) and exc.object_key is not None:
            result.damaged_objects.add(exc.object_key)
        return False
    except OSError as exc:
        raise OSError(
            exc.errno, f"{exc.strerror} (the drill's copy of {entry.path} in state_dir)"
        ) from None
    result.files += 1
    result.bytes += size
    return True


async def _fetch_into(
    target: Target,
    ranges: RangeReader | None,
    entry: StoredFile,
    dest_fd: int,
    identities: Identities | None,
) -> int:
    """Fetch ``entry`` into the drill directory, every byte checked; its size."""
    sink = await asyncio.to_thread(sink_for, dest_fd, entry, False)
    try:
        budget = weight_of(entry.stored_size)
        size, _sha = await fetch_file(
            target, entry, sink, ranges=ranges, memory_budget=budget, identities=identities
        )
    finally:
        os.close(sink.dir_fd)
    return size


async def _fetch_confirmed(
    target: Target,
    ranges: RangeReader,
    entry: StoredFile,
    dest_fd: int,
    result: DrillResult,
    identities: Identities | None,
) -> int:
    """:func:`_fetch_into`; a file whose read met a missing or damaged object is read once
    more, from the target itself (not a group's shared read): only a loss seen twice is
    one. A read that went wrong on its way would otherwise have the daemon send every file
    of that object again."""
    try:
        return await _fetch_into(target, ranges, entry, dest_fd, identities)
    except IntegrityError as exc:
        if exc.object_key is None:
            raise
        first = str(exc)
    size = await _fetch_into(target, None, entry, dest_fd, identities)
    result.notes.append(f"read again intact after a first read found: {first}")
    return size
