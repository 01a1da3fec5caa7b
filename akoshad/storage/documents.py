"""Stored JSON documents of format 2: index parts and chunk lists, read with a bound.

An index part ``{"files": [...]}`` lives at ``systems/{sid}/index/{pp}/{sha}.json.gz`` and
a chunk list ``{"chunks": [...]}`` at ``systems/{sid}/chunklists/{pp}/{sha}.json.gz``, named
by the sha256 of the plaintext JSON (:func:`encode_document`: sorted keys, no spaces), so
identical documents are shared. Decoding is bounded: a document never inflates beyond
:data:`MAX_DOCUMENT_BYTES`.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys
import zlib
from typing import Any, Literal

from akoshad.storage.errors import StorageError
from akoshad.targets.base import Target

if sys.version_info >= (3, 14):  # pragma: no cover - stdlib from 3.14 on
    from compression import zstd
else:
    from backports import zstd

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
DocKind = Literal["index", "chunklists"]
_SYSTEM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


class DocumentError(StorageError):
    """A stored document (manifest, index part, chunk list) is missing, too large or
    malformed."""


async def read_bounded(target: Target, key: str, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The stored bytes of ``key``, at most ``limit``; ``KeyError`` when it is missing."""
    parts: list[bytes] = []
    size = 0
    async for chunk in target.read(key):
        size += len(chunk)
        if size > limit:
            raise DocumentError(f"{key} is larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _inflate(stored: bytes, compression: str, limit: int) -> bytes:
    if compression == "none":
        return stored
    dec: Any
    if compression == "gzip":
        dec = zlib.decompressobj(31)
    elif compression == "zstd":
        dec = zstd.ZstdDecompressor()
    else:
        raise DocumentError(f"unknown compression {compression!r}")
    try:
        out: bytes = dec.decompress(stored, limit + 1)
    except (zlib.error, zstd.ZstdError) as exc:
        raise DocumentError(f"does not decode ({compression}): {exc}") from None
    if len(out) > limit:
        raise DocumentError(f"inflates beyond {limit} bytes")
    if not dec.eof:
        raise DocumentError(f"is truncated ({compression})")
    return out


def decode_document(
    stored: bytes, compression: str, field: str, limit: int = MAX_DOCUMENT_BYTES
) -> dict[str, Any]:
    """A stored document as a JSON object holding the list ``field``."""
    try:
        doc = json.loads(_inflate(stored, compression, limit))
    except (ValueError, UnicodeDecodeError):
        raise DocumentError("is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get(field), list):
        raise DocumentError(f"is not an object with a list {field!r}")
    return doc


def encode_document(doc: dict[str, Any]) -> tuple[str, bytes]:
    """(sha256 of the canonical plaintext JSON, its gzip bytes)."""
    plain = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(plain).hexdigest(), gzip.compress(plain, compresslevel=6, mtime=0)


def document_key(system_id: str, kind: DocKind, sha256: str) -> str:
    """``systems/{sid}/{index|chunklists}/{pp}/{sha}.json.gz``."""
    if not _SYSTEM_ID_RE.match(system_id):
        raise ValueError(f"invalid system_id {system_id!r}")
    return f"systems/{system_id}/{kind}/{sha256[:2]}/{sha256}.json.gz"
