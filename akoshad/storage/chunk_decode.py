"""Decoding the stored bytes of one chunk for ``fetch``: opened (``encryption: age``),
decompressed with the codec's hard bound, size checked, and its sha256 checked unless the
caller checks the whole file's instead (``check=False``: a restore hashes every byte
once, the file's; ``fetch.fetch_file`` then names the damaged chunk by a checked second
read when the file does not match).

A chunk stored as it is (no compression, no encryption) is checked in place: the
decoded bytes are the view into the read it came in, never copied, even when it came in
several pieces (a tuple of views, as a streamed read cuts it). Blocking (CPU).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from akoshad.storage.codec import decode_chunk, decompress
from akoshad.storage.crypto import Identities, decode_sealed_chunk, open_sealed_chunk
from akoshad.storage.errors import CorruptChunk, StorageError
from akoshad.storage.refs import MAX_CHUNK_SIZE, ChunkRef

Piece = bytes | memoryview  # stored or decoded bytes (a view into a read, uncopied)
Stored = Piece | tuple[memoryview, ...]  # a chunk's bytes: in one piece, or in several
Decode = Callable[[Stored, ChunkRef], Stored]


def parts(data: Stored) -> tuple[Piece, ...]:
    """The pieces of ``data``, in order."""
    return data if isinstance(data, tuple) else (data,)


def joined(data: Stored) -> Piece:
    """``data`` in one piece (pieces are joined: a copy)."""
    return b"".join(data) if isinstance(data, tuple) else data


def _stored_length(stored: Stored, ref: ChunkRef) -> int:
    n = sum(len(p) for p in stored) if isinstance(stored, tuple) else len(stored)
    if n != ref.length:
        raise CorruptChunk(f"chunk {ref.sha256[:12]}: got {n} stored bytes, expected {ref.length}")
    return n


def _check_sha(data: Stored, ref: ChunkRef) -> None:
    digest = hashlib.sha256()
    for part in parts(data):
        digest.update(part)
    if digest.hexdigest() != ref.sha256:
        raise CorruptChunk(f"chunk {ref.sha256[:12]} does not match its sha256")


def _plain(stored: Stored, ref: ChunkRef, check: bool) -> Stored:
    """A chunk stored as it is, checked as ``codec.decode_chunk`` checks it (same errors),
    without a copy."""
    n = _stored_length(stored, ref)
    if not 0 <= ref.size <= MAX_CHUNK_SIZE:
        raise CorruptChunk(f"declared chunk size {ref.size} is out of range")
    if n != ref.size:
        raise CorruptChunk(f"stored chunk has {n} bytes, expected {ref.size}")
    if check:
        _check_sha(stored, ref)
    return stored


def _unhashed(stored: Piece, ref: ChunkRef, identities: Identities | None) -> bytes:
    """What ``decode_chunk``/``decode_sealed_chunk`` do, but the chunk's sha256."""
    _stored_length(stored, ref)
    if ref.encryption == "age":
        packed = open_sealed_chunk(bytes(stored), ref, identities)
    elif ref.encryption == "none":
        packed = bytes(stored)
    else:
        raise StorageError(f"chunk {ref.sha256[:12]} is encrypted ({ref.encryption})")
    return decompress(packed, ref.compression, ref.size)


def chunk_decoder(identities: Identities | None, *, check: bool = True) -> Decode:
    """How stored chunks are decoded: sealed ones (``encryption: age``) opened with
    ``identities`` first (none: an ``IdentityError``, not damage; one that opened the
    upload's documents and not the chunk: damage, see ``open_sealed_chunk``); each chunk's
    sha256 checked unless ``check`` is false (the caller hashes the file)."""

    def decode(stored: Stored, ref: ChunkRef) -> Stored:
        if ref.encryption == "none" and ref.compression == "none":
            return _plain(stored, ref, check)
        stored = joined(stored)
        if not check:
            return _unhashed(stored, ref, identities)
        if ref.encryption == "age":
            return decode_sealed_chunk(bytes(stored), ref, identities)
        return decode_chunk(bytes(stored), ref)

    return decode


plain_decoder = chunk_decoder(None)
