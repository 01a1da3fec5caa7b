"""The format-2 manifest of an upload, and the shared documents it needs stored first.

Given every file of the upload as a :class:`~akoshad.storage.stored.StoredFile` (chunks
already stored in packs, or a whole object of an earlier format-1 upload),
:func:`build_manifest2` returns the manifest (a valid Akosha ``SystemMemoryUploadManifest``,
top level exactly as ``layout.build_manifest`` makes it, ``metadata.format`` 2) and the
documents to PUT before it; the caller writes those (``document_puts``), then the
manifest LAST.

- A file of more than :data:`CHUNKS_INLINE_MAX` chunks gets ``chunk_list`` ``{key,
  compression}``: a stored ``{"chunks": [...]}`` named by its content, so an unchanged large
  file costs no bytes in the next upload. Past ``chunk_parts.SPLIT_MIN_CHUNKS`` chunks the
  list is stored as ``{"parts": [...]}`` of content-defined parts (``chunk_parts``), so a
  changed large file rewrites only the parts holding its changed chunks.
- More than :data:`INDEX_INLINE_MAX` files (or ``use_index=True``): ``metadata.index.parts``
  instead of ``metadata.files``. Entries sorted by path are cut into parts of
  :data:`PART_MIN_ENTRIES` to :data:`PART_MAX_ENTRIES` entries, after an entry whose
  ``sha256(path)`` (its keyed name when sealed) has its low :data:`PART_BOUNDARY_BITS` bits
  zero, so a change rewrites only its own part; each part is a stored ``{"files": [...]}``
  named by its content, shared by every upload that has it. The store's own top-level files
  (session-buddy's databases, WAL and log, which change with every session) keep to parts of
  their own (:func:`iter_parts`), so the part every upload rewrites holds only them. The
  sizes trade the manifest's list of parts against the parts a change rewrites: with 10,000
  files, three changed files and the top-level ones cost about 40 KiB of manifest and index.

Sealed (``name_key`` and ``recipients`` given: encryption on): every document is sealed
and named by its keyed hash (``sealed_documents``), the entries always go in index parts,
and ``metadata.skipped`` moves into a sealed document named by ``metadata.index.skipped``
(``{"skipped": [...]}``), so the manifest names no file and no plaintext hash. A sealed
list of at most :data:`INDEX_INLINE_MAX` entries (inline when unsealed) is one part, held
in the manifest itself when its sealed bytes take at most ``refs.MAX_INLINE_PART_BYTES``
(``{name, inline, compression, encryption}``, ``inline`` their base64, ``name`` the keyed
name it would have been stored under): no request more than the unsealed upload makes.
Such a part is no stored object: neither ``metadata.index.objects`` nor ``document_keys``
names it.

Documents whose key is in ``known_documents`` (e.g. those the previous manifest referenced)
are not returned again. Blocking (JSON, sha256, gzip): call from a thread on large stores.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from akoshad.manifest.layout import FileEntry, build_manifest, object_name, upload_prefix
from akoshad.storage import chunk_parts
from akoshad.storage.crypto import Recipients, seal
from akoshad.storage.documents import (
    DOCUMENT_COMPRESSION,
    DocumentKind,
    canonical_json,
    chunk_list_json,
    compress_document,
    document_key,
    index_part_json,
)
from akoshad.storage.name_key import NameKey
from akoshad.storage.refs import (
    MAX_INLINE_PART_BYTES,
    ChunkRef,
    Encryption,
    inline_part_json,
)
from akoshad.storage.sealed_documents import sealed_document_key, sealed_index_part_json
from akoshad.storage.stored import StoredFile, WholeObject, check_files

FORMAT = 2
CHUNKS_INLINE_MAX = 64
INDEX_INLINE_MAX = 200
# An index part holds PART_MIN_ENTRIES to PART_MAX_ENTRIES entries (about 72 on average):
# each part costs ~150 bytes of manifest, and a change rewrites its whole part (~80 bytes
# an entry), so 10,000 files make ~140 parts and a changed file rewrites ~6 KiB.
PART_BOUNDARY_BITS = 3  # past the minimum, a part ends after about one path in 8
PART_MIN_ENTRIES = 64
PART_MAX_ENTRIES = 96  # bounds the part one change rewrites
DocumentSink = Callable[[str, bytes], None]  # (key, stored bytes) of a document just made


@dataclass(frozen=True)
class Format2Manifest:
    """What :func:`build_manifest2` made.

    ``manifest``: the manifest dict (encode it with ``layout.encode_manifest``).
    ``documents``: ``(key, bytes)`` to PUT before the manifest (content type
    ``documents.DOCUMENT_CONTENT_TYPE``), only those not in ``known_documents``.
    ``document_keys``: every index part and chunk list the manifest references (the
    ``known_documents`` of the next upload, once this one is committed).
    """

    manifest: dict[str, Any]
    documents: list[tuple[str, bytes]]
    document_keys: frozenset[str]

    @property
    def document_bytes(self) -> int:
        """Bytes of the documents to PUT."""
        return sum(len(data) for _, data in self.documents)


class _Documents:
    """Documents referenced so far: each encoded once, kept only when not yet stored."""

    def __init__(
        self,
        system_id: str,
        known: Collection[str],
        sealed: tuple[NameKey, Recipients] | None = None,
        sink: DocumentSink | None = None,
        copies: DocumentSink | None = None,
    ) -> None:
        self.system_id = system_id
        self.known = known
        self.sealed = sealed
        self.sink = sink  # given: each new document goes there as it is made (not kept)
        self.copies = copies  # given: (key, compressed plaintext) of each new sealed one
        self.new: dict[str, bytes] = {}
        self.made: set[str] = set()  # keys of the new documents
        self.keys: set[str] = set()
        self.ends_part = chunk_parts.boundary_of(None if sealed is None else sealed[0])
        self.ends_entry = path_boundary(None if sealed is None else sealed[0])

    def add(self, kind: DocumentKind, obj: Any) -> str:
        plain = canonical_json(obj)
        if self.sealed is None:
            key = document_key(self.system_id, kind, plain)
        else:
            key = sealed_document_key(self.system_id, kind, plain, self.sealed[0])
        self.keys.add(key)
        if key not in self.known and key not in self.made:  # only what is not stored yet
            self.made.add(key)
            stored = compress_document(plain)
            if self.sealed is not None:
                if self.copies is not None:
                    self.copies(key, stored)
                stored = seal(stored, self.sealed[1])
            if self.sink is None:
                self.new[key] = stored
            else:
                self.sink(key, stored)
        return key

    def part_json(self, key: str) -> dict[str, Any]:
        """One of ``metadata.index.parts`` naming the stored document ``key``."""
        return index_part_json(key) if self.sealed is None else sealed_index_part_json(key)

    def index_part(self, files: list[dict[str, Any]], inline: bool) -> dict[str, Any]:
        """One of ``metadata.index.parts`` holding ``files``: with ``inline`` and sealed,
        the sealed part itself when it takes at most ``refs.MAX_INLINE_PART_BYTES`` (no
        stored object, no request); else a stored document."""
        obj = {"files": files}
        if inline and self.sealed is not None:
            plain = canonical_json(obj)
            name = sealed_document_key(self.system_id, "index", plain, self.sealed[0])
            body = compress_document(plain)
            sealed = seal(body, self.sealed[1])
            if len(sealed) <= MAX_INLINE_PART_BYTES:
                if self.copies is not None:
                    self.copies(name, body)
                return inline_part_json(name, sealed, DOCUMENT_COMPRESSION)
        return self.part_json(self.add("index", obj))

    def chunk_list(self, chunks: list[dict[str, Any]]) -> str:
        """The key of the stored chunk list of ``chunks``: whole, or past
        ``chunk_parts.SPLIT_MIN_CHUNKS`` chunks split into parts (each stored too)."""
        if len(chunks) <= chunk_parts.SPLIT_MIN_CHUNKS:
            return self.add("chunklists", {"chunks": chunks})
        enc: Encryption = "none" if self.sealed is None else "age"
        parts = [
            chunk_parts.part_json(self.add("chunklists", {"chunks": part}), enc, part)
            for part in chunk_parts.cut_chunk_parts(chunks, self.ends_part)
        ]
        return self.add("chunklists", {"parts": parts})


def entry_json(f: StoredFile, name: str, docs: _Documents | None = None) -> dict[str, Any]:
    """The manifest entry of ``f``: common fields, then a whole object's ``key``/
    ``stored_size``/``compression``, or ``chunks`` (``chunk_list`` past
    :data:`CHUNKS_INLINE_MAX` chunks when ``docs`` can store one)."""
    out: dict[str, Any] = {
        "path": f.path,
        "name": name,
        "kind": f.kind,
        "size": f.size,
        "sha256": f.sha256,
    }
    if f.mode is not None:
        out["mode"] = f.mode
    if f.mtime_ns is not None:
        out["mtime_ns"] = f.mtime_ns
    if f.facts is not None:
        out.update(f.facts.as_fields())
    whole = f.whole
    if whole is not None:
        out.update(whole.to_json())
        return out
    chunks = [c.to_json() for c in cast(tuple[ChunkRef, ...], f.parts)]
    if docs is not None and len(chunks) > CHUNKS_INLINE_MAX:
        out["chunk_list"] = chunk_list_json(docs.chunk_list(chunks))
    else:
        out["chunks"] = chunks
    return out


def path_boundary(name_key: NameKey | None = None) -> Callable[[str], bool]:
    """The test "an index part may end after this path": the low
    :data:`PART_BOUNDARY_BITS` bits of ``sha256(path)``, or of its keyed name when the parts
    are sealed (``name_key``), so the cuts reveal nothing about the paths."""
    ends = chunk_parts.boundary_of(name_key, PART_BOUNDARY_BITS)

    def at(path: str) -> bool:
        return ends(hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest())

    return at


def is_boundary(path: str) -> bool:
    """An index part may end after this path (unsealed parts; about one path in 8)."""
    return path_boundary()(path)


def cut_parts(
    entries: Iterable[dict[str, Any]], max_entries: int = PART_MAX_ENTRIES
) -> list[list[dict[str, Any]]]:
    """Entries (sorted by path) cut into index parts at content-defined boundaries."""
    return list(iter_parts(entries, max_entries))


def iter_parts(
    entries: Iterable[dict[str, Any]],
    max_entries: int = PART_MAX_ENTRIES,
    *,
    min_entries: int = PART_MIN_ENTRIES,
    ends: Callable[[str], bool] | None = None,
) -> Iterator[list[dict[str, Any]]]:
    """Entries (sorted by path) cut into index parts, each given as soon as its last entry
    is read: a part ends after ``max_entries``, or past ``min_entries`` after a path that
    ``ends`` (default :func:`is_boundary`).

    A run of top-level files (no ``/``) gets parts of its own when it starts the list or
    follows at least ``min_entries`` entries in directories: session-buddy's databases, WAL
    and log change with every session, and should not drag dozens of unchanged entries into
    every upload. Shorter runs in directories (``a.json`` beside ``a/...``, over and over)
    make no cut, so such a layout cannot shrink the parts.
    """
    ends = ends or is_boundary
    current: list[dict[str, Any]] = []
    was_top: bool | None = None
    own = True  # the current top-level run has parts of its own
    nested = 0  # entries in directories since the last top-level file
    for entry in entries:
        path = str(entry["path"])
        top = "/" not in path
        if was_top is not None and top != was_top:
            if top:  # a run of top-level files starts
                own = nested >= min_entries
            if own and current:
                yield current
                current = []
            nested = 0
        was_top = top
        nested += not top
        current.append(entry)
        if len(current) >= max_entries or (len(current) >= min_entries and ends(path)):
            yield current
            current = []
    if current:
        yield current


def _index_cuts(
    entries: Iterable[dict[str, Any]], count: int, sealed: bool, ends: Callable[[str], bool]
) -> Iterable[list[dict[str, Any]]]:
    """The index parts of ``count`` entries: a sealed list short enough to go inline
    unsealed (at most :data:`INDEX_INLINE_MAX`) is one part (held in the manifest when
    small: ``_Documents.index_part``); longer lists are cut by :func:`iter_parts`."""
    if sealed and count <= INDEX_INLINE_MAX:
        whole = list(entries)
        return [whole] if whole else []
    return iter_parts(entries, ends=ends)


def _names(files: Sequence[StoredFile]) -> dict[str, str]:
    """Entry names: a whole object keeps its object's name; a chunked file gets its path
    flattened, unique within the upload."""
    taken = {f.name for f in files if f.name and f.whole is not None}
    names: dict[str, str] = {}
    for f in files:
        if f.name and f.whole is not None:
            names[f.path] = f.name
        else:
            names[f.path] = object_name(f.path, "none", taken)
    return names


def _own_whole_entries(files: Iterable[StoredFile], own: str) -> list[FileEntry]:
    """Whole objects stored in this upload's own folder, as format-1 entries (they are the
    top-level ``files``, as ``layout.build_manifest`` lists them)."""
    out: list[FileEntry] = []
    for f in files:
        whole = f.whole
        if isinstance(whole, WholeObject) and whole.key.startswith(own):
            out.append(
                FileEntry(
                    path=f.path,
                    name=f.name or whole.key.rsplit("/", 1)[-1],
                    key=whole.key,
                    size=f.size,
                    sha256=f.sha256,
                    stored_size=whole.stored_size,
                    compression=whole.compression,
                    kind=f.kind,
                )
            )
    return out


def referenced_objects(files: Iterable[StoredFile], documents: Iterable[str]) -> list[str]:
    """Every key an upload of ``files`` references besides its manifest: the packs its
    chunks sit in, its whole objects and ``documents`` (its index parts, chunk lists and
    their parts), sorted. A sealed upload's manifest holds this list readable
    (``metadata.index.objects``): object names are keyed hashes then, and a prune needs no
    identity to know what the upload keeps alive (``prune_refs.sealed_objects_refs``)."""
    keys = set(documents)
    for f in files:
        keys.update(part.key for part in f.parts)
    return sorted(keys)


def build_manifest2(
    *,
    system_id: str,
    upload_id: str,
    files: Sequence[StoredFile],
    skipped: Mapping[str, str],
    known_documents: Collection[str] = frozenset(),
    uploaded_at: datetime | None = None,
    conversation_count: int = 0,
    has_memories: bool = False,
    extra_metadata: Mapping[str, Any] | None = None,
    use_index: bool | None = None,
    name_key: NameKey | None = None,
    recipients: Recipients | None = None,
    sink: DocumentSink | None = None,
    copies: DocumentSink | None = None,
) -> Format2Manifest:
    """The format-2 manifest of ``files`` and the documents to store before it.

    Every file is checked first (``stored.check_files``: ManifestError, nothing made).
    ``use_index``: None = only past :data:`INDEX_INLINE_MAX` files; True/False = always/never.
    ``name_key`` and ``recipients``: seal every document (see the module docstring).
    ``sink``: each new document is handed to it as soon as it is made (the index parts
    one by one, as the entries are cut), and ``documents`` is empty; an exception it
    raises ends the build.
    ``copies``: sealed, each new document's key and compressed plaintext go there too
    (``document_copies``: a prune without the identity can then repack its packs).
    """
    sealed = None
    if name_key is not None and recipients is not None:
        sealed, use_index = (name_key, recipients), True
    check_files(files, system_id)
    ordered = sorted(files, key=lambda f: f.path)
    own = upload_prefix(system_id, upload_id)
    # the skips listed as files too (a set of these few, not of every path)
    paths = {f.path for f in ordered if f.path in skipped} if skipped else set()
    manifest = build_manifest(
        system_id=system_id,
        upload_id=upload_id,
        entries=_own_whole_entries(ordered, own),
        skipped={p: r for p, r in skipped.items() if p not in paths},
        uploaded_at=uploaded_at,
        conversation_count=conversation_count,
        has_memories=has_memories,
        extra_metadata=dict(extra_metadata or {}),
    )
    manifest["total_size_bytes"] = sum(f.size for f in ordered)
    metadata: dict[str, Any] = manifest["metadata"]
    metadata["format"] = FORMAT
    docs = _Documents(system_id, known_documents, sealed, sink, copies)
    names = _names(ordered)
    entries = (entry_json(f, names[f.path], docs) for f in ordered)
    if use_index or (use_index is None and len(ordered) > INDEX_INLINE_MAX):
        del metadata["files"]
        small = sealed is not None and len(ordered) <= INDEX_INLINE_MAX
        cuts = _index_cuts(entries, len(ordered), sealed is not None, docs.ends_entry)
        metadata["index"] = {"parts": [docs.index_part(part, small) for part in cuts]}
        if sealed is not None:
            skips = metadata.pop("skipped")
            if skips:
                metadata["index"]["skipped"] = {
                    "key": docs.add("index", {"skipped": skips}),
                    "compression": DOCUMENT_COMPRESSION,
                    "encryption": "age",
                }
            # readable in the manifest (no request of its own): what a prune keeps alive
            metadata["index"]["objects"] = referenced_objects(ordered, docs.keys)
    else:
        metadata["files"] = list(entries)
    return Format2Manifest(manifest, list(docs.new.items()), frozenset(docs.keys))
