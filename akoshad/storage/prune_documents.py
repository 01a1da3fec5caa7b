"""Reading the documents a kept manifest names, for a prune (``prune_load``): index parts,
chunk lists and chunk list parts, in rounds (a split list names its parts), each bounded and
checked to hold its list; sealed ones opened with the identity or from their copies
(``Resealing``). A manifest whose documents cannot be read is marked ``unreadable`` when the
target dates what it stores, or stops the prune (:class:`UnreadableDocuments`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from akoshad.storage import chunk_parts
from akoshad.storage.crypto import Identities, IdentityError, identity_needed
from akoshad.storage.documents import DocumentError, list_document
from akoshad.storage.errors import StorageError
from akoshad.storage.prune_refs import (
    ManifestRefs,
    documents_needed,
    inline_names,
    inline_parts,
    manifest_refs,
    sealed_objects_refs,
)
from akoshad.storage.sealed_documents import (
    Resealing,
    decode_document_sealed,
    document_encryption,
    read_document_sealed,
)
from akoshad.targets.base import Target

_LIST = "chunks|parts"  # a chunk list's field: whole or split (``chunk_parts``)


class PruneError(StorageError):
    """A prune stopped (before deleting anything it could not account for)."""


class UnreadableDocuments(PruneError):
    """A kept manifest is damaged, or a document it names is missing or damaged
    (``reason`` says which)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}; prune stopped, nothing deleted")
        self.reason = reason


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _declared(
    doc: dict[str, Any], documents: dict[str, dict[str, Any]]
) -> dict[str, tuple[str, str, str]]:
    """Document key -> (compression, encryption, list field) for the parts and chunk lists
    ``doc`` names (so far as the documents already read tell)."""
    out: dict[str, tuple[str, str, str]] = {}
    meta = _obj(doc.get("metadata"))
    index = _obj(meta.get("index"))
    files = meta.get("files")
    entries = list(files) if isinstance(files, list) else []
    parts = index.get("parts")
    for part in parts if isinstance(parts, list) else []:
        name = part.get("name" if "inline" in part else "key") if isinstance(part, dict) else None
        if isinstance(part, dict) and isinstance(name, str):
            enc = str(part.get("encryption", "none"))
            out[name] = (str(part.get("compression", "none")), enc, "files")
            more = documents.get(name, {}).get("files")
            entries += more if isinstance(more, list) else []
    for entry in entries:
        cl = entry.get("chunk_list") if isinstance(entry, dict) else None
        if isinstance(cl, dict) and isinstance(cl.get("key"), str):
            enc = document_encryption(cl["key"])
            out[cl["key"]] = (str(cl.get("compression", "none")), enc, _LIST)
            parts = documents.get(cl["key"], {}).get("parts")
            for part in parts if isinstance(parts, list) else []:
                if isinstance(part, dict) and isinstance(part.get("key"), str):
                    comp, enc = str(part.get("compression")), str(part.get("encryption"))
                    out[part["key"]] = (comp, enc, "chunks")
    return out


def _checked(doc: Any, field: str, what: str) -> dict[str, Any]:
    """``doc`` when it has the list ``field``; a chunk list (``_LIST``) may be whole
    (``chunks``) or split (``parts``), a part of one only whole (parts never nest)."""
    if field == _LIST:
        field = "parts" if chunk_parts.is_split(doc) else "chunks"
    return list_document(doc, field, what)


_REPEATED = ("key", "compression", "encryption", "kind")  # values many entries share


def _shared_str(memo: dict[str, str], value: Any) -> Any:
    return memo.setdefault(value, value) if isinstance(value, str) else value


def _compact_chunks(chunks: Any, memo: dict[str, str], sha: Any) -> None:
    for chunk in chunks if isinstance(chunks, list) else ():
        if not isinstance(chunk, dict):
            continue
        for name in _REPEATED:
            if name in chunk:
                chunk[name] = _shared_str(memo, chunk[name])
        if isinstance(sha, str) and chunk.get("sha256") == sha:  # a one-chunk file's
            chunk["sha256"] = sha


def compact_document(doc: dict[str, Any], memo: dict[str, str]) -> dict[str, Any]:
    """``doc`` (an index part or a chunk list) with its equal strings held once: the pack
    key of every chunk in one pack, ``compression``, ``encryption``, ``kind``, and a small
    file's hash in its entry and its chunk. Nothing changes but what shares what: a prune
    holds every kept upload's documents (an index part entry of a small file took ~1.3 KB;
    a fifth of it went to such copies). ``memo``: the strings held so far, one per prune
    (only the values of those fields: few)."""
    _compact_chunks(doc.get("chunks"), memo, None)
    files = doc.get("files")
    for entry in files if isinstance(files, list) else ():
        if isinstance(entry, dict):
            if "kind" in entry:
                entry["kind"] = _shared_str(memo, entry["kind"])
            _compact_chunks(entry.get("chunks"), memo, entry.get("sha256"))
    return doc


@dataclass(frozen=True)
class DocumentReader:
    """How one document is read: a sealed one from its copy (``Resealing.copies``) when
    the copy proves itself and the object is stored, else from the target with the
    identity (without one: ``IdentityNeeded``, nothing fetched). A sealed document the
    identity opens and the name key named gets a copy, for the prunes without it."""

    target: Target
    limit: int
    identities: Identities | None = None
    resealing: Resealing | None = None
    stored: Collection[str] = ()
    memo: dict[str, str] = dataclasses.field(default_factory=dict)  # ``compact_document``'s

    async def read(
        self, key: str, compression: str, enc: str, what: str, inline: bytes | None = None
    ) -> Any:
        """``inline``: the sealed bytes of an index part held in the manifest (``key`` its
        name; nothing fetched)."""
        resealing = self.resealing
        sealed = enc == "age"
        if sealed and resealing is not None and resealing.copies is not None:
            if key in self.stored or inline is not None:
                doc = await asyncio.to_thread(
                    resealing.copy_of, key, compression, f"{what} {key}", self.limit
                )
                if doc is not None:
                    return doc
            if self.identities is None:  # not fetched: it could not be opened
                raise identity_needed(f"{what} {key}")
        if inline is not None:
            doc = await asyncio.to_thread(
                decode_document_sealed,
                inline,
                compression,
                "age",
                f"{what} {key}",
                self.identities,
                self.limit,
            )
        else:
            doc = await read_document_sealed(
                self.target, key, compression, enc, self.identities, what=what, limit=self.limit
            )
        if sealed and resealing is not None:
            await asyncio.to_thread(resealing.keep_copy, key, doc)
        return doc


async def read_documents(
    reader: DocumentReader, loaded: dict[str, Any], documents: dict[str, dict[str, Any]]
) -> None:
    """Read the documents ``loaded`` (a manifest) needs into ``documents``, in rounds."""
    inline = inline_parts(loaded)
    for _ in range(4):
        need = sorted(documents_needed(loaded, documents))
        if not need:
            return
        declared = _declared(loaded, documents)
        for key in need:
            compression, enc, field = declared.get(key, ("none", "none", "chunks"))
            what = {"files": "index part", _LIST: "chunk list"}.get(field, "chunk list part")
            try:
                doc = await reader.read(key, compression, enc, what, inline.get(key))
                checked = _checked(doc, field, f"{what} {key}")
                documents[key] = await asyncio.to_thread(compact_document, checked, reader.memo)
            except DocumentError as exc:
                raise UnreadableDocuments(str(exc)) from None
    raise UnreadableDocuments("its documents nest too deep")


@dataclass
class ManifestOpener:
    """Reads what one manifest references (its documents into ``documents``)."""

    documents: dict[str, dict[str, Any]]
    reader: DocumentReader
    stored_at: dict[str, float]
    shared: dict[Any, Any] = dataclasses.field(default_factory=dict)  # for ``manifest_refs``

    async def refs(self, upload_id: str, key: str, doc: dict[str, Any], root: str) -> ManifestRefs:
        """The upload's references: from its objects list when it has one and its documents
        could not be rewritten anyway, else from its documents (``rewritable`` when sealed
        and named by the resealing key). A document missing or damaged, with no list: the
        references are unknown (``unreadable``) when the manifest's stored time is known
        (the planner keeps everything stored up to it), else the prune stops. The sealed
        documents are opened with the identity or, without it, from their copies."""
        listed = sealed_objects_refs(upload_id, key, doc, root)
        resealing = self.reader.resealing
        can_open = self.reader.identities is not None or (
            resealing is not None and resealing.copies is not None
        )
        if listed is not None and (resealing is None or not can_open):
            return listed
        try:
            await read_documents(self.reader, doc, self.documents)
        except (IdentityError, PruneError) as exc:
            if listed is not None:
                # sealed to recipients whose identity is not here, or a document missing
                # or damaged: the list stands (the planner names what is missing), packs stay
                return listed
            if isinstance(exc, UnreadableDocuments):
                return self.unreadable(upload_id, key, exc)
            raise
        refs = manifest_refs(upload_id, key, doc, self.documents, self.shared)
        if refs.sealed and self._named(refs, doc):
            return replace(refs, rewritable=True)
        return refs

    def unreadable(self, upload_id: str, key: str, exc: UnreadableDocuments) -> ManifestRefs:
        """The references of a kept upload that cannot be read: unknown, marked so when the
        manifest's stored time is known (the planner keeps what was stored up to it);
        otherwise ``exc`` stops the prune."""
        if key not in self.stored_at:
            raise exc
        return ManifestRefs(upload_id, key, unreadable=exc.reason)

    def _named(self, refs: ManifestRefs, manifest: dict[str, Any]) -> bool:
        """Whether the resealing key named every sealed document ``refs`` holds."""
        resealing = self.reader.resealing
        if resealing is None:
            return False
        docs = (refs.named() | inline_names(manifest)) & self.documents.keys()
        return all(
            resealing.named(k, self.documents[k]) for k in docs if document_encryption(k) == "age"
        )
