"""The HTTP pieces of the MCP client: where Akosha's ``healthz`` is, a reply body read
within a cap, and the error reply that says a session is no longer known."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import aiohttp

from akoshad.errors import PermanentError


def health_url_for(url: str) -> str:
    """``healthz`` beside the MCP endpoint: ``/healthz`` for Akosha's own ``/mcp``, and
    ``/akosha/healthz`` for ``/akosha/mcp`` behind a proxy that serves Akosha under a
    prefix (the origin's ``/healthz`` is then another service's, or none)."""
    parts = urlsplit(url)
    folder = parts.path.rstrip("/").rpartition("/")[0]
    return urlunsplit((parts.scheme, parts.netloc, f"{folder}/healthz", "", ""))


async def read_capped(resp: aiohttp.ClientResponse, limit: int, *, cut: bool = False) -> bytes:
    """The body, read as it arrives and never more than ``limit`` bytes of it: past that,
    cut there (``cut``) or refused."""
    parts: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        parts.append(chunk)
        size += len(chunk)
        if size > limit:
            if cut:
                return b"".join(parts)[:limit]
            raise PermanentError("Akosha sent a reply larger than 16 MiB")
    return b"".join(parts)


def stale_session(status: int, body: bytes) -> bool:
    """Does this error reply to a request carrying a session id say the server no longer
    knows the session? 404 (the MCP spec, SDK >= 1.2x), or 400 naming the session (MCP SDK
    1.x: "Bad Request: No valid session ID provided")."""
    return status == 404 or (status == 400 and b"session" in body.lower())
