"""What one manifest references, for the prune planner: format 1 and format 2 alike.

A format-1 entry names one whole object (``key``). A format-2 entry has ``chunks`` (each
``{key, offset, length, ...}`` inside a pack) or a ``chunk_list`` (a stored
``{"chunks": [...]}``, or ``{"parts": [...]}`` naming stored ``{"chunks": [...]}`` parts,
see ``chunk_parts``: the top-level list is then the parent of its parts); a large store
keeps its entries in ``metadata.index.parts`` (stored ``{"files": [...]}``) instead of
``metadata.files``; a small sealed one holds its one part in the manifest (``inline``,
``inline_parts``): no object, its entries held by the manifest itself. The top-level
``files`` names objects in the upload's own folder (``memories.json``, format-1 objects).

The caller reads the index parts and chunk lists (``documents_needed`` says which, in up
to three rounds: index parts, the lists they name, the parts of split lists) and passes
them decoded to ``manifest_refs``. A sealed upload that names its objects in a readable
list (``metadata.index.objects``, see ``format2.referenced_objects``) needs none of its
sealed documents: ``sealed_objects_refs`` makes the references of the upload from that
list (no identity needed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from akoshad.manifest.layout import ManifestError, manifest_format
from akoshad.storage.errors import RefError
from akoshad.storage.refs import IndexPartRef


class MissingDocumentError(LookupError):
    """An index part or chunk list the manifest names was not provided."""


@dataclass(frozen=True, order=True, slots=True)
class ChunkRef:
    """Stored bytes of one chunk: ``length`` bytes at ``offset`` in object ``pack``."""

    pack: str
    offset: int
    length: int


@dataclass(frozen=True)
class ManifestRefs:
    """What one upload's manifest references (keys relative to the target's root).

    ``objects``: whole objects (format-1 files, ``memories.json``, index parts, chunk lists).
    ``chunks``: per holder (the manifest key for inline ``chunks``, else the index part,
    chunk list or chunk list part whose JSON holds them), the chunk references written there.
    ``children``: per holder, the index parts, chunk lists and chunk list parts it names.
    ``sealed``: an encrypted upload (its documents are sealed). Its packs stay where they
    are unless ``rewritable``: its documents were opened (the identity) and are named by
    the name key of the recipients configured now, so a repack can seal their rewritten
    forms to the same recipients (``prune_load``). Refs from the readable objects list
    (``sealed_objects_refs``) know no chunk location and are never rewritable.
    ``unreadable``: why a kept upload could not be read (its manifest damaged, or one of its
    documents missing or damaged); its references are then unknown, and the planner keeps
    every object stored up to it (``prune_plan``).
    """

    upload_id: str
    manifest_key: str
    objects: frozenset[str] = frozenset()
    chunks: Mapping[str, tuple[ChunkRef, ...]] = field(default_factory=dict)
    children: Mapping[str, frozenset[str]] = field(default_factory=dict)
    sealed: bool = False
    rewritable: bool = False
    unreadable: str = ""

    @property
    def movable(self) -> bool:
        """Whether a repack may move the chunks it references (and rewrite it)."""
        return not self.unreadable and (not self.sealed or self.rewritable)

    def chunk_refs(self) -> Iterable[ChunkRef]:
        for refs in self.chunks.values():
            yield from refs

    def named(self, *, packs: bool = False) -> set[str]:
        """Every key it names: manifest, whole objects, documents (holders and children),
        and with ``packs`` the packs its chunks sit in."""
        out = {self.manifest_key} | set(self.objects) | set(self.chunks)
        for kids in self.children.values():
            out |= kids
        if packs:
            out |= {c.pack for c in self.chunk_refs()}
        return out

    def objects_list(self, manifest: Mapping[str, Any]) -> list[str]:
        """What ``metadata.index.objects`` lists for it (``format2.referenced_objects``):
        every key it names but its manifest and its own top-level files, sorted."""
        own = _own_files(self.manifest_key, manifest)
        return sorted(self.named(packs=True) - {self.manifest_key} - own)


def _dict(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} is not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{what} is not a list")
    return value


def _key(value: Any, what: str) -> str:
    key = _dict(value, what).get("key")
    if not isinstance(key, str) or not key:
        raise ValueError(f"{what} has no key")
    return key


def unknown_format(manifest: Mapping[str, Any]) -> str | None:
    """Why this akoshad cannot know what ``manifest`` references (a ``metadata.format``
    newer than it reads, or none it knows), else None (also for a manifest without
    ``metadata.format``: format 1, or another uploader's)."""
    meta = manifest.get("metadata")
    if not isinstance(meta, Mapping) or "format" not in meta:
        return None
    try:
        manifest_format(manifest)
    except ManifestError as exc:
        return str(exc)
    return None


def undated(manifest: Mapping[str, Any], key: str) -> str | None:
    """Why ``manifest`` cannot be trusted when it has no ``uploaded_at`` (every writer
    sets one, Akosha requires it; ``uploads`` lists such an upload as damaged): what it
    says it references may be what is left of it (``{}``). None when it has one."""
    raw = manifest.get("uploaded_at")
    try:
        datetime.fromisoformat(raw if isinstance(raw, str) else "")
    except ValueError:
        return f"manifest {key} has no uploaded_at (missing or not ISO 8601)"
    return None


def _index_parts(manifest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    meta = _dict(manifest.get("metadata", {}), "metadata")
    index = _dict(meta.get("index") or {}, "metadata.index")
    return [_dict(p, "an index part") for p in _list(index.get("parts"), "index parts")]


def _parts(manifest: Mapping[str, Any]) -> list[str]:
    """The keys of the stored index parts (not those held in the manifest)."""
    return [_key(p, "an index part") for p in _index_parts(manifest) if "inline" not in p]


def inline_parts(manifest: Mapping[str, Any]) -> dict[str, bytes]:
    """The index parts held in the manifest (``refs.IndexPartRef``): name -> sealed bytes.
    They are no stored objects: their entries are the manifest's own. ``ValueError`` when
    one is malformed."""
    out: dict[str, bytes] = {}
    for i, raw in enumerate(_index_parts(manifest)):
        if "inline" in raw:
            try:
                part = IndexPartRef.from_json(raw, f"metadata.index.parts[{i}]")
            except RefError as exc:
                raise ValueError(str(exc)) from None
            out[part.key] = part.inline or b""
    return out


def inline_names(manifest: Mapping[str, Any]) -> set[str]:
    """The names of the index parts held in ``manifest`` (none when it is malformed)."""
    try:
        return set(inline_parts(manifest))
    except ValueError:
        return set()


def _entries(manifest: Mapping[str, Any]) -> list[Any]:
    meta = _dict(manifest.get("metadata", {}), "metadata")
    return _list(meta.get("files"), "metadata.files")


def _doc(documents: Mapping[str, Any], key: str, field_name: str) -> list[Any]:
    if key not in documents:
        raise MissingDocumentError(key)
    return _list(_dict(documents[key], key).get(field_name), f"{key}: {field_name}")


def documents_needed(manifest: Mapping[str, Any], documents: Mapping[str, Any]) -> set[str]:
    """Keys of the index parts and chunk lists still to read before ``manifest_refs``."""
    parts = _parts(manifest) + list(inline_parts(manifest))
    need = {k for k in parts if k not in documents}
    entries = list(_entries(manifest))
    for part in parts:
        if part in documents:
            entries += _doc(documents, part, "files")
    for entry in entries:
        if "chunk_list" in _dict(entry, "an entry"):
            key = _key(entry["chunk_list"], "a chunk_list")
            if key not in documents:
                need.add(key)
            else:
                need |= {k for k in _list_parts(documents, key) if k not in documents}
    return need


def _list_parts(documents: Mapping[str, Any], key: str) -> list[str]:
    """The part keys of the split chunk list ``key`` (``chunk_parts``); [] for a whole one."""
    doc = _dict(documents[key], key)
    if "parts" not in doc:
        return []
    return [_key(p, f"{key}: a part") for p in _list(doc["parts"], f"{key}: parts")]


def _own_files(manifest_key: str, manifest: Mapping[str, Any]) -> set[str]:
    """The keys of the objects in the upload's own folder (its top-level ``files``)."""
    folder = manifest_key.rsplit("/", 1)[0] + "/"
    return {folder + str(name) for name in _list(manifest.get("files"), "files")}


def _chunk(raw: Any) -> ChunkRef:
    item = _dict(raw, "a chunk")
    offset, length = item.get("offset"), item.get("length")
    if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
        raise ValueError("a chunk has no valid offset/length")
    return ChunkRef(_key(item, "a chunk"), offset, length)


def manifest_refs(
    upload_id: str,
    manifest_key: str,
    manifest: Mapping[str, Any],
    documents: Mapping[str, Any],
    shared: dict[Any, Any] | None = None,
) -> ManifestRefs:
    """The references of one manifest. ``documents``: decoded index parts and chunk lists.
    ``shared``: a table the manifests of one prune share, so that equal chunk tuples and
    key sets (the index parts and chunk lists uploads have in common) are held once.

    Raises ``MissingDocumentError`` when one it names is not in ``documents``, and
    ``ValueError`` when the manifest or a document is malformed.
    """
    objects = _own_files(manifest_key, manifest)
    chunks: dict[str, set[ChunkRef]] = {}
    children: dict[str, set[str]] = {}

    def add(holder: str, entries: list[Any]) -> None:
        for raw in entries:
            entry = _dict(raw, "an entry")
            if "chunks" in entry:
                refs = {_chunk(c) for c in _list(entry["chunks"], "chunks")}
                chunks.setdefault(holder, set()).update(refs)
            elif "chunk_list" in entry:
                key = _key(entry["chunk_list"], "a chunk_list")
                objects.add(key)
                children.setdefault(holder, set()).add(key)
                if key not in documents:
                    raise MissingDocumentError(key)
                parts = _list_parts(documents, key)
                for part in parts:  # a split list: its parts hold the chunks
                    objects.add(part)
                    children.setdefault(key, set()).add(part)
                for doc_key in parts or [key]:
                    refs = {_chunk(c) for c in _doc(documents, doc_key, "chunks")}
                    chunks.setdefault(doc_key, set()).update(refs)
            else:
                objects.add(_key(entry, "an entry"))

    add(manifest_key, _entries(manifest))
    for part in _parts(manifest):
        objects.add(part)
        children.setdefault(manifest_key, set()).add(part)
        add(part, _doc(documents, part, "files"))
    for name in inline_parts(manifest):  # held in the manifest: its entries are the manifest's
        add(manifest_key, _doc(documents, name, "files"))
    skipped, sealed = _sealed_index(manifest)
    if skipped is not None:
        objects.add(skipped)
    one = shared if shared is not None else {}
    return ManifestRefs(
        upload_id=upload_id,
        manifest_key=manifest_key,
        objects=frozenset(objects),
        chunks={h: _held_once(one, tuple(sorted(c))) for h, c in chunks.items()},
        children={h: _held_once(one, frozenset(k)) for h, k in children.items()},
        sealed=sealed,
    )


def _held_once(shared: dict[Any, Any], value: Any) -> Any:
    """``value``, or the equal one ``shared`` already holds (kept from then on): a kept
    upload shares most of its index parts with the uploads before it, and their chunk
    references were held once per upload (a prune of 200,000 files, 3 uploads kept: some
    90 MiB of ``ChunkRef`` held three times)."""
    return shared.setdefault(value, value)


def _sealed_index(manifest: Mapping[str, Any]) -> tuple[str | None, bool]:
    """(the key of ``metadata.index.skipped``, whether the index is sealed)."""
    meta = _dict(manifest.get("metadata", {}), "metadata")
    index = _dict(meta.get("index") or {}, "metadata.index")
    parts = _list(index.get("parts"), "index parts") if "parts" in index else []
    sealed = any(_dict(p, "an index part").get("encryption", "none") != "none" for p in parts)
    if "skipped" not in index:
        return None, sealed
    return _key(index["skipped"], "metadata.index.skipped"), True


def objects_list(manifest: Mapping[str, Any]) -> list[Any] | None:
    """A sealed upload's readable list of the objects it references
    (``metadata.index.objects``); None when it has none (an upload made before such
    lists, or not sealed)."""
    meta = manifest.get("metadata")
    index = meta.get("index") if isinstance(meta, Mapping) else None
    listed = index.get("objects") if isinstance(index, Mapping) else None
    return listed if isinstance(listed, list) else None


def sealed_objects_refs(
    upload_id: str, manifest_key: str, manifest: Mapping[str, Any], root: str
) -> ManifestRefs | None:
    """The references of a sealed upload from its objects list (``objects_list``), None
    without one: every key listed (each under ``root``, the system's prefix) and the
    upload's own top-level files. Its packs are whole objects here, never repacked
    (``sealed``). Raises ``ValueError`` when the list is malformed."""
    listed = objects_list(manifest)
    if listed is None:
        return None
    keys: set[str] = set()
    for key in listed:
        if not isinstance(key, str) or not key.startswith(root) or ".." in key.split("/"):
            raise ValueError(f"the objects list names {str(key)!r:.120}, not a key under {root}")
        keys.add(key)
    keys |= _own_files(manifest_key, manifest)
    return ManifestRefs(upload_id, manifest_key, objects=frozenset(keys), sealed=True)
