"""Every file of a manifest, format 1 or 2, as :class:`~akoshad.storage.stored.StoredFile`.

:func:`read_entries` resolves ``metadata.index`` parts and ``chunk_list`` documents (each
fetched with a size bound, a few at once; a split list's parts checked against the entry
first, ``chunk_parts``), then validates every entry once: a safe relative
path, no path twice, no ``a`` beside ``a/b``, chunk sizes adding up to the file's size, every
key under ``systems/{system_id}/``. Any problem is one
:class:`~akoshad.manifest.layout.ManifestError` line that names the entry (and the document
it came from). Format-1 manifests go through ``layout.entries_of``. Nothing is restored
from a manifest this refuses; a missing or damaged chunk list refuses it too, unless the
caller takes the files whose list it is apart (``lost``: restore, verify, drills,
recovery; prune and listing stay strict; ``chunk_lists_read``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, cast

from akoshad.manifest.facts import Facts
from akoshad.manifest.layout import ManifestError, entries_of, manifest_format
from akoshad.storage.chunk_lists_read import (
    FETCH_IN_FLIGHT,
    Pending,
    Unreadable,
    bounded,
    resolve_lists,
)
from akoshad.storage.crypto import (
    Identities,
    IdentityNeeded,
    NotForThisIdentity,
    sealed_size_bound,
)
from akoshad.storage.documents import (
    MAX_DOCUMENT_BYTES,
    DocumentError,
    fetch_stored,
    parse_document,
)
from akoshad.storage.errors import RefError
from akoshad.storage.name_key import opens_every_key
from akoshad.storage.refs import ChunkListRef, ChunkRef, IndexPartRef, chunks_from_json
from akoshad.storage.sealed_documents import decompress_sealed
from akoshad.storage.stored import (
    WHOLE_COMPRESSIONS,
    StoredFile,
    WholeCompression,
    WholeObject,
    check_mtime,
    check_paths,
    check_stored_file,
    system_root,
)
from akoshad.targets.base import Target

MAX_ENTRIES = 1_000_000
MAX_PARTS = 100_000
MAX_TOTAL_DOCUMENT_BYTES = 1024 * 1024 * 1024  # stored bytes of every document of a manifest
# their JSON bytes together, what they cost in memory (about 3x that once parsed): a chunk's
# ref is some 260 bytes of JSON, so about a million chunks, a store of 256 GiB or more
MAX_TOTAL_DECODED_BYTES = 256 * 1024 * 1024
# picks the entries wanted among all of a manifest's (their chunks not read yet)
Keep = Callable[[list[StoredFile]], list[StoredFile]]
__all__ = ["Keep", "Unreadable", "is_encrypted", "parse_entry", "read_entries"]


class _Budget:
    """Stored bytes every document of one manifest may take together (and the identities
    that open sealed ones)."""

    def __init__(self, limit: int, identities: Identities | None = None) -> None:
        self.left = limit
        self.decoded = MAX_TOTAL_DECODED_BYTES  # the JSON bytes the documents may still take
        self.keys: set[str] = set()  # the documents read
        self.identities = identities
        self.opened_sealed = False  # a sealed document of the manifest opened

    def limit(self, what: str) -> int:
        """The most ``what`` may take (its own bound, or what is left)."""
        if self.left <= 0:
            raise ManifestError(
                f"{what}: the manifest's documents exceed {MAX_TOTAL_DOCUMENT_BYTES} bytes"
            )
        self.spend_decoded(0, what)
        return min(MAX_DOCUMENT_BYTES, self.left)

    def spend(self, n: int) -> None:
        self.left -= n

    def spend_decoded(self, n: int, what: str) -> None:
        """Charge ``n`` decoded bytes; ManifestError once the documents decode to more than
        their bound together (a hostile manifest's lists of tiny chunks: gigabytes)."""
        self.decoded -= n
        if self.decoded < 0:
            raise ManifestError(
                f"{what}: the manifest's documents decode to more than "
                f"{MAX_TOTAL_DECODED_BYTES} bytes together"
            )


def is_encrypted(manifest: Mapping[str, Any]) -> bool:
    """True when the manifest's entries are in sealed index parts (an encrypted upload)."""
    metadata = manifest.get("metadata")
    index = metadata.get("index") if isinstance(metadata, dict) else None
    parts = index.get("parts") if isinstance(index, dict) else None
    return isinstance(parts, list) and any(
        isinstance(p, dict) and p.get("encryption", "none") != "none" for p in parts
    )


def _field(raw: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    value = raw.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ManifestError(f"{where}: {name} is missing or not a {kind.__name__}")
    return value


def _whole(raw: Mapping[str, Any], size: int, sha: str, where: str) -> WholeObject:
    comp = _field(raw, "compression", str, where)
    if comp not in WHOLE_COMPRESSIONS:
        raise ManifestError(f"{where}: unknown compression {comp!r:.40}")
    compression: WholeCompression = "gzip" if comp == "gzip" else "none"
    key = _field(raw, "key", str, where)
    return WholeObject(key, _field(raw, "stored_size", int, where), compression, size, sha)


def parse_entry(raw: object, place: str, index: int | None = None) -> Pending:
    """One format-2 entry (listed in ``place``, at ``index`` when given): common fields,
    then ``chunks``, ``chunk_list`` or a whole object (``key``/``stored_size``/
    ``compression``); exactly one of them."""
    where = place if index is None else f"{place}[{index}]"
    if not isinstance(raw, dict):
        raise ManifestError(f"{where} is not an object")
    path = _field(raw, "path", str, where)
    where = f"{where} ({path!r:.200})"
    size = _field(raw, "size", int, where)
    sha = _field(raw, "sha256", str, where)
    mode = None if raw.get("mode") is None else _field(raw, "mode", int, where)
    mtime = raw.get("mtime_ns")
    mtime_ns = None if mtime is None else check_mtime(mtime, where)
    variants = [k for k in ("chunks", "chunk_list", "key") if k in raw]
    if len(variants) != 1:
        raise ManifestError(f"{where}: needs exactly one of chunks, chunk_list or key")
    parts: tuple[ChunkRef | WholeObject, ...] = ()
    chunk_list = None
    try:
        if "chunks" in raw:
            parts = tuple(chunks_from_json(raw["chunks"], f"{where}: chunks"))
        elif "chunk_list" in raw:
            chunk_list = ChunkListRef.from_json(raw["chunk_list"], f"{where}: chunk_list")
        else:
            parts = (_whole(raw, size, sha, where),)
    except RefError as exc:
        raise ManifestError(str(exc)) from None
    stored = StoredFile(
        path=path,
        kind=_field(raw, "kind", str, where),
        size=size,
        sha256=sha,
        parts=parts,
        mode=mode,
        facts=Facts.from_fields(raw),
        name=_field(raw, "name", str, where),
        mtime_ns=mtime_ns,
    )
    return Pending(place, index, stored, chunk_list)


async def _read(
    target: Target,
    key: str,
    comp: str,
    enc: str,
    what: str,
    budget: _Budget,
    inline: bytes | None = None,
) -> Any:
    """One document, bounded by its own limit and by what the manifest has left; a sealed
    one (``enc`` age) is opened with the budget's identities first. ``inline``: the sealed
    bytes of an index part held in the manifest (nothing fetched, ``key`` its name)."""
    what = f"{what} {key}"
    if enc not in ("none", "age"):
        raise ManifestError(f"{what}: unknown encryption {enc!r:.20}")
    limit = budget.limit(what)
    bound = sealed_size_bound(limit) if enc == "age" else limit
    if inline is None:
        stored = await fetch_stored(target, key, bound, what)
        budget.keys.add(key)
    elif len(inline) > bound:
        raise ManifestError(f"{what}: inline part of {len(inline)} bytes is over {bound}")
    else:
        stored = inline
    budget.spend(len(stored))
    try:
        plain = await asyncio.to_thread(
            decompress_sealed, stored, comp, enc, what, budget.identities, MAX_DOCUMENT_BYTES
        )
    except NotForThisIdentity:
        if not budget.opened_sealed:
            raise
        # every document of an upload is sealed to the same recipients (its name key's)
        raise DocumentError(
            f"{what}: its age header opens with no key of the identity that opened the "
            "upload's other documents (damaged)"
        ) from None
    budget.opened_sealed = budget.opened_sealed or enc == "age"
    budget.spend_decoded(len(plain), what)
    return await asyncio.to_thread(parse_document, plain, what)


def _index_parts(metadata: Mapping[str, Any], root: str) -> list[IndexPartRef]:
    index = metadata.get("index")
    if not isinstance(index, dict) or not isinstance(index.get("parts"), list):
        raise ManifestError("metadata.index.parts is not a list")
    if "files" in metadata:
        raise ManifestError("metadata has both files and index")
    raw_parts = index["parts"]
    if len(raw_parts) > MAX_PARTS:
        raise ManifestError(f"metadata.index has {len(raw_parts)} parts, over {MAX_PARTS}")
    try:
        parts = [
            IndexPartRef.from_json(p, f"metadata.index.parts[{i}]") for i, p in enumerate(raw_parts)
        ]
    except RefError as exc:
        raise ManifestError(str(exc)) from None
    for i, part in enumerate(parts):
        if not part.key.startswith(root):
            raise ManifestError(f"metadata.index.parts[{i}]: key is not under {root}")
    return parts


async def _entries(
    target: Target, metadata: Mapping[str, Any], system_id: str, budget: _Budget
) -> list[Pending]:
    """The parsed entries of ``metadata.files`` or of the index parts, in order. Each part
    is parsed as soon as it is read and its JSON let go: the JSON of every part of an
    upload of 100,000 files, held at once, took ~300 MB."""
    if "index" not in metadata:
        files = metadata.get("files")
        if not isinstance(files, list):
            raise ManifestError("metadata.files is not a list")
        return [parse_entry(raw, "metadata.files", i) for i, raw in enumerate(files)]
    parts = _index_parts(metadata, system_root(system_id))

    def job(p: IndexPartRef) -> Callable[[], Awaitable[Any]]:
        return lambda: _read(
            target, p.key, p.compression, p.encryption, "index part", budget, p.inline
        )

    async def parsed(p: IndexPartRef) -> list[Pending]:
        return _part_entries(p, await job(p)())

    out: list[Pending] = []
    if parts:  # the first part alone: a sealed part that does not open after it did is damage
        first = await _first_part(target, job(parts[0]), parts[0].key, system_id, budget)
        out += _part_entries(parts[0], first)
    for entries in await bounded([partial(parsed, p) for p in parts[1:]], FETCH_IN_FLIGHT):
        out += cast(list[Pending], entries)  # bounded raises errors (not ``each``)
        if len(out) > MAX_ENTRIES:
            raise ManifestError(f"the manifest lists more than {MAX_ENTRIES} files")
    return out


def _part_entries(part: IndexPartRef, doc: object) -> list[Pending]:
    """The parsed entries of one index part's document."""
    what = f"index part {part.key}"
    if not isinstance(doc, dict) or set(doc) != {"files"} or not isinstance(doc["files"], list):
        raise ManifestError(f'{what} is not {{"files": [...]}}')
    if len(doc["files"]) > MAX_ENTRIES:
        raise ManifestError(f"the manifest lists more than {MAX_ENTRIES} files")
    place = f"{what}: files"
    return [parse_entry(raw, place, i) for i, raw in enumerate(doc["files"])]


async def _first_part(
    target: Target, job: Callable[[], Awaitable[Any]], key: str, system_id: str, budget: _Budget
) -> Any:
    """The first index part; sealed to no key of the identity, it is damaged when the
    identity opens every name key of the system (``name_key.opens_every_key``), else the
    upload is sealed to other keys (said of the upload: a part held in the manifest has
    a key that names no object)."""
    try:
        return await job()
    except NotForThisIdentity:
        ids = budget.identities
        if ids is None:
            raise
        if not await opens_every_key(target, system_id, ids):
            raise NotForThisIdentity(
                f"this upload is encrypted to other keys: the identity in {ids.path} cannot read it"
            ) from None
        raise DocumentError(
            f"index part {key}: its age header opens with no key of the identity, which "
            "opens every name key of this system (damaged)"
        ) from None


def _system_id(metadata: Mapping[str, Any], system_id: str | None) -> str:
    listed = metadata.get("system_id")
    if system_id is None:
        if not isinstance(listed, str):
            raise ManifestError("metadata.system_id is missing")
        system_id = listed
    elif listed is not None and listed != system_id:
        raise ManifestError(f"metadata.system_id {listed!r:.80} is not {system_id!r}")
    return system_id


async def read_entries(
    target: Target,
    manifest: Mapping[str, Any],
    *,
    system_id: str | None = None,
    documents: set[str] | None = None,
    identities: Identities | None = None,
    keep: Keep | None = None,
    lost: list[Unreadable] | None = None,
) -> list[StoredFile]:
    """Every file of ``manifest`` (format 1 or 2), validated together; ``system_id``
    defaults to ``metadata.system_id`` (and must match it when given). The keys of the
    index parts and chunk lists read are added to ``documents`` when given. The sealed
    documents of an encrypted upload are opened with ``identities``: without them,
    :class:`~akoshad.storage.crypto.IdentityNeeded` (one line, exit 1), with the wrong ones
    ``NotForThisIdentity`` (but a sealed document that does not open after another of the
    manifest did is damaged: ``DocumentError``).

    ``keep`` (given every entry, chunks not read yet) picks the files wanted: only their
    chunk lists are read, so a lost one of another file does not stand in their way.
    ``lost`` given: a file whose chunk list is missing or damaged goes there
    (``chunk_lists_read.Unreadable``) and the others are returned; else it is an error.

    Raises ManifestError (one line) for anything malformed, missing or over a bound;
    a target's own errors (``TransientError``, ...) pass through.
    """
    fmt = manifest_format(manifest)
    metadata: Mapping[str, Any] = manifest["metadata"]
    system_id = _system_id(metadata, system_id)
    if fmt == 1:
        files = [StoredFile.from_file_entry(e) for e in entries_of(dict(manifest))]
        for i, f in enumerate(files):
            check_stored_file(f, system_id, f"metadata.files[{i}]")
        return files if keep is None else keep(files)
    if identities is None and is_encrypted(manifest):
        raise IdentityNeeded(
            "this upload is encrypted: pass --identity or set encryption.identity_file"
        )
    budget = _Budget(MAX_TOTAL_DOCUMENT_BYTES, identities)
    pending = await _entries(target, metadata, system_id, budget)
    if len(pending) > MAX_ENTRIES:
        raise ManifestError(f"the manifest lists more than {MAX_ENTRIES} files")
    check_paths(p.file for p in pending)
    if keep is not None:
        kept = {id(f) for f in keep([p.file for p in pending])}
        pending = [p for p in pending if id(p.file) in kept]

    def read(key: str, comp: str, enc: str, what: str) -> Awaitable[Any]:
        return _read(target, key, comp, enc, what, budget)

    files = await resolve_lists(read, pending, system_id, system_root(system_id), lost)
    if documents is not None:
        documents.update(budget.keys)
    return files
