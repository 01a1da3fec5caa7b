"""Reading an encrypted (sealed) format-2 upload back with an identity, for tests: the
entries through ``format2_read.read_entries`` (sealed index parts and chunk lists), every
file through ``fetch.fetch_file`` (sealed chunks opened and checked), and the sealed skip
list named by ``metadata.index.skipped``."""

from __future__ import annotations

from typing import Any

from akoshad.storage.crypto import Identities
from akoshad.storage.fetch import WholeObjectRanges, fetch_file
from akoshad.storage.format2_read import read_entries
from akoshad.storage.sealed_documents import read_document_sealed
from akoshad.storage.stored import StoredFile
from akoshad.targets.base import Target


async def sealed_files(
    target: Target, manifest: dict[str, Any], identities: Identities | None
) -> tuple[list[StoredFile], list[Any]]:
    """The files of an encrypted upload and its skipped list."""
    files = await read_entries(target, manifest, identities=identities)
    index = manifest["metadata"]["index"]
    skipped: list[Any] = []
    if "skipped" in index:
        ref = index["skipped"]
        doc = await read_document_sealed(
            target, ref["key"], ref["compression"], ref["encryption"], identities
        )
        skipped = doc["skipped"]
    return files, skipped


async def restore_sealed(
    target: Target, manifest: dict[str, Any], identities: Identities | None
) -> dict[str, bytes]:
    """Every file of an encrypted upload, opened with ``identities`` and checked."""
    files, _ = await sealed_files(target, manifest, identities)
    ranges = WholeObjectRanges(target)
    out: dict[str, bytes] = {}
    for f in files:
        assert all(c.encryption == "age" for c in f.chunks), f.path
        pieces: list[bytes] = []
        await fetch_file(target, f, pieces.append, ranges=ranges, identities=identities)
        out[f.path] = b"".join(pieces)
    return out
