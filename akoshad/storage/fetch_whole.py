"""Stream a whole stored object (bucket format 1) into a sink, checking every byte.

The object is read piece by piece, never more than its ``stored_size``, and decoded (gzip
or stored as it is) in bounded steps, never more than its declared ``size``; damage is an
:class:`~akoshad.errors.IntegrityError` naming the file and the object. Used by
:mod:`akoshad.storage.fetch`.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import Any

from akoshad.errors import IntegrityError
from akoshad.storage.stored import StoredFile, WholeObject
from akoshad.targets.base import Target

DECODE_STEP = 1024 * 1024  # decoded bytes per step of a whole object


def _whole_error(f: StoredFile, whole: WholeObject, why: str) -> IntegrityError:
    return IntegrityError(f"{f.path}: object {whole.key} is damaged: {why}", object_key=whole.key)


def _decode_piece(
    f: StoredFile,
    whole: WholeObject,
    dec: Any,
    piece: bytes,
    size: int,
    digest: Any,
    write: Callable[[bytes], Any],
) -> int:
    """Decode one stored piece in bounded steps, stopping past the file's size."""
    buf = piece
    while True:
        if dec is None:
            if not buf:
                break
            out, buf = buf, b""
        else:
            try:
                out = dec.decompress(buf, DECODE_STEP)
            except zlib.error as exc:
                raise _whole_error(f, whole, f"cannot be decoded: {exc}") from None
            buf = dec.unconsumed_tail
            if dec.eof and (buf or dec.unused_data):
                raise _whole_error(f, whole, "trailing bytes after its gzip stream")
            if not out and not buf:
                break
        size += len(out)
        if size > whole.size:
            raise _whole_error(f, whole, f"decodes to more than its declared {whole.size} bytes")
        digest.update(out)
        write(out)
    return size


async def fetch_whole(
    target: Target, f: StoredFile, whole: WholeObject, digest: Any, write: Callable[[bytes], Any]
) -> int:
    """Stream ``whole`` into ``write`` (updating ``digest``); its decoded size."""
    dec = zlib.decompressobj(31) if whole.compression == "gzip" else None
    stored = size = 0
    try:
        async for piece in target.read(whole.key):
            stored += len(piece)
            if stored > whole.stored_size:
                raise _whole_error(f, whole, f"more than its listed {whole.stored_size} bytes")
            size = await asyncio.to_thread(_decode_piece, f, whole, dec, piece, size, digest, write)
    except KeyError:
        raise IntegrityError(
            f"{f.path}: object {whole.key} is missing", object_key=whole.key
        ) from None
    if dec is not None:
        size = await asyncio.to_thread(_decode_piece, f, whole, dec, b"", size, digest, write)
        if not dec.eof:
            raise _whole_error(f, whole, "its gzip stream is truncated")
    if stored != whole.stored_size:
        raise _whole_error(f, whole, f"{stored} stored bytes, listed {whole.stored_size}")
    return size
