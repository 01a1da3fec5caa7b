"""``akoshad uploads``: the uploads a target holds for a system id, read from it alone.

One listing of ``systems/{system_id}/`` finds the uploads (those with a manifest) and the
objects in each upload's own folder. Each manifest is read with its size bound and checked
as restore checks it (format 1 or 2); one that cannot be trusted is listed as damaged with
its reason, the others are still listed. "Stored" is what the upload added: the bytes of the
objects in its own folder (sizes taken from its manifest's whole-object entries, the rest
asked of the target), and, in format 2, of the shared objects (packs, index parts, chunk
lists) that no earlier upload references, and of the whole objects a pruned upload left in
its folder for a kept one: each stored object is counted once. An upload of
which some files' chunk lists are missing or damaged is not damaged: restore gets back every
other file, so the row names those files (``unrestorable``) and counts them in its files.

An encrypted upload's entries are in sealed index parts: with the identity they are read
like any others (real file counts and stored bytes); without it, or with one that is not a
recipient, the row says so (``encrypted``, ``locked``: why) and its files and stored bytes
are unknown (``null``), never guessed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any, TypeVar

from akoshad.errors import PermanentError, TransientError
from akoshad.manifest.layout import (
    ManifestError,
    manifest_key,
    system_prefix,
    upload_ids_from_keys,
    upload_time,
    validate_manifest,
)
from akoshad.manifest.read import another_upload, read_manifest_bytes
from akoshad.names import printable
from akoshad.restore.select import uploaded_at
from akoshad.storage.chunk_lists_read import Unreadable
from akoshad.storage.crypto import Identities, IdentityNeeded, NotForThisIdentity
from akoshad.storage.format2_read import is_encrypted, read_entries
from akoshad.storage.prune_load import DatedLister
from akoshad.targets.base import ListsSystems, Target

IN_FLIGHT = 8
# manifests whose documents (chunk lists, index parts) are read at once: each may take up to
# format2_read.MAX_TOTAL_DECODED_BYTES, and several times that parsed
PARSING = 2
_T = TypeVar("_T")


@dataclass(frozen=True)
class UploadRow:
    """One upload as ``akoshad uploads`` shows it (``--json``: these fields)."""

    upload_id: str
    uploaded_at: str | None  # the manifest's, else the time in the upload id
    files: int | None  # None: not known (damaged, or encrypted and not read)
    stored_bytes: int | None  # its own folder (manifest included), and the packs/documents
    # it is the first upload to reference; None: encrypted and not read
    total_size_bytes: int | None
    damaged: str | None = None  # why the manifest cannot be trusted
    encrypted: bool = False  # its entries are in sealed index parts
    locked: str | None = None  # why an encrypted upload's entries were not read
    # the files it cannot restore (each with why: its chunk list lost), the others restore
    unrestorable: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def _bounded(jobs: Sequence[Callable[[], Awaitable[_T]]], limit: int) -> list[_T]:
    gate = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[_T]]) -> _T:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(run(job) for job in jobs)))


NEEDS_IDENTITY = "needs the identity (--identity FILE or encryption.identity_file)"
OTHER_KEYS = "encrypted to other keys than the identity's"


class _Locked(Exception):
    """An encrypted upload whose entries the identity in hand cannot read."""

    def __init__(self, why: str, manifest: dict[str, Any]) -> None:
        super().__init__(why)
        self.why = why
        self.manifest = manifest


@dataclass
class _Parsed:
    manifest: dict[str, Any]
    files: int  # the lost ones included
    sizes: dict[str, int]  # the stored sizes it states for whole objects
    shared: set[str]  # the shared objects it references (packs, index parts, chunk lists)
    lost: list[Unreadable]  # the files whose chunk list is missing or damaged


async def _parse(
    target: Target,
    system_id: str,
    upload_id: str,
    data: bytes,
    identities: Identities | None,
    gate: asyncio.Semaphore,
) -> _Parsed:
    """The manifest read as restore reads it. ManifestError (one line) when it cannot be
    trusted; ``_Locked`` when it is encrypted and ``identities`` cannot read it. Its
    documents are read and its files held only within ``gate`` (memory)."""
    try:
        manifest = await asyncio.to_thread(json.loads, data)
    except (ValueError, RecursionError):  # RecursionError: absurd nesting
        raise ManifestError("not valid JSON") from None
    problems = [p for p in validate_manifest(manifest, now=None) if "out of range" not in p]
    if problems:
        raise ManifestError(problems[0])
    moved = another_upload(manifest, upload_id)
    if moved is not None:
        raise ManifestError(moved)
    if is_encrypted(manifest) and identities is None:
        raise _Locked(NEEDS_IDENTITY, manifest)
    shared: set[str] = set()
    lost: list[Unreadable] = []
    async with gate:
        try:
            files = await read_entries(
                target, manifest, system_id=system_id, documents=shared, identities=identities,
                lost=lost,
            )  # fmt: skip
        except NotForThisIdentity:
            raise _Locked(OTHER_KEYS, manifest) from None
        except IdentityNeeded:  # a sealed document in a manifest not marked encrypted
            raise _Locked(NEEDS_IDENTITY, manifest) from None
        sizes = {f.whole.key: f.whole.stored_size for f in files if f.whole is not None}
        shared.update(c.key for f in files for c in f.chunks)
        count = len(files) + len(lost)
        del files  # the chunks of every file: what the gate bounds
    return _Parsed(manifest, count, sizes, shared, lost)


def _shown_time(manifest: Mapping[str, Any] | None, upload_id: str) -> str | None:
    when = uploaded_at(dict(manifest)) if manifest is not None else None
    when = when or upload_time(upload_id)
    return when.isoformat() if when is not None else None


async def _row(
    target: Target,
    system_id: str,
    upload_id: str,
    keys: list[str],
    identities: Identities | None,
    gate: asyncio.Semaphore,
    listed: Mapping[str, int],
) -> tuple[UploadRow, set[str]]:
    """The row (stored bytes: its own folder only, so far) and the shared objects the
    upload references."""
    key = manifest_key(system_id, upload_id)
    manifest: dict[str, Any] | None = None
    files: int | None = None
    known: dict[str, int] = {}
    damaged = locked = None
    shared: set[str] = set()
    unrestorable: list[str] = []
    try:
        data = await read_manifest_bytes(target, key)
        known[key] = len(data)
        parsed = await _parse(target, system_id, upload_id, data, identities, gate)
        manifest, files, shared = parsed.manifest, parsed.files, parsed.shared
        unrestorable = [u.reason for u in parsed.lost]
        known.update({k: v for k, v in parsed.sizes.items() if k in keys})
        # whole objects in another folder: shared, charged below unless a listed upload
        # holds that folder (a pruned format-1 upload's objects a kept upload still uses)
        shared.update(k for k in parsed.sizes if k not in keys)
    except KeyError:
        damaged = "the manifest vanished while listing"
    except ManifestError as exc:
        damaged = str(exc)
    except _Locked as exc:
        locked, manifest = exc.why, exc.manifest
    stored: int | None = None
    if locked is None:
        stored = sum(known.values())
        for other in keys:
            if other not in known:
                size = listed.get(other)
                stored += (await target.head(other) if size is None else size) or 0
    total = manifest.get("total_size_bytes") if manifest is not None else None
    row = UploadRow(
        upload_id=upload_id,
        uploaded_at=_shown_time(manifest, upload_id),
        files=files,
        stored_bytes=stored,
        total_size_bytes=total if isinstance(total, int) else None,
        damaged=damaged,
        encrypted=manifest is not None and is_encrypted(manifest),
        locked=locked,
        unrestorable=unrestorable,
    )
    return row, shared


async def _add_shared(
    target: Target,
    found: Sequence[tuple[UploadRow, set[str]]],
    owned: set[str],
    listed: Mapping[str, int],
) -> list[UploadRow]:
    """Each row's stored bytes plus the shared objects (format 2, and whole objects left in
    the folder of an upload no longer listed) no earlier upload references: every stored
    object is counted once, by the first upload that needs it; ``owned`` (in a listed
    upload's folder) are counted there."""
    seen: set[str] = set(owned)
    firsts: list[list[str]] = []
    for _, shared in found:
        firsts.append(sorted(shared - seen))
        seen |= shared
    seen -= owned
    sizes: dict[str, int | None] = {k: listed[k] for k in seen if k in listed}
    keys = sorted(seen - sizes.keys())  # not listed: missing, or stored since the listing
    heads = await _bounded([partial(target.head, k) for k in keys], IN_FLIGHT)
    sizes.update(zip(keys, heads, strict=True))
    return [
        row
        if row.stored_bytes is None
        else replace(row, stored_bytes=row.stored_bytes + sum(sizes[k] or 0 for k in first))
        for (row, _), first in zip(found, firsts, strict=True)
    ]


async def upload_rows(
    target: Target, system_id: str, identities: Identities | None = None
) -> list[UploadRow]:
    """Every upload of ``system_id`` in ``target``, oldest first; encrypted ones read with
    ``identities`` when given. The target's own errors (a missing bucket, refused
    credentials) pass through: they are not "no uploads"."""
    prefix = system_prefix(system_id)
    listed: dict[str, int] = {}
    if isinstance(target, DatedLister):
        # one listing of the system's folder has every object's size (a page per 1,000
        # keys), where a HEAD per shared object (pack, document) would ask them one by one
        async for key, size, _ in target.list_stored(prefix.removesuffix("uploads/")):
            listed[key] = size
        keys = [k for k in listed if k.startswith(prefix)]
    else:
        keys = [k async for k in target.list_keys(prefix)]
    uploads = upload_ids_from_keys(keys, system_id)
    folders: dict[str, list[str]] = {u: [] for u in uploads}
    for k in keys:
        owner = _folder_of(k, system_id)
        if owner in folders:
            folders[owner].append(k)
    gate = asyncio.Semaphore(PARSING)
    jobs = [
        (lambda u=u: _row(target, system_id, u, folders[u], identities, gate, listed))
        for u in uploads
    ]
    owned = {k for u in uploads for k in folders[u]}
    return await _add_shared(target, await _bounded(jobs, IN_FLIGHT), owned, listed)


def _folder_of(key: str, system_id: str) -> str:
    """The upload id whose folder holds ``key`` ("" when it is in none)."""
    head = system_prefix(system_id)  # systems/{system_id}/uploads/
    rest = key[len(head) :] if key.startswith(head) else ""
    return rest.split("/", 1)[0] if "/" in rest else ""


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError(n)


LOCKED_CELL = "encrypted"  # files and stored bytes of an encrypted upload not read


SHOWN_LOST = 3  # files an upload cannot restore named in its row (JSON: all of them)


def _partial(lost: Sequence[str]) -> str:
    """What a row says of an upload that restores all but the files ``lost`` names."""
    more = len(lost) - SHOWN_LOST
    named = "; ".join(lost[:SHOWN_LOST]) + (f"; and {more} more" if more > 0 else "")
    return f"restores all but {len(lost)} file(s): {named}"


def render_table(rows: Sequence[UploadRow]) -> str:
    """The human form: one line per upload under a header, a damaged one with its reason,
    one that restores all but some files (their chunk lists lost) naming them;
    an encrypted upload read without its identity shows ``encrypted`` where its files and
    stored bytes would be, and a last line says what reads it."""
    head = ("UPLOAD_ID", "TIME", "FILES", "STORED", "TOTAL")
    lines = [
        (
            r.upload_id,
            r.uploaded_at or "?",
            LOCKED_CELL if r.locked else "?" if r.files is None else str(r.files),
            LOCKED_CELL if r.locked else _size(r.stored_bytes),
            _size(r.total_size_bytes),
        )
        for r in rows
    ]
    widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
    out = []
    for cells, row in zip([head, *lines], [None, *rows], strict=True):
        text = "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        if row is not None and row.damaged is not None:
            text += f"  DAMAGED: {row.damaged}"
        elif row is not None and row.unrestorable:
            text += f"  PARTIAL: {_partial(row.unrestorable)}"
        out.append(printable(text.rstrip()))  # a file name with a newline, an escape
    reasons = sorted({r.locked for r in rows if r.locked})
    if reasons:
        out.append(f"{LOCKED_CELL}: files and stored bytes unknown, {'; '.join(reasons)}")
    return "\n".join(out)


OTHER_SYSTEMS_SHOWN = 5


async def no_uploads(target: Target, system_id: str) -> str:
    """``no uploads for system X in T``, and which system ids ``target`` does hold when it
    holds others (a new machine's host name makes another default system_id): one listing,
    left out when the target cannot say."""
    line = f"no uploads for system {system_id} in {target.name}"
    if not isinstance(target, ListsSystems):
        return line
    try:
        ids = await target.system_ids(OTHER_SYSTEMS_SHOWN + 2)
    except (TransientError, PermanentError, OSError):
        return line
    others = [i for i in ids if i != system_id]
    if not others:
        return line
    shown = ", ".join(others[:OTHER_SYSTEMS_SHOWN]) + (
        ", ..." if len(others) > OTHER_SYSTEMS_SHOWN else ""
    )
    return (
        f"{line}; it holds system id(s) {shown}: name one with --system-id, or set "
        "cloud_sync.system_id to go on with its uploads (then akoshad takeover)"
    )
