"""How the HTTP client sends a request body that is a window on a file: with the kernel's
``sendfile`` on a plain TCP connection.

aiohttp sends any other file-like body by reading 256 KiB at a time in a thread and writing
each piece to the socket: for a 1 GiB upload that is 4,096 trips through the thread pool and
the event loop, and every byte copied into Python and out again. A :class:`_FileWindow` is a
range of a file on disk (a staged pack, a part of a large file, a growing file's written
part), so the kernel can send it straight from the page cache: ``loop.sendfile`` waits until
the connection's buffer is empty, then sends the range as the socket takes it, without
reading it into the process. Where the kernel cannot (a TLS connection, a chunked or
compressed body), the window is read and written piece by piece as before, the reads in a
thread.

A range that the file no longer holds whole (it shrank) raises ``SourceChanged`` rather
than send less than the announced ``Content-Length``; the connection is then closed by the
client, and the request fails.
"""

from __future__ import annotations

import asyncio
import io
import os
from typing import Any

from aiohttp import payload
from aiohttp.abc import AbstractStreamWriter

from akoshad.targets.s3.errors import SourceChanged
from akoshad.targets.s3.parts import _FileWindow

PIECE = 1024 * 1024  # read and written at a time where sendfile is not available


class WindowPayload(payload.Payload):
    """An aiohttp payload for a :class:`_FileWindow` (or a proxy of one, as aiobotocore
    wraps request bodies), sent from its current position to its end."""

    _autoclose = True  # the window is closed by whoever made it, never by the client

    def __init__(self, value: Any, *args: Any, **kwargs: Any) -> None:
        window = getattr(value, "__wrapped__", value)
        if not isinstance(window, _FileWindow):
            raise TypeError(f"not a file window: {type(window).__name__}")
        super().__init__(window, *args, **kwargs)
        self._window = window
        self._start = window.tell()
        self._length = len(window) - self._start
        self._size = self._length

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        self._window.seek(self._start)
        return self._window.read().decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        size = self._length if content_length is None else min(self._length, content_length)
        self._window.seek(self._start)
        if size <= 0:
            return
        if _sendfile_possible(writer) and await _send_range(writer, self._window, size):
            return
        await _write_pieces(writer, self._window, size)

    async def close(self) -> None:
        """Nothing to do: the window belongs to the code that made the request."""


def _sendfile_possible(writer: AbstractStreamWriter) -> bool:
    """True when the body's bytes go to the socket as they are (no chunked framing, no
    compression, no per-chunk callback that would need to see them)."""
    return (
        not getattr(writer, "chunked", True)
        and getattr(writer, "_compress", None) is None
        and getattr(writer, "_on_chunk_sent", None) is None
        and getattr(writer, "transport", None) is not None
        and hasattr(writer, "send_headers")
    )


async def _send_range(writer: Any, window: _FileWindow, size: int) -> bool:
    """Send ``size`` bytes of ``window`` with ``loop.sendfile``; False (nothing sent) when
    the connection cannot take it that way."""
    transport = writer.transport  # not None: _sendfile_possible
    if transport.is_closing():
        raise ConnectionResetError("the connection closed before the body was sent")
    if transport.get_extra_info("sslcontext") is not None:
        return False
    writer.send_headers()  # aiohttp holds the headers back to send them with the body
    start = window.tell()
    with io.FileIO(os.dup(window.fd), "rb") as source:
        try:
            sent = await asyncio.get_running_loop().sendfile(
                transport, source, window.file_offset + start, size, fallback=False
            )
        except (asyncio.SendfileNotAvailableError, RuntimeError):
            # raised before any byte of the body is sent: the loop or this transport
            # cannot send files (another event loop, say)
            return False
    window.seek(start + sent)
    writer.output_size += sent
    if writer.length is not None:
        writer.length = max(0, writer.length - sent)
    if sent < size:
        raise SourceChanged("the file shrank while it was being sent")
    return True


async def _write_pieces(writer: AbstractStreamWriter, window: _FileWindow, size: int) -> None:
    """Read the window a piece at a time in a thread and write each piece."""
    left = size
    while left > 0:
        piece = await asyncio.to_thread(window.read, min(PIECE, left))
        await writer.write(piece)
        left -= len(piece)


def register() -> None:
    """Make aiohttp send every :class:`_FileWindow` body with :class:`WindowPayload`
    (idempotent; the registry is aiohttp's, for this process)."""
    registry = payload.PAYLOAD_REGISTRY
    if any(factory is WindowPayload for factory, _ in registry._first):
        return
    registry.register(WindowPayload, _FileWindow, order=payload.Order.try_first)
