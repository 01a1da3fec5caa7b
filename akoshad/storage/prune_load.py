"""Read what a prune needs from a target: the listing with sizes, every manifest, and the
index parts, chunk lists and chunk list parts the kept ones name
(``prune_refs.documents_needed``).

Everything read is bounded (a manifest by ``max_manifest``, a document by
``max_document``) and goes through ``documents`` (the codec the format-2 writer and the
restore reader use). A kept upload whose manifest is damaged (not JSON), or whose document
(index part, chunk list) is missing or damaged, references what is unknown: when the target
dates what it stores (:class:`DatedLister`: both targets do), the upload is marked so
(``ManifestRefs.unreadable``) and the planner keeps every object stored up to its manifest,
so the rest of the prune goes on (``prune_plan``); otherwise the prune stops before it
deletes anything (:class:`PruneError` names the object). A damaged manifest is dated by its
upload id, so retention may drop it like any other. A manifest that parses but cannot be
understood stops the prune. The sealed documents of an
encrypted upload are opened with ``identities``; without them (or with the wrong ones) the
``IdentityError`` passes through, and nothing is deleted either, unless the upload names
its objects in a readable list (``metadata.index.objects``, in its manifest): that list is
all a prune needs of it, with or without the identity. With ``resealing`` too (the
recipients and name key configured now), a sealed upload's documents are opened even so:
when the key named them all, its packs may be repacked (``ManifestRefs.rewritable``); when
the identity cannot open them, or one is missing or damaged, the objects list stands.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

from akoshad.names import MANIFEST_NAME
from akoshad.storage.crypto import Identities
from akoshad.storage.documents import (
    MAX_DOCUMENT_BYTES,
    DocumentError,
    DocumentMissing,
    fetch_stored,
)
from akoshad.storage.prune_documents import (
    DocumentReader,
    ManifestOpener,
    PruneError,
    UnreadableDocuments,
)
from akoshad.storage.prune_plan import upload_id_time
from akoshad.storage.prune_refs import ManifestRefs, inline_names, undated, unknown_format
from akoshad.storage.retention import Upload
from akoshad.storage.sealed_documents import Resealing
from akoshad.targets.base import Target

MAX_MANIFEST_BYTES = 64 * 1024 * 1024
CONCURRENCY = 16
T = TypeVar("T")


@runtime_checkable
class DatedLister(Protocol):
    """Optional target extension: keys with their stored sizes and times (seconds since
    the epoch) in one listing (saves one HEAD per key; S3's ListObjectsV2 has both)."""

    def list_stored(self, prefix: str) -> AsyncIterator[tuple[str, int, float]]: ...


@dataclass(frozen=True)
class LoadedManifest:
    """One manifest as read: its JSON, its time (None when neither ``uploaded_at`` nor the
    upload id carries one) and what it references."""

    upload_id: str
    key: str
    doc: dict[str, Any]
    uploaded_at: datetime | None
    refs: ManifestRefs


@dataclass(frozen=True)
class PruneInput:
    """What ``load_for_prune`` read: manifests, decoded documents by key, listing (key ->
    stored size) of ``systems/{system_id}/`` and, from a target that dates what it stores,
    each key's stored time (seconds since the epoch)."""

    system_id: str
    manifests: tuple[LoadedManifest, ...]
    documents: dict[str, dict[str, Any]]
    listing: dict[str, int]
    times: dict[str, float] = field(default_factory=dict)

    def refs(self) -> list[ManifestRefs]:
        return [m.refs for m in self.manifests]

    def uploads(self) -> list[Upload]:
        """The uploads with a time, for ``apply_retention``."""
        return [Upload(m.upload_id, m.uploaded_at) for m in self.manifests if m.uploaded_at]

    def untimed(self) -> list[str]:
        """Uploads without a time: never removed."""
        return [m.upload_id for m in self.manifests if m.uploaded_at is None]

    def by_key(self) -> dict[str, LoadedManifest]:
        return {m.key: m for m in self.manifests}


async def _bounded_gather(items: Iterable[Awaitable[T]], limit: int) -> list[T]:
    sem = asyncio.Semaphore(limit)

    async def one(aw: Awaitable[T]) -> T:
        async with sem:
            return await aw

    return list(await asyncio.gather(*(one(a) for a in items)))


async def list_stored(
    target: Target, prefix: str, concurrency: int = CONCURRENCY
) -> tuple[dict[str, int], dict[str, float]]:
    """Every key under ``prefix`` with its stored size (keys gone meanwhile are left out),
    and its stored time when the target dates what it stores (else no times)."""
    if isinstance(target, DatedLister):
        sizes: dict[str, int] = {}
        times: dict[str, float] = {}
        async for key, size, when in target.list_stored(prefix):
            sizes[key], times[key] = size, when
        return sizes, times
    keys = [k async for k in target.list_keys(prefix)]
    found = await _bounded_gather((target.head(k) for k in keys), concurrency)
    return {k: n for k, n in zip(keys, found, strict=True) if n is not None}, {}


def manifest_keys(prefix: str, listing: Iterable[str]) -> dict[str, str]:
    """Upload id -> manifest key, for ``{prefix}uploads/{id}/manifest.json``."""
    base = prefix + "uploads/"
    out: dict[str, str] = {}
    for key in listing:
        if key.startswith(base):
            upload_id, _, rest = key[len(base) :].partition("/")
            if rest == MANIFEST_NAME and upload_id:
                out[upload_id] = key
    return out


def _time_of(doc: dict[str, Any], upload_id: str) -> datetime | None:
    raw = doc.get("uploaded_at")
    if isinstance(raw, str):
        try:
            when = datetime.fromisoformat(raw)
        except ValueError:
            when = None
        if when is not None:
            return _in_utc(when if when.tzinfo is not None else when.replace(tzinfo=UTC))
    return upload_id_time(upload_id)


def _in_utc(when: datetime) -> datetime:
    """``when`` in UTC; one whose UTC time datetime cannot hold (``0001-01-01T00:00+05:00``
    is in year 0) is the first or the last moment it can: the retention rules cut periods
    in UTC, and that conversion made the whole prune fail ("OverflowError")."""
    try:
        return when.astimezone(UTC)
    except OverflowError:
        return (datetime.min if when.year == 1 else datetime.max).replace(tzinfo=UTC)


async def _read_manifest(target: Target, key: str, limit: int) -> dict[str, Any] | str:
    """The manifest's JSON object, or why it is damaged (over its bound, not JSON, not an
    object). One gone since the listing stops the prune (another prune ran?)."""
    try:
        doc = json.loads(await fetch_stored(target, key, limit, f"manifest {key}"))
    except DocumentMissing:
        raise PruneError(f"manifest {key} vanished during the prune; try again") from None
    except DocumentError as exc:
        return str(exc)
    except (ValueError, RecursionError):
        return f"manifest {key} is not valid JSON"
    if not isinstance(doc, dict):
        return f"manifest {key} is not a JSON object"
    return doc


async def load_for_prune(
    target: Target,
    system_id: str,
    *,
    keep: Callable[[list[Upload]], Collection[str]] | None = None,
    max_manifest: int = MAX_MANIFEST_BYTES,
    max_document: int = MAX_DOCUMENT_BYTES,
    concurrency: int = CONCURRENCY,
    identities: Identities | None = None,
    resealing: Resealing | None = None,
) -> PruneInput:
    """List ``systems/{system_id}/`` with sizes, read every manifest and the documents they
    name. With ``keep`` (upload ids to keep, given the timed uploads; e.g. a retention
    decision), only the kept manifests' documents are read (the others get bare refs, all
    the planner needs of them), so a damaged upload that is dropped cannot block a prune.
    Uploads without a time are always kept. A damaged manifest dates its upload by its id;
    kept, its references are unknown (``unreadable``, as for a lost document, when the
    target dates its objects). Raises :class:`PruneError` naming what could not be read."""
    prefix = f"systems/{system_id}/"
    listing, stored_at = await list_stored(target, prefix, concurrency)
    keys = sorted(manifest_keys(prefix, listing).items())
    docs = await _bounded_gather(
        (_read_manifest(target, k, max_manifest) for _, k in keys), concurrency
    )
    if resealing is not None and resealing.copies is not None:  # those of documents gone
        held = {n for d in docs if isinstance(d, dict) for n in inline_names(d)}
        await asyncio.to_thread(resealing.copies.keep_only, listing.keys() | held)
    times = {
        u: _time_of(doc, u) if isinstance(doc, dict) else upload_id_time(u)
        for (u, _), doc in zip(keys, docs, strict=True)
    }
    kept: set[str] | None = None
    if keep is not None:
        timed = [Upload(u, t) for u, t in times.items() if t is not None]
        kept = set(keep(timed)) | {u for u, t in times.items() if t is None}
    documents: dict[str, dict[str, Any]] = {}
    reader = DocumentReader(target, max_document, identities, resealing, listing.keys())
    opener = ManifestOpener(documents, reader, stored_at)
    out: list[LoadedManifest] = []
    for (upload_id, key), doc in zip(keys, docs, strict=True):
        if kept is not None and upload_id not in kept:
            refs = ManifestRefs(upload_id, key)
        elif isinstance(doc, str):
            refs = opener.unreadable(upload_id, key, UnreadableDocuments(doc))
        elif (why := unknown_format(doc)) is not None:  # its references would be missed
            raise PruneError(f"manifest {key}: {why}; prune stopped, nothing deleted")
        elif (why := undated(doc, key)) is not None:  # damaged, though JSON
            refs = opener.unreadable(upload_id, key, UnreadableDocuments(why))
        else:
            try:
                refs = await opener.refs(upload_id, key, doc, prefix)
            except (LookupError, ValueError) as exc:
                raise PruneError(f"manifest {key} is malformed ({exc}); prune stopped") from None
        body = doc if isinstance(doc, dict) else {}
        out.append(LoadedManifest(upload_id, key, body, times[upload_id], refs))
    return PruneInput(system_id, tuple(out), documents, listing, stored_at)
