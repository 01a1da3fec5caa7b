"""Ranged reads from S3: ``GetObject`` with ``Range: bytes=a-b``, the way restore reads the
chunks of a pack without downloading the whole pack.

One request per read, retried like every request of the target (a body that breaks
mid-way is read again). :func:`stream_range` is the same request with its body handed on
piece by piece as it arrives (a restore decodes a pack's chunks while the rest of it is
still on the wire); a body that breaks mid-way goes on with a new request for what is
left, at most ``max_retries`` times. Never more than the asked bytes are kept: a server that ignores
``Range`` and answers the whole object is read only up to the range's end. A missing object
is ``KeyError``; a range past the object's end (``InvalidRange``, or a short answer) is
:class:`~akoshad.storage.errors.PackError`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from akoshad.errors import TransientError
from akoshad.fileio import CHUNK
from akoshad.storage.errors import PackError
from akoshad.targets.s3.errors import reply_of

if TYPE_CHECKING:
    from akoshad.targets.s3.target import S3Target

_PAST_END = object()  # the server said the range starts past the object's end


def _past_end(exc: ClientError) -> bool:
    code, status, _ = reply_of(exc)
    return code == "InvalidRange" or status == 416


async def _read_body(body: Any, skip: int, length: int) -> bytes:
    """``length`` bytes of ``body`` after ``skip`` bytes (fewer when it ends sooner); stops
    reading as soon as it has them."""
    pieces: list[bytes] = []
    got = 0
    while got < skip + length:
        piece = await body.read(min(CHUNK, skip + length - got))
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)[skip:]


async def read_range(target: S3Target, key: str, offset: int, length: int) -> bytes:
    """``length`` bytes of ``key`` at ``offset`` (see the module docstring)."""
    if offset < 0 or length < 0:
        raise PackError(f"object {key}: invalid range {offset}+{length}")
    if length == 0:
        size = await target.head(key)
        if size is None:
            raise KeyError(key)
        if offset > size:
            raise PackError(f"object {key} has {size} bytes, a read starts at {offset}")
        return b""
    span = f"bytes={offset}-{offset + length - 1}"

    async def get(client: Any) -> object:
        try:
            resp = await client.get_object(Bucket=target.bucket, Key=key, Range=span)
        except ClientError as exc:
            if _past_end(exc):
                return _PAST_END
            raise
        body = resp["Body"]
        try:
            ranged = resp.get("ResponseMetadata", {}).get("HTTPStatusCode") == 206
            return await _read_body(body, 0 if ranged else offset, length)
        finally:
            body.close()

    data = await target._call(get, what=f"read {key} ({span})", missing=key)
    if data is _PAST_END:
        raise PackError(f"object {key} ends before {offset}, a read needs {span}")
    assert isinstance(data, bytes)
    if len(data) != length:
        raise PackError(
            f"object {key} ends at {offset + len(data)}, a read needs {offset}..{offset + length}"
        )
    return data


async def _get_span(target: S3Target, key: str, start: int, end: int) -> Any:
    """The ``GetObject`` answer for bytes ``start..end-1`` of ``key`` (its body still to
    read); PackError when the object ends before ``start``."""
    span = f"bytes={start}-{end - 1}"

    async def get(client: Any) -> object:
        try:
            return await client.get_object(Bucket=target.bucket, Key=key, Range=span)
        except ClientError as exc:
            if _past_end(exc):
                return _PAST_END
            raise

    resp = await target._call(get, what=f"read {key} ({span})", missing=key)
    if resp is _PAST_END:
        raise PackError(f"object {key} ends before {start}, a read needs {span}")
    return resp


async def _next_piece(body: Any, limit: int) -> bytes:
    """The next piece of ``body``, at most ``limit`` bytes (empty at its end): the piece
    the connection buffered, as it is (no copy), where the body offers it."""
    content = getattr(body, "content", None)
    if content is not None and callable(getattr(content, "readchunk", None)):
        piece: bytes = (await content.readchunk())[0]
        return piece if len(piece) <= limit else piece[:limit]
    data: bytes = await body.read(min(CHUNK, limit))
    return data


async def stream_range(
    target: S3Target, key: str, offset: int, length: int
) -> AsyncIterator[bytes]:
    """``length`` bytes of ``key`` at ``offset``, in the pieces they arrive in (as the
    connection buffered them, at most ``fileio.CHUNK`` bytes each); errors as
    :func:`read_range`. One request, unless the body breaks (module docstring)."""
    if offset < 0 or length < 0:
        raise PackError(f"object {key}: invalid range {offset}+{length}")
    if length == 0:
        await read_range(target, key, offset, 0)
        return
    got = resumed = 0
    while got < length:
        resp = await _get_span(target, key, offset + got, offset + length)
        body = resp["Body"]
        ranged = resp.get("ResponseMetadata", {}).get("HTTPStatusCode") == 206
        skip = 0 if ranged else offset + got  # a server that ignored Range: skip to it
        try:
            while got < length:
                try:
                    piece = await _next_piece(body, skip + length - got)
                except Exception as exc:
                    raise target._classify(exc, f"read {key}") from None
                if not piece:
                    break
                if skip:
                    cut = min(skip, len(piece))
                    piece, skip = piece[cut:], skip - cut
                    if not piece:
                        continue
                got += len(piece)
                yield piece
        except TransientError:
            if resumed >= target.max_retries:
                raise
            resumed += 1
            continue
        finally:
            body.close()
        if got < length:
            raise PackError(
                f"object {key} ends at {offset + got}, a read needs {offset}..{offset + length}"
            )
