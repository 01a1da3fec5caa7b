"""What rebuilding the ledger from an encrypted upload needs (``recovery.rebuild_ledger``):
the identity when it is readable here, and proof that the target's name key is the one the
upload was sealed with.

A sealed chunk's identity in the ledger is its keyed name, so seeding the ledger with
another key's names would make new uploads reference chunks sealed to an older recipient
list (unreadable with the new identity alone). The proof: an index part's object name is
the key's name of the part's plaintext (``sealed_documents.sealed_document_key``), so the
first part is read (from the manifest when it is held there: its ``name``), opened and
named again with the key; the names must match.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from akoshad.pipeline.sealing import Sealing
from akoshad.storage.crypto import Identities, sealed_size_bound
from akoshad.storage.documents import MAX_DOCUMENT_BYTES, canonical_json, fetch_stored
from akoshad.storage.refs import IndexPartRef
from akoshad.storage.sealed_documents import decode_document_sealed, sealed_document_key
from akoshad.targets.base import Target


async def sealed_with(
    target: Target,
    system_id: str,
    manifest: Mapping[str, Any],
    sealing: Sealing,
    identities: Identities,
) -> bool:
    """True when the first sealed index part of ``manifest`` is named with ``sealing``'s
    name key (the upload was sealed with it). ``IdentityError`` when it does not open."""
    parts = manifest["metadata"]["index"]["parts"]
    first = next((p for p in parts if p.get("encryption") == "age"), None)
    if first is None:
        return False
    part = IndexPartRef.from_json(first, "metadata.index.parts[0]")
    key, what = part.key, f"index part {part.key}"
    stored = part.inline  # a part held in the manifest: the name it would have had
    if stored is None:
        stored = await fetch_stored(target, key, sealed_size_bound(MAX_DOCUMENT_BYTES), what)
    doc = await asyncio.to_thread(
        decode_document_sealed, stored, first["compression"], "age", what, identities
    )
    plain = canonical_json(doc)
    return sealed_document_key(system_id, "index", plain, sealing.key) == key
