"""A small MCP streamable-HTTP client (aiohttp) for Akosha's ``batch_store_memories``.

The protocol (INTEROP.md section 3): ``POST <url>`` with ``Accept: application/json,
text/event-stream``; ``initialize`` answers with an ``mcp-session-id`` header, then the
``notifications/initialized`` notification (202), then ``tools/call`` requests carrying the
session id and the negotiated ``mcp-protocol-version``. Replies come as JSON or as
server-sent events (``event: message`` / ``data: {json}``). A stale session id answers 404
(after an Akosha restart; 400 naming the session from MCP SDK 1.x servers): the client
opens a new session and resends, once. ``DELETE <url>`` ends the session on
:meth:`AkoshaClient.close`.

Failures are typed: :class:`~akoshad.errors.TransientError` for what may pass (refused,
reset, timeout, 5xx, 429, a stream cut short), :class:`~akoshad.errors.PermanentError` for
what needs a human (wrong URL, protocol refusals, a tool that reports an error);
:class:`RequestTooLarge` (a PermanentError) for a 413, so a caller can split the batch;
:class:`ConnectionReset` (a TransientError) for a connection reset or closed before the
answer, so a caller can tell it from a refused connection (:meth:`AkoshaClient.answers`
then says whether a small request still goes through).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from akoshad import __version__
from akoshad.akosha.encoding import encode_json
from akoshad.akosha.results import (
    TOOL_NAMES,
    URL_FIX,
    ConnectionReset,
    RequestTooLarge,
    StoreResult,
    content_text,
    http_error,
    one_line,
    parse_store_result,
    rpc_result,
)
from akoshad.akosha.sse import MAX_EVENT_BYTES, _pick_reply, _SSEParser, read_sse
from akoshad.akosha.transport import health_url_for, read_capped, stale_session
from akoshad.errors import PermanentError, TransientError, UnknownTool
from akoshad.events import RequestCounter
from akoshad.lifecycle import StartClose

__all__ = [
    "ACCEPT",
    "AkoshaClient",
    "ConnectionReset",
    "RequestTooLarge",
    "StoreResult",
    "_SSEParser",
    "health_url_for",
    "parse_store_result",
]

PROTOCOL_VERSION = "2025-06-18"
MAX_ERROR_BODY = 64 * 1024  # of an error reply, what is read (its message is one line)
ACCEPT = "application/json, text/event-stream"


class AkoshaClient(StartClose):
    """One MCP session with Akosha, opened lazily and renewed when the server forgets it.

    Use ``async with AkoshaClient(url) as client`` or :meth:`start` / :meth:`close`.
    Requests on one client may run concurrently; the handshake happens once.
    """

    def __init__(
        self,
        url: str,
        *,
        client_name: str = "akoshad",
        version: str = __version__,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        probe_timeout: float = 5.0,
        health_url: str | None = None,
        counter: RequestCounter | None = None,
        counter_target: str = "http",
    ) -> None:
        self.url = url
        self.health_url = health_url or health_url_for(url)
        self.client_name = client_name
        self.version = version
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.probe_timeout = probe_timeout
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.server_info: dict[str, Any] = {}
        self.last_probe_error: str | None = None
        self.sessions_opened = 0
        # request bodies the server answered (metrics), resends included: not those of a
        # connection refused or cut before any answer
        self.bytes_sent = 0
        # counts the JSON-RPC method of every message sent (metrics), as ``counter_target``
        self.counter = counter
        self.counter_target = counter_target
        self._ready = False
        self._http: aiohttp.ClientSession | None = None
        self._next_id = 0
        self._handshake = asyncio.Lock()
        self.tool_name = TOOL_NAMES[0]  # the store tool's name, once another one answered

    # ---- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Create the HTTP connection pool (no network traffic yet)."""
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=4),
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=self.connect_timeout),
            )

    async def close(self) -> None:
        """End the MCP session (``DELETE``, best effort, 2 s at most) and the pool."""
        http, sid = self._http, self.session_id
        self._ready = False
        self.session_id = None
        self.protocol_version = None
        if http is None or http.closed:
            return
        try:
            if sid is not None:
                try:
                    async with http.delete(
                        self.url,
                        headers=self._headers(sid),
                        timeout=aiohttp.ClientTimeout(total=min(2.0, self.timeout)),
                    ):
                        pass
                except (aiohttp.ClientError, TimeoutError):
                    pass
        finally:
            await http.close()

    # ---- probe -----------------------------------------------------------------------
    async def probe(self) -> bool:
        """``GET healthz`` (:func:`health_url_for`) within ``probe_timeout`` (5 s: a far
        link takes a few round trips to connect, more with TLS; one second declared such
        an Akosha down for ever): is Akosha up? (the reason in :attr:`last_probe_error`
        when not). Down: no connection, no answer
        in time, or a 5xx (a proxy whose upstream is gone). Any other answer (a proxy that
        forwards only the MCP path has no ``healthz``: 404) is a server that is up: the call
        decides."""
        http = await self._pool()
        try:
            async with http.get(
                self.health_url,
                timeout=aiohttp.ClientTimeout(total=self.probe_timeout),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                if resp.status < 500:
                    self.last_probe_error = None
                    return True
                self.last_probe_error = f"{self.health_url} answered HTTP {resp.status}"
        except TimeoutError:  # the probe's own time, not the calls'
            self.last_probe_error = (
                f"{self.health_url} did not answer within {self.probe_timeout:g} s"
            )
        except aiohttp.ClientError as exc:
            self.last_probe_error = str(self._map_exception(exc))
        return False

    async def answers(self) -> bool:
        """Does Akosha answer a small request (MCP ``ping``) now? An error reply is an
        answer too; no connection, a reset or no answer in time is not."""
        try:
            await self.request("ping")
        except TransientError:
            return False
        except PermanentError:
            return True
        return True

    # ---- MCP -------------------------------------------------------------------------
    async def initialize(self) -> None:
        """Open a new MCP session: ``initialize`` then ``notifications/initialized``."""
        async with self._handshake:
            await self._initialize_locked()

    async def _initialize_locked(self) -> None:
        self._ready = False
        self.session_id = None
        self.protocol_version = None
        params = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": self.client_name, "version": self.version},
        }
        result, sid = await self._exchange("initialize", params, session_id=None)
        if not isinstance(result, dict):
            raise PermanentError(f"{self.url} answered initialize without a result", fix=URL_FIX)
        self.server_info = dict(result.get("serverInfo") or {})
        self.protocol_version = str(result.get("protocolVersion") or PROTOCOL_VERSION)
        self.session_id = sid
        try:
            await self._exchange("notifications/initialized", None, session_id=sid, notify=True)
        except _StaleSession:
            raise TransientError("Akosha forgot the MCP session it had just opened") from None
        self._ready = True  # only now: a failed notification means a new handshake next time
        self.sessions_opened += 1

    async def _ensure_session(self) -> str | None:
        async with self._handshake:
            if not self._ready:
                await self._initialize_locked()
            return self.session_id

    async def request(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """One JSON-RPC request in the session; returns its ``result``."""
        sid = await self._ensure_session()
        try:
            result, _ = await self._exchange(method, params, session_id=sid)
        except _StaleSession:
            async with self._handshake:
                if self.session_id == sid:  # nobody renewed it meanwhile
                    await self._initialize_locked()
                sid = self.session_id
            try:
                result, _ = await self._exchange(method, params, session_id=sid)
            except _StaleSession:
                raise TransientError(
                    "Akosha rejected a brand-new MCP session (session not found)"
                ) from None
        return result

    async def call_tool(self, name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """``tools/call``; the tool's result object. ``isError`` true -> PermanentError."""
        result = await self.request("tools/call", {"name": name, "arguments": arguments})
        if not isinstance(result, dict):
            raise PermanentError(f"tool {name}: the reply holds no result object")
        if result.get("isError"):
            text = one_line(content_text(result))
            if text.lower().startswith("unknown tool"):  # the MCP SDK's words
                raise UnknownTool(
                    f"Akosha's tool {name} failed: {text}",
                    fix=f"this Akosha serves no {name} tool: run Akosha with its full tool "
                    "profile (the default), in a version that has it",
                )
            raise PermanentError(f"Akosha's tool {name} failed: {text}")
        return result

    async def store(self, memories: Sequence[Mapping[str, Any]]) -> StoreResult:
        """Send one batch to ``batch_store_memories`` (``akosha_batch_store_memories`` in
        later Akosha releases) and sort the ids by outcome.

        The caller keeps batches within the limits (:func:`akoshad.akosha.encoding.batches`).
        """
        if not memories:
            return StoreResult("completed")
        ids = [str(m["memory_id"]) for m in memories]
        result = await self._call_store({"memories": list(memories)})
        return parse_store_result(result, ids)

    async def _call_store(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The store tool called under the name this Akosha serves (``TOOL_NAMES``: the
        one found is kept for this client; an Akosha that serves none is UnknownTool)."""
        first: UnknownTool | None = None
        for name in (self.tool_name, *(n for n in TOOL_NAMES if n != self.tool_name)):
            try:
                result = await self.call_tool(name, arguments)
            except UnknownTool as exc:  # an unknown tool stores nothing: try the next name
                first = first or exc
                continue
            self.tool_name = name
            return result
        assert first is not None
        raise UnknownTool(
            str(first.args[0]),
            fix=f"this Akosha serves no {' or '.join(TOOL_NAMES)} tool: run Akosha with "
            "its full tool profile (the default), in a version that has it",
        )

    # ---- transport -------------------------------------------------------------------
    async def _pool(self) -> aiohttp.ClientSession:
        await self.start()
        assert self._http is not None
        return self._http

    def _headers(self, session_id: str | None) -> dict[str, str]:
        headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
        if session_id is not None:
            headers["mcp-session-id"] = session_id
        if self.protocol_version is not None:
            headers["mcp-protocol-version"] = self.protocol_version
        return headers

    async def _exchange(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        *,
        session_id: str | None,
        notify: bool = False,
    ) -> tuple[Any, str | None]:
        """POST one message; (result, session id header). Retries once on a pool
        connection the server had already closed (safe: every call here is idempotent)."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = dict(params)
        req_id: int | None = None
        if not notify:
            self._next_id += 1
            req_id = self._next_id
            message["id"] = req_id
        # a tool call may carry megabytes: encode it off the event loop
        body = (
            await asyncio.to_thread(encode_json, message)
            if method == "tools/call"
            else encode_json(message)
        )
        for attempt in (1, 2):
            if self.counter is not None:
                self.counter.count(self.counter_target, method)
            try:
                return await self._post(body, req_id, session_id, method)
            except aiohttp.ServerDisconnectedError as exc:
                if attempt == 2:
                    raise self._map_exception(exc) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._map_exception(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _post(
        self, body: bytes, req_id: int | None, session_id: str | None, method: str
    ) -> tuple[Any, str | None]:
        http = await self._pool()
        async with http.post(
            self.url, data=body, headers=self._headers(session_id), allow_redirects=False
        ) as resp:
            self.bytes_sent += len(body)  # answered: it reached the server
            sid = resp.headers.get("mcp-session-id")
            if resp.status >= 300:
                error_body = await read_capped(resp, MAX_ERROR_BODY, cut=True)
                if session_id is not None and stale_session(resp.status, error_body):
                    raise _StaleSession()
                raise http_error(self.url, resp.status, error_body, resp.headers, method)
            if req_id is None:
                await resp.read()
                return None, sid
            ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if ctype == "text/event-stream":
                reply = await read_sse(resp, req_id)
            elif ctype == "application/json":
                try:
                    data = json.loads(await read_capped(resp, MAX_EVENT_BYTES) or b"null")
                except ValueError:
                    raise PermanentError(f"Akosha's reply to {method} is not JSON") from None
                reply = _pick_reply(data, req_id)
            else:
                raise PermanentError(
                    f"{self.url} answered {method} with content type {ctype or 'none'}, "
                    "not an MCP endpoint",
                    fix=URL_FIX,
                )
            if reply is None:
                raise TransientError(f"Akosha's reply to {method} held no response")
            return rpc_result(reply, method), sid

    def _map_exception(self, exc: BaseException) -> Exception:
        where = urlsplit(self.url).netloc
        if isinstance(exc, TimeoutError):
            return TransientError(f"Akosha at {where} did not answer within {self.timeout:g} s")
        if isinstance(exc, aiohttp.ClientConnectorError):
            reason = exc.os_error.strerror or str(exc.os_error)
            return TransientError(f"cannot connect to Akosha at {where}: {reason}")
        if isinstance(exc, aiohttp.InvalidURL):
            return PermanentError(f"invalid akosha_url {self.url!r}", fix=URL_FIX)
        if isinstance(
            exc,
            aiohttp.ServerDisconnectedError | aiohttp.ClientOSError | ConnectionResetError,
        ):
            return ConnectionReset(f"connection to Akosha at {where} was reset: {exc}")
        return TransientError(f"HTTP request to Akosha at {where} failed: {exc}")


class _StaleSession(Exception):
    """404 (or 400 naming the session) on a request carrying a session id: the server no
    longer knows it."""
