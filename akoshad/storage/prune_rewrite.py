"""Rewrite a kept manifest after a repack: chunks that moved point at their new pack.

Chunk lists (a split list's parts, then its top-level list: ``chunk_parts``) and index
parts that change are written first, under new content-addressed keys
(``documents.encode_document``, exactly as the format-2 writer encodes them: the same
canonical JSON, the same gzip bytes, so the same key), then the manifest itself in one PUT
(``layout.encode_manifest``; an atomic replace on both targets). Entries, parts and fields
that do not change are kept as they are, so a manifest only differs where chunk locations
moved. An index part held in the manifest (``inline``) is held there again, sealed anew.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from akoshad.manifest.layout import encode_manifest
from akoshad.storage import chunk_parts, refs
from akoshad.storage.documents import (
    DOCUMENT_COMPRESSION,
    DOCUMENT_CONTENT_TYPE,
    DocumentKind,
    chunk_list_json,
    encode_document,
    index_part_json,
)
from akoshad.storage.errors import RefError
from akoshad.storage.prune_refs import ChunkRef as PlanChunk
from akoshad.storage.prune_refs import ManifestRefs, manifest_refs
from akoshad.storage.repack import NewPack
from akoshad.storage.sealed_documents import Resealing, document_encryption, sealed_index_part_json
from akoshad.targets.base import Target


class RelocationError(ValueError):
    """A chunk in a repacked pack is not in the new pack (the plan and the manifests
    disagree); the old pack must not be deleted."""


@dataclass
class Relocator:
    """Where the chunks of repacked packs went: source pack -> (new pack, its key)."""

    moves: dict[str, tuple[NewPack, str]] = field(default_factory=dict)
    moved: dict[str, refs.ChunkRef] = field(default_factory=dict)  # identity -> new location
    # what sealed documents are rewritten with; its key gives a sealed chunk's identity
    resealing: Resealing | None = None

    def add(self, pack: NewPack, key: str) -> None:
        for source in pack.sources:
            self.moves[source.key] = (pack, key)

    def chunk(self, raw: Any) -> Any:
        """``raw`` (a chunk dict) pointing at its new location, or ``raw`` unchanged."""
        if not isinstance(raw, dict) or raw.get("key") not in self.moves:
            return raw
        pack, new_key = self.moves[raw["key"]]
        offset, length = raw.get("offset"), raw.get("length")
        if not isinstance(offset, int) or not isinstance(length, int):
            raise RelocationError(f"a chunk in {raw['key']} has no valid offset/length")
        new_offset = pack.relocate(PlanChunk(raw["key"], offset, length))
        if new_offset is None:
            raise RelocationError(f"chunk at {raw['key']}:{offset}+{length} was not copied")
        out = {**raw, "key": new_key, "offset": new_offset}
        try:
            ref = refs.ChunkRef.from_json(out)
        except RefError:
            return out  # not a strict ref: still relocated, just not offered to the ledger
        if ref.encryption == "none":
            self.moved[ref.sha256] = ref
        elif self.resealing is not None:  # only uploads named by this key are rewritten
            self.moved[self.resealing.key.name(ref.sha256)] = ref
        return out

    def chunks(self, items: Any) -> tuple[Any, bool]:
        if not isinstance(items, list):
            return items, False
        new = [self.chunk(c) for c in items]
        return new, any(a is not b for a, b in zip(new, items, strict=True))


@dataclass
class Rewriter:
    """Rewrites manifests of one system, writing the documents that change."""

    target: Target
    system_id: str
    relocator: Relocator
    documents: dict[str, dict[str, Any]]
    written: dict[str, int] = field(default_factory=dict)  # new document key -> stored size
    refs: dict[str, ManifestRefs] = field(default_factory=dict)  # each manifest rewritten

    async def _store(self, kind: DocumentKind, doc: dict[str, Any], old_key: str) -> str:
        """Store ``doc`` (replacing ``old_key``), sealed (the relocator's ``resealing``) when
        that one was."""
        resealing = self.relocator.resealing
        if document_encryption(old_key) == "none":
            key, data = await asyncio.to_thread(encode_document, self.system_id, kind, doc)
        elif resealing is None:
            raise RelocationError(f"{old_key} is sealed and no recipients are configured")
        else:
            key, data = await asyncio.to_thread(resealing.encode, self.system_id, kind, doc)
        if key not in self.written:  # always written: an equal old one may have been swept
            await self.target.put_bytes(key, data, DOCUMENT_CONTENT_TYPE)
            self.written[key] = len(data)
            self.documents[key] = doc
        return key

    async def _entry(self, entry: Any) -> tuple[Any, bool]:
        if not isinstance(entry, dict):
            return entry, False
        if "chunks" in entry:
            new, changed = self.relocator.chunks(entry["chunks"])
            return ({**entry, "chunks": new}, True) if changed else (entry, False)
        ref = entry.get("chunk_list")
        if not isinstance(ref, dict) or ref.get("key") not in self.documents:
            return entry, False
        doc = self.documents[ref["key"]]
        if chunk_parts.is_split(doc):
            parts, changed = await self._list_parts(doc.get("parts"))
            new_doc = {**doc, "parts": parts}
        else:
            chunks, changed = self.relocator.chunks(doc.get("chunks"))
            new_doc = {**doc, "chunks": chunks}
        if not changed:
            return entry, False
        key = await self._store("chunklists", new_doc, ref["key"])
        return {**entry, "chunk_list": chunk_list_json(key)}, True

    async def _list_parts(self, parts: Any) -> tuple[Any, bool]:
        """The parts of a split chunk list, each whose chunks moved stored anew."""
        if not isinstance(parts, list):
            return parts, False
        out: list[Any] = []
        changed = False
        for part in parts:
            key = part.get("key") if isinstance(part, dict) else None
            doc = self.documents.get(key) if isinstance(key, str) else None
            chunks, did = self.relocator.chunks(doc.get("chunks") if doc is not None else None)
            if did and doc is not None and isinstance(part, dict) and isinstance(key, str):
                new_key = await self._store("chunklists", {**doc, "chunks": chunks}, key)
                part = {**part, "key": new_key, "compression": DOCUMENT_COMPRESSION}
            out.append(part)
            changed |= did
        return out, changed

    async def _entries(self, entries: Any) -> tuple[Any, bool]:
        if not isinstance(entries, list):
            return entries, False
        out: list[Any] = []
        changed = False
        for entry in entries:
            new, did = await self._entry(entry)
            out.append(new)
            changed |= did
        return out, changed

    async def _parts(self, parts: list[Any]) -> tuple[list[Any], bool]:
        out: list[Any] = []
        changed = False
        for part in parts:
            inline = isinstance(part, dict) and "inline" in part
            key = part.get("name" if inline else "key") if isinstance(part, dict) else None
            doc = self.documents.get(key) if isinstance(key, str) else None
            if doc is None or not isinstance(key, str):
                out.append(part)
                continue
            files, did = await self._entries(doc.get("files"))
            if did and inline:
                part = await self._inline("index", {**doc, "files": files}, key)
            elif did:
                new_key = await self._store("index", {**doc, "files": files}, key)
                sealed = document_encryption(new_key) == "age"
                part = sealed_index_part_json(new_key) if sealed else index_part_json(new_key)
            out.append(part)
            changed |= did
        return out, changed

    async def _inline(self, kind: DocumentKind, doc: dict[str, Any], old: str) -> dict[str, Any]:
        """The rewritten form of an index part held in the manifest (``old`` its name):
        held there again, sealed anew, or stored when its sealed bytes grew past
        ``refs.MAX_INLINE_PART_BYTES``."""
        resealing = self.relocator.resealing
        if resealing is None:
            raise RelocationError(f"{old} is sealed and no recipients are configured")
        name, data = await asyncio.to_thread(resealing.encode, self.system_id, kind, doc)
        if len(data) > refs.MAX_INLINE_PART_BYTES:
            return sealed_index_part_json(await self._store(kind, doc, old))
        self.documents[name] = doc
        return refs.inline_part_json(name, data, DOCUMENT_COMPRESSION)

    async def rewrite(
        self, manifest_key: str, manifest: dict[str, Any], upload_id: str = ""
    ) -> dict[str, Any] | None:
        """Write the rewritten documents, then the manifest; returns the new manifest, or
        None when nothing in it moved (then nothing is written). What the new one
        references is kept in ``refs``."""
        meta = manifest.get("metadata")
        if not isinstance(meta, dict):
            return None
        new_meta = dict(meta)
        files, changed = await self._entries(meta.get("files"))
        if changed:
            new_meta["files"] = files
        index = meta.get("index")
        if isinstance(index, dict) and isinstance(index.get("parts"), list):
            parts, did = await self._parts(index["parts"])
            if did:
                new_meta["index"] = {**index, "parts": parts}
            changed |= did
        if not changed:
            return None
        new = {**manifest, "metadata": new_meta}
        moved = manifest_refs(upload_id, manifest_key, new, self.documents)
        if isinstance(index, dict) and isinstance(index.get("objects"), list):
            new_meta["index"] = {**new_meta["index"], "objects": moved.objects_list(new)}
        data = encode_manifest(new)
        await self.target.put_bytes(manifest_key, data, "application/json")
        self.written[manifest_key] = len(data)
        self.refs[manifest_key] = moved
        return new
