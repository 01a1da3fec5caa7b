"""Large chunk lists split into content-defined parts that uploads share.

An entry's ``chunk_list`` ``{key, compression}`` names a stored document that is either

- ``{"chunks": [...]}``: the whole list (lists of up to :data:`SPLIT_MIN_CHUNKS` chunks,
  and every list written before parts existed: readable forever), or
- ``{"parts": [{key, compression, encryption, count, size}, ...]}``: the list cut into
  parts, each a stored ``{"chunks": [...]}`` of ``count`` chunks whose plaintext sizes add
  up to ``size``; the parts' chunks, concatenated, are the file's. Parts never nest.

A part ends after a chunk whose id (its plaintext sha256; with encryption its keyed name,
so the cut reveals nothing) has its low :data:`PART_BOUNDARY_BITS` bits zero, once the part
holds :data:`PART_MIN_CHUNKS`, or at :data:`PART_MAX_CHUNKS`; a chunk whose id the part
already holds never ends it. (A file often repeats one chunk all along, a free block or a
filler row: when that id was a cut, every part was cut at its minimum, a 1 GiB file made
300-odd parts instead of 60-70 for one key in thirty-two.) Cuts depend on the part's chunks
alone, so a checkpoint that rewrites a few regions of a large database changes only the
parts holding them (and the small top-level list): the others keep their content, hence
their key, and are not written again. Parts are documents like any other
(``chunklists/{pp}/{name}.json.gz[.age]``), sealed like index parts when encryption is on.

Readers check a split list against the entry before fetching a part (part sizes add up to
the entry's size, at most :data:`~akoshad.storage.refs.MAX_CHUNK_LIST_PARTS` parts, no part
holds more chunks than bytes), and each part against its ref (its ``count`` and ``size``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from akoshad.storage.errors import RefError
from akoshad.storage.name_key import NameKey
from akoshad.storage.refs import ChunkListPartRef, ChunkRef, Encryption

SPLIT_MIN_CHUNKS = 256  # lists of more chunks are split into parts
PART_BOUNDARY_BITS = 5  # a part ends after about one chunk in 32
PART_MIN_CHUNKS = 8
PART_MAX_CHUNKS = 128  # bounds the part one changed chunk rewrites

Boundary = Callable[[str], bool]


def boundary_of(name_key: NameKey | None = None, bits: int | None = None) -> Boundary:
    """The test "a part ends after this chunk" for chunk ids: on the sha256 itself, or on
    its keyed name (``name_key``) when the lists are sealed."""
    mask = (1 << (PART_BOUNDARY_BITS if bits is None else bits)) - 1

    def ends(sha256: str) -> bool:
        hashed = sha256 if name_key is None else name_key.name(sha256)
        return int(hashed[-8:], 16) & mask == 0

    return ends


def cut_chunk_parts(
    chunks: Sequence[Mapping[str, Any]],
    ends: Boundary,
    min_chunks: int | None = None,
    max_chunks: int | None = None,
) -> list[list[Mapping[str, Any]]]:
    """``chunks`` (JSON chunk refs, in file order) cut into parts at content-defined
    boundaries, each of ``min_chunks`` to ``max_chunks`` chunks (the last may be shorter)."""
    lo = PART_MIN_CHUNKS if min_chunks is None else min_chunks
    hi = PART_MAX_CHUNKS if max_chunks is None else max_chunks
    parts: list[list[Mapping[str, Any]]] = []
    current: list[Mapping[str, Any]] = []
    in_part: set[str] = set()
    for chunk in chunks:
        current.append(chunk)
        ident = str(chunk["sha256"])
        repeated = ident in in_part
        in_part.add(ident)
        if len(current) >= hi or (len(current) >= lo and not repeated and ends(ident)):
            parts.append(current)
            current = []
            in_part = set()
    if current:
        parts.append(current)
    return parts


def part_json(key: str, encryption: Encryption, chunks: Sequence[Mapping[str, Any]]) -> Any:
    """One of a split list's ``parts``: the stored ``{"chunks": chunks}`` named ``key``
    (gzip, as ``documents.compress_document`` stores every document)."""
    size = sum(int(c["size"]) for c in chunks)
    return ChunkListPartRef(key, "gzip", encryption, len(chunks), size).to_json()


def is_split(doc: object) -> bool:
    """True for a split list's top-level document (``{"parts": [...]}``)."""
    return isinstance(doc, dict) and "parts" in doc


def check_split(
    parts: Sequence[ChunkListPartRef], top_key: str, root: str, size: int, what: str
) -> None:
    """:class:`RefError` unless ``parts`` can make a file of ``size`` bytes: declared sizes
    add up to it, no part claims more chunks than bytes, every key is under ``root`` and
    none is the top-level list itself. Checked before any part is fetched."""
    total = sum(p.size for p in parts)
    if total != size:
        raise RefError(f"{what}: its parts add up to {total} bytes, the file has {size}")
    for i, part in enumerate(parts):
        if part.count > max(part.size, 1):
            raise RefError(f"{what}: part {i} claims {part.count} chunks in {part.size} bytes")
        if not part.key.startswith(root) or part.key == top_key:
            raise RefError(f"{what}: part {i} key {part.key!r:.120} is not a part under {root}")


def check_part(part: ChunkListPartRef, chunks: Sequence[ChunkRef], what: str) -> None:
    """:class:`RefError` unless a fetched part holds what its ref declares."""
    if len(chunks) != part.count:
        raise RefError(f"{what} holds {len(chunks)} chunks, its list says {part.count}")
    total = sum(c.size for c in chunks)
    if total != part.size:
        raise RefError(f"{what} holds {total} bytes, its list says {part.size}")
