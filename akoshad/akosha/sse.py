"""Server-sent events of MCP's streamable HTTP: an incremental text/event-stream parser
(bounded per event) and the reading of one JSON-RPC reply out of a stream or a batch."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import aiohttp

from akoshad.errors import PermanentError, TransientError

MAX_EVENT_BYTES = 16 * 1024 * 1024


class _SSEParser:
    """Incremental text/event-stream parser yielding (event, data) pairs."""

    def __init__(self) -> None:
        self._buf = b""
        self._event = ""
        self._data: list[str] = []
        self._size = 0  # of the event's data lines so far

    def feed(self, chunk: bytes) -> Iterator[tuple[str, str]]:
        self._buf += chunk
        if len(self._buf) > MAX_EVENT_BYTES:
            raise _too_large()
        while True:
            cut = _line_end(self._buf)
            if cut is None:
                return
            end, skip = cut
            line = self._buf[:end].decode("utf-8", errors="replace")
            self._buf = self._buf[end + skip :]
            yield from self._line(line)

    def close(self) -> Iterator[tuple[str, str]]:
        if self._buf:
            line = self._buf.decode("utf-8", errors="replace")
            self._buf = b""
            yield from self._line(line)
        yield from self._line("")

    def _line(self, line: str) -> Iterator[tuple[str, str]]:
        if not line:
            if self._data:
                yield (self._event or "message", "\n".join(self._data))
            self._event, self._data, self._size = "", [], 0
            return
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._size += len(value) + 1
            if self._size > MAX_EVENT_BYTES:  # an event of many lines is bounded too
                raise _too_large()
            self._data.append(value)


def _too_large() -> PermanentError:
    return PermanentError("Akosha sent a server-sent event larger than 16 MiB")


def _line_end(buf: bytes) -> tuple[int, int] | None:
    """Index and length of the first line break (\\r\\n, \\n or \\r), or None."""
    n = buf.find(b"\n")
    r = buf.find(b"\r")
    if r == -1 and n == -1:
        return None
    if r != -1 and (n == -1 or r < n):
        if r + 1 == len(buf):
            return None  # a \r at the end may be half of \r\n: wait for more
        return (r, 2) if buf[r + 1 : r + 2] == b"\n" else (r, 1)
    return (n, 1)


def _pick_reply(data: Any, req_id: int) -> dict[str, Any] | None:
    """The JSON-RPC response with ``req_id`` out of a message or a batch of them."""
    items = data if isinstance(data, list) else [data]
    for item in items:
        if (
            isinstance(item, dict)
            and item.get("id") == req_id
            and ("result" in item or "error" in item)
        ):
            return item
    return None


async def read_sse(resp: aiohttp.ClientResponse, req_id: int) -> dict[str, Any] | None:
    """The JSON-RPC reply with ``req_id`` out of an event stream, read as it arrives."""
    parser = _SSEParser()

    def pick(events: Iterator[tuple[str, str]], tail: bool = False) -> dict[str, Any] | None:
        for event, data in events:
            if event != "message":
                continue
            try:
                reply = _pick_reply(json.loads(data), req_id)
            except ValueError:
                if tail:  # the stream ended inside this event: cut short, not garbage
                    return None
                raise PermanentError("Akosha sent an event that is not JSON") from None
            if reply is not None:
                return reply
        return None

    async for chunk in resp.content.iter_any():
        reply = pick(parser.feed(chunk))
        if reply is not None:
            return reply  # leaving the context releases the stream
    reply = pick(parser.close(), tail=True)
    if reply is None:
        raise TransientError("Akosha closed the event stream before answering")
    return reply
