"""Index parts and chunk lists with ``encryption: "age"``: the sealed form of ``documents``.

The plaintext is the same canonical JSON, gzip-compressed the same way
(``documents.compress_document``), then sealed to the recipients. The object is named by
the keyed hash of the plaintext JSON (``NameKey.name_of``), not its sha256:
``systems/{sid}/{index|chunklists}/{pp}/{name}.json.gz.age``. Identical documents still
share one key (the sealed bytes differ at each write: age is randomised, so a document is
written once, as ``known_documents`` already ensures).

A chunk list ref has no ``encryption`` field in the contract (``{key, compression}``): a
sealed one is recognised by its key's ``.age`` suffix (:func:`document_encryption`), and the
stored bytes must then be age data. Reading is bounded exactly as ``documents`` bounds it:
at most ``sealed_size_bound(limit)`` stored bytes, ``limit`` bytes after opening and again
after decompressing. Problems are one :class:`~akoshad.storage.documents.DocumentError`
line; a missing or wrong identity stays an ``IdentityError`` (it is not damage).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from akoshad.storage.crypto import (
    Identities,
    Recipients,
    SealedDamaged,
    open_sealed,
    seal,
    sealed_size_bound,
)
from akoshad.storage.document_copies import DocumentCopies
from akoshad.storage.documents import (
    DOCUMENT_COMPRESSION,
    MAX_DOCUMENT_BYTES,
    DocumentError,
    DocumentKind,
    canonical_json,
    compress_document,
    decode_document,
    decompress_document,
    fetch_stored,
    parse_document,
)
from akoshad.storage.name_key import NameKey
from akoshad.storage.refs import Encryption
from akoshad.targets.base import Target

SEALED_SUFFIX = ".json.gz.age"


def sealed_document_key(system_id: str, kind: DocumentKind, plain: bytes, key: NameKey) -> str:
    """``systems/{sid}/{kind}/{pp}/{keyed name}.json.gz.age``."""
    if key.system_id != system_id:
        raise ValueError("the name key belongs to another system id")
    name = key.name_of(plain)
    return f"systems/{system_id}/{kind}/{name[:2]}/{name}{SEALED_SUFFIX}"


def encode_document_sealed(
    system_id: str,
    kind: DocumentKind,
    obj: Any,
    key: NameKey,
    recipients: Recipients,
    copies: DocumentCopies | None = None,
) -> tuple[str, bytes]:
    """``(key, stored bytes)`` of a sealed document, its plaintext kept in ``copies``;
    blocking (CPU), call from a thread."""
    plain = canonical_json(obj)
    doc_key = sealed_document_key(system_id, kind, plain, key)
    body = compress_document(plain)
    if copies is not None:
        copies.put(doc_key, body)
    return doc_key, seal(body, recipients)


@dataclass(frozen=True)
class Resealing:
    """What a repack seals the documents it rewrites with: the name key and the recipients
    configured now. Only documents this key named are rewritten (:meth:`named`), so a
    rewritten document is readable by exactly those who could read the one it replaces.
    ``copies``: the plaintext of the documents this machine sealed (``document_copies``),
    which opens them without the identity; what it rewrites is kept there too."""

    key: NameKey
    recipients: Recipients
    copies: DocumentCopies | None = None

    def named(self, doc_key: str, doc: Any) -> bool:
        """Whether the sealed document ``doc_key`` (decoded: ``doc``) was named by this key,
        i.e. written for the recipients configured now."""
        name = doc_key.rsplit("/", 1)[-1]
        return name == self.key.name_of(canonical_json(doc)) + SEALED_SUFFIX

    def encode(self, system_id: str, kind: DocumentKind, obj: Any) -> tuple[str, bytes]:
        """:func:`encode_document_sealed` with this key; blocking (CPU)."""
        return encode_document_sealed(system_id, kind, obj, self.key, self.recipients, self.copies)

    def copy_of(self, doc_key: str, compression: str, what: str, limit: int) -> Any | None:
        """The sealed document ``doc_key`` decoded from its copy, when the copy's plaintext
        gives that name (:meth:`named`); None otherwise. Blocking."""
        body = None if self.copies is None else self.copies.get(doc_key, limit)
        if body is None:
            return None
        try:
            doc = decode_document(body, compression, what, limit)
        except DocumentError:
            return None
        return doc if self.named(doc_key, doc) else None

    def keep_copy(self, doc_key: str, doc: Any) -> None:
        """Keep a copy of ``doc`` (the sealed document ``doc_key``, opened with the
        identity) when this key named it. Blocking."""
        if self.copies is not None and self.named(doc_key, doc):
            self.copies.put(doc_key, compress_document(canonical_json(doc)))


def document_encryption(key: str) -> Encryption:
    """``"age"`` for a sealed document's key, ``"none"`` otherwise (for chunk lists, whose
    ref carries no ``encryption``)."""
    return "age" if key.endswith(".age") else "none"


def sealed_index_part_json(key: str) -> dict[str, Any]:
    """One of ``metadata.index.parts`` naming a sealed document."""
    return {"key": key, "compression": DOCUMENT_COMPRESSION, "encryption": "age"}


def decode_document_sealed(
    stored: bytes,
    compression: str,
    encryption: str,
    what: str,
    identities: Identities | None,
    limit: int = MAX_DOCUMENT_BYTES,
) -> Any:
    """Open (when ``encryption`` is ``age``), decompress and parse one document, each step
    bounded by ``limit``. Blocking (CPU)."""
    return parse_document(
        decompress_sealed(stored, compression, encryption, what, identities, limit), what
    )


def decompress_sealed(
    stored: bytes,
    compression: str,
    encryption: str,
    what: str,
    identities: Identities | None,
    limit: int = MAX_DOCUMENT_BYTES,
) -> bytes:
    """``decode_document_sealed`` up to the JSON bytes, not parsed. Blocking (CPU)."""
    if encryption == "age":
        try:
            stored = open_sealed(stored, identities, limit, what)
        except SealedDamaged as exc:
            raise DocumentError(str(exc)) from None
    elif encryption != "none":
        raise DocumentError(f"{what}: unknown encryption {encryption!r:.20}")
    return decompress_document(stored, compression, what, limit)


async def read_document_sealed(
    target: Target,
    key: str,
    compression: str,
    encryption: str,
    identities: Identities | None,
    *,
    what: str = "document",
    limit: int = MAX_DOCUMENT_BYTES,
) -> Any:
    """``documents.read_document`` for sealed or plain documents: fetched with a bound
    (the sealed bound of ``limit``), opened, decoded, parsed."""
    what = f"{what} {key}"
    stored_limit = sealed_size_bound(limit) if encryption == "age" else limit
    stored = await fetch_stored(target, key, stored_limit, what)
    return await asyncio.to_thread(
        decode_document_sealed, stored, compression, encryption, what, identities, limit
    )
