"""AkoshaClient against a real MCP streamable-HTTP server (the official SDK, a subprocess),
plus small in-process stubs for the failure modes a healthy server never shows."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from akoshad.akosha.client import (
    ACCEPT,
    AkoshaClient,
    RequestTooLarge,
    _SSEParser,
    health_url_for,
    parse_store_result,
)
from akoshad.akosha.encoding import batches
from akoshad.errors import PermanentError, TransientError, UnknownTool
from tests.akosha_fixtures import AkoshaServer, free_port
from tests.helpers import served


def mem(i: int, *, dim: int | None = 384, text: str | None = None) -> dict[str, Any]:
    m: dict[str, Any] = {
        "memory_id": f"box:{i}",
        "text": text if text is not None else f"memory {i}",
        "metadata": {
            "source": "box",
            "original_id": str(i),
            "type": "conversation",
            "created_at": "2025-03-01T12:00:00+00:00",
        },
    }
    if dim is not None:
        m["embedding"] = [round(0.001 * ((i + k) % 500), 3) for k in range(dim)]
    return m


@pytest.fixture(params=["sse", "json"])
def server(request: pytest.FixtureRequest) -> AkoshaServer:
    """The fake Akosha, once replying with server-sent events, once with JSON."""
    name = "akosha_server" if request.param == "sse" else "akosha_server_json"
    srv: AkoshaServer = request.getfixturevalue(name)
    return srv


# ---- the protocol ---------------------------------------------------------------------------
async def test_handshake_and_store(server: AkoshaServer) -> None:
    async with AkoshaClient(server.url, version="9.9") as client:
        await client.initialize()
        assert client.session_id and len(client.session_id) >= 16
        assert client.protocol_version == "2025-06-18"
        assert client.server_info["name"] == "akosha"
        result = await client.store([mem(1), mem(2), mem(3)])
    assert result.status == "completed"
    assert result.stored == ("box:1", "box:2", "box:3")
    assert result.delivered == result.stored and not result.failed
    assert server.stored() == {"box:1", "box:2", "box:3"}


async def test_session_opened_lazily_once(server: AkoshaServer) -> None:
    async with AkoshaClient(server.url) as client:
        assert client.session_id is None
        results = await asyncio.gather(*(client.store([mem(i)]) for i in range(5)))
        assert all(r.status == "completed" for r in results)
        assert client.sessions_opened == 1


async def test_stale_session_after_server_restart(server: AkoshaServer) -> None:
    async with AkoshaClient(server.url) as client:
        assert (await client.store([mem(1)])).stored == ("box:1",)
        old = client.session_id
        await asyncio.to_thread(server.restart)  # same port; sessions and store are gone
        # the old id is unknown now: 404 Session not found
        async with (
            aiohttp.ClientSession() as raw,
            raw.post(
                server.url,
                data=b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
                headers={
                    "Accept": ACCEPT,
                    "Content-Type": "application/json",
                    "mcp-session-id": str(old),
                    "mcp-protocol-version": "2025-06-18",
                },
            ) as resp,
        ):
            assert resp.status == 404
        result = await client.store([mem(1), mem(2)])
        assert result.stored == ("box:1", "box:2")  # the restarted server lost box:1
        assert client.session_id != old
        assert client.sessions_opened == 2
    assert server.stored() == {"box:1", "box:2"}


@pytest.fixture
async def sdk1_proxy(akosha_server: AkoshaServer) -> AsyncIterator[str]:
    """The real server behind a proxy answering an unknown session id as MCP SDK 1.x
    servers do: 400 "Bad Request: No valid session ID provided" instead of 404."""

    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with (
            aiohttp.ClientSession() as up,
            up.request(
                request.method, akosha_server.url, data=await request.read(), headers=headers
            ) as resp,
        ):
            body = await resp.read()
            if resp.status == 404 and "mcp-session-id" in request.headers:
                return web.Response(status=400, text="Bad Request: No valid session ID provided")
            keep = {
                k: v
                for k, v in resp.headers.items()
                if k.lower() in ("content-type", "mcp-session-id")
            }
            return web.Response(status=resp.status, body=body, headers=keep)

    app = web.Application()
    app.router.add_route("*", "/mcp", forward)
    async with served(app) as base:
        yield f"{base}/mcp"


async def test_stale_session_answered_400_opens_a_new_session(
    akosha_server: AkoshaServer, sdk1_proxy: str
) -> None:
    """An Akosha on MCP SDK 1.x answers a session it lost in a restart with 400, not 404:
    the client opens a new session and goes on, instead of failing every delivery."""
    async with AkoshaClient(sdk1_proxy) as client:
        assert (await client.store([mem(1)])).stored == ("box:1",)
        old = client.session_id
        await asyncio.to_thread(akosha_server.restart)
        result = await client.store([mem(1), mem(2)])
        assert result.stored == ("box:1", "box:2")
        assert client.session_id != old
        assert client.sessions_opened == 2
    assert akosha_server.stored() == {"box:1", "box:2"}


async def test_close_deletes_the_session(server: AkoshaServer) -> None:
    client = AkoshaClient(server.url)
    await client.store([mem(1)])
    sid = client.session_id
    await client.close()
    assert client.session_id is None
    async with (
        aiohttp.ClientSession() as raw,
        raw.post(
            server.url,
            data=b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
            headers={
                "Accept": ACCEPT,
                "Content-Type": "application/json",
                "mcp-session-id": str(sid),
                "mcp-protocol-version": "2025-06-18",
            },
        ) as resp,
    ):
        assert resp.status == 404


@pytest.mark.parametrize("accept", [None, "application/json", "text/event-stream"])
async def test_406_without_the_accept_header(
    akosha_server: AkoshaServer, accept: str | None
) -> None:
    body = json.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            },
        }
    )
    headers = {"Content-Type": "application/json"}
    if accept is not None:
        headers["Accept"] = accept
    async with (
        aiohttp.ClientSession() as raw,
        raw.post(
            akosha_server.url, data=body, headers=headers, skip_auto_headers={"Accept"}
        ) as resp,
    ):
        assert resp.status == 406
        assert "Not Acceptable" in (await resp.text())


async def test_duplicate_resend_counts_as_stored(server: AkoshaServer) -> None:
    async with AkoshaClient(server.url) as client:
        await client.store([mem(1), mem(2)])
        again = await client.store([mem(1), mem(2), mem(3)])
    assert again.status == "partial"  # what Akosha says
    assert again.stored == ("box:3",)
    assert again.duplicates == ("box:1", "box:2")
    assert set(again.delivered) == {"box:1", "box:2", "box:3"}
    assert not again.failed


async def test_partial_and_failed_results(server: AkoshaServer) -> None:
    async with AkoshaClient(server.url) as client:
        result = await client.store([mem(1), mem(2, dim=None), mem(3, dim=12)])
        assert result.status == "partial"
        assert result.stored == ("box:1",)
        assert result.failed == {
            "box:2": "Embedding is required",
            "box:3": "Embedding dim mismatch: expected 384, got 12",
        }
        # all failed: status "failed" while isError stays false
        raw = await client.call_tool("batch_store_memories", {"memories": [mem(4, dim=3)]})
        assert raw["isError"] is False
        assert raw["structuredContent"]["status"] == "failed"
        failed = await client.store([mem(5, dim=None)])
        assert failed.status == "failed" and failed.stored == ()
        assert failed.failed == {"box:5": "Embedding is required"}


async def test_more_than_1000_items_fail_as_a_whole(akosha_server: AkoshaServer) -> None:
    items = [mem(i, dim=384) for i in range(1001)]
    for m in items:
        m["embedding"] = [0.5] * 384  # small encoding: the count limit, not the size, bites
    async with AkoshaClient(akosha_server.url) as client:
        result = await client.store(items)
    assert result.status == "failed"
    assert result.stored == ()
    assert len(result.failed) == 1001
    assert result.batch_error is not None and "1000" in result.batch_error
    assert akosha_server.stored() == set()


async def test_oversize_request_is_refused_and_batches_fit(akosha_server: AkoshaServer) -> None:
    items = [mem(i, text="y" * 30_000) for i in range(200)]  # ~6.5 MB as one request
    async with AkoshaClient(akosha_server.url) as client:
        with pytest.raises(RequestTooLarge) as info:
            await client.store(items)
        assert "413" in str(info.value)
        parts = list(batches(items))
        assert len(parts) >= 2
        stored: list[str] = []
        for part in parts:
            result = await client.store(part)
            assert result.status == "completed"
            stored.extend(result.stored)
    assert stored == [m["memory_id"] for m in items]
    assert akosha_server.stored() == set(stored)


async def test_tool_error_is_permanent(akosha_server: AkoshaServer) -> None:
    async with AkoshaClient(akosha_server.url) as client:
        with pytest.raises(PermanentError, match="Field required"):
            await client.call_tool("batch_store_memories", {})


async def test_wrong_path_is_permanent(akosha_server: AkoshaServer) -> None:
    async with AkoshaClient(akosha_server.origin + "/mcp/v1") as client:
        with pytest.raises(PermanentError, match="no MCP endpoint") as info:
            await client.store([mem(1)])
    assert "akosha_url" in str(info.value)


async def test_slow_tool_times_out_as_transient(akosha_server: AkoshaServer) -> None:
    async with AkoshaClient(akosha_server.url, timeout=0.5) as client:
        await client.initialize()
        akosha_server.delay(3)
        started = time.monotonic()
        with pytest.raises(TransientError, match="did not answer"):
            await client.store([mem(1)])
        assert time.monotonic() - started < 2.9  # the 0.5 s timeout, not the tool's 3 s


# ---- availability ----------------------------------------------------------------------------
async def test_probe(server: AkoshaServer) -> None:
    async with AkoshaClient(server.url) as client:
        started = time.monotonic()
        assert await client.probe() is True
        elapsed = time.monotonic() - started
        assert client.last_probe_error is None
    print(f"\nprobe of a live server: {elapsed * 1000:.1f} ms")


async def test_server_down_fails_fast_and_transient() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"
    # every timeout 20 s: an answer within a few seconds is a refusal, not a timeout
    async with AkoshaClient(url, timeout=20, connect_timeout=20, probe_timeout=20) as client:
        started = time.monotonic()
        with pytest.raises(TransientError, match="cannot connect"):
            await client.store([mem(1)])
        store_s = time.monotonic() - started
        started = time.monotonic()
        assert await client.probe() is False
        probe_s = time.monotonic() - started
        assert client.last_probe_error and "cannot connect" in client.last_probe_error
        assert client.bytes_sent == 0  # nothing reached a server: none counted as sent
    print(f"\ndead endpoint: store {store_s * 1000:.1f} ms, probe {probe_s * 1000:.1f} ms")
    assert store_s < 5
    assert probe_s < 5


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A port that accepts TCP connections (the backlog) and never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    finally:
        sock.close()


async def test_probe_times_out_after_its_own_time(black_hole: str) -> None:
    async with AkoshaClient(black_hole, timeout=0.6, probe_timeout=1) as client:
        started = time.monotonic()
        assert await client.probe() is False
        probe_s = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(TransientError, match="did not answer"):
            await client.store([mem(1)])
        store_s = time.monotonic() - started
    print(f"\nhung endpoint: probe {probe_s:.2f} s, store {store_s:.2f} s (timeout 0.6 s)")
    assert 0.9 <= probe_s < 3  # the probe's own 1 s, not the client's 0.6 s
    assert 0.5 <= store_s < 3


async def test_a_healthz_slower_than_a_second_is_up() -> None:
    """Akosha far away (a link whose connection and TLS take over a second) or busy: its
    healthz answers in 1.3 s. The probe waits for it (5 s), so the circuit closes again;
    with a 1 s probe it stayed open for good while every call would have gone through."""

    async def slow(_: web.Request) -> web.Response:
        await asyncio.sleep(1.3)
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_get("/healthz", slow)
    async with served(app) as base, AkoshaClient(f"{base}/mcp", timeout=120) as client:
        assert await client.probe(), client.last_probe_error
        assert client.probe_timeout == 5
        client.probe_timeout = 0.5
        assert not await client.probe()
        # the probe's own time, not the calls' 120 s
        assert client.last_probe_error == f"{base}/healthz did not answer within 0.5 s"


# ---- failure modes of a sick server (in-process stubs) ----------------------------------------
@pytest.fixture
async def stub() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """An aiohttp app answering POST /mcp with what ``behaviour`` says."""
    behaviour: dict[str, Any] = {"status": 503, "headers": {"Retry-After": "7"}, "body": "busy"}

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        if behaviour.get("sse") is not None:
            resp = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "mcp-session-id": "s1"}
            )
            await resp.prepare(request)
            await resp.write(behaviour["sse"])
            return resp
        return web.Response(
            status=behaviour["status"],
            text=behaviour["body"],
            headers=behaviour.get("headers"),
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_post("/mcp", handler)
    async with served(app) as base:
        yield f"{base}/mcp", behaviour


@pytest.mark.parametrize(
    ("status", "kind", "text"),
    [
        (500, TransientError, "HTTP 500"),
        (502, TransientError, "HTTP 502"),
        (503, TransientError, "HTTP 503"),
        (429, TransientError, "HTTP 429"),
        (400, PermanentError, "HTTP 400"),
        (401, PermanentError, "credentials"),
        (403, PermanentError, "credentials"),
        (404, PermanentError, "no MCP endpoint"),
        (405, PermanentError, "HTTP 405"),
        (406, PermanentError, "HTTP 406"),
        (413, RequestTooLarge, "HTTP 413"),
        (421, PermanentError, "Host"),
        (307, PermanentError, "redirects"),
    ],
)
async def test_http_status_mapping(
    stub: tuple[str, dict[str, Any]], status: int, kind: type[Exception], text: str
) -> None:
    url, behaviour = stub
    behaviour.update(status=status, body='{"error": {"message": "nope"}}')
    async with AkoshaClient(url) as client:
        with pytest.raises(kind, match=text) as info:
            await client.initialize()
    if kind is TransientError:
        assert not isinstance(info.value, PermanentError)
    if status == 503:
        assert info.value.retry_after == 7  # type: ignore[attr-defined]


@pytest.mark.parametrize("status", [401, 403])
async def test_refused_credentials_of_the_url_are_not_called_missing(status: int) -> None:
    """akosha_url with a user name and password (a proxy in front of Akosha): they are sent
    (HTTP Basic), so a 401/403 says they were refused, not that none were sent; without
    them it says where they go."""
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(status=status, text="Unauthorized")

    app = web.Application()
    app.router.add_post("/mcp", handler)
    async with served(app) as base:
        with_user = base.replace("http://", "http://bob:pw-1234@") + "/mcp"
        async with AkoshaClient(with_user) as client:
            with pytest.raises(PermanentError) as info:
                await client.initialize()
        assert "refused the user name and password in akosha_url" in str(info.value)
        assert seen == ["Basic " + base64.b64encode(b"bob:pw-1234").decode()]
        async with AkoshaClient(f"{base}/mcp") as client:
            with pytest.raises(PermanentError) as info:
                await client.initialize()
        assert "put them in akosha_url" in str(info.value)
        assert "sends none" not in str(info.value)


async def test_a_tool_akosha_does_not_serve_says_how_to_get_it(server: AkoshaServer) -> None:
    """An Akosha without the tool (another tool profile, another version): the error says
    what to run, not only the SDK's 'Unknown tool'."""
    async with AkoshaClient(server.url) as client:
        with pytest.raises(PermanentError) as info:
            await client.call_tool("no_such_tool", {"memories": []})
    assert "Unknown tool" in str(info.value)
    assert info.value.fix is not None and "full tool profile" in info.value.fix


@pytest.mark.parametrize("tool", ["akosha_batch_store_memories", "store_elsewhere"])
async def test_a_later_akosha_is_called_by_its_tool_name(tmp_path: Path, tool: str) -> None:
    """Later Akosha releases serve the store tool as akosha_batch_store_memories (same
    arguments and result): memories are delivered there, the name found is kept for the
    next calls, and an Akosha serving neither name is told apart with both names in its
    fix."""
    srv = AkoshaServer(tmp_path / "akosha", tool_name=tool)
    srv.start()
    try:
        async with AkoshaClient(srv.url) as client:
            if tool == "store_elsewhere":
                with pytest.raises(UnknownTool) as info:
                    await client.store([mem(1), mem(2)])
                assert info.value.fix is not None
                assert "batch_store_memories or akosha_batch_store_memories" in info.value.fix
                return
            first = await client.store([mem(1), mem(2)])
            second = await client.store([mem(3)])
            assert client.tool_name == tool
        assert first.stored == ("box:1", "box:2") and second.stored == ("box:3",)
        assert srv.stored() == {"box:1", "box:2", "box:3"}
        assert srv.state()["calls"] == 2  # the unknown name's call stored nothing
    finally:
        srv.stop()


async def test_stream_cut_short_is_transient(stub: tuple[str, dict[str, Any]]) -> None:
    url, behaviour = stub
    behaviour["sse"] = b'event: message\ndata: {"jsonrpc":"2.0","method":"x"}\n\n'
    async with AkoshaClient(url) as client:
        with pytest.raises(TransientError, match="before answering"):
            await client.initialize()


async def test_stream_ending_mid_event_is_transient(stub: tuple[str, dict[str, Any]]) -> None:
    """The stream ends inside the reply's event (no blank line, half its JSON): cut short,
    not a server that speaks something else."""
    url, behaviour = stub
    behaviour["sse"] = b'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{"protoc'
    async with AkoshaClient(url) as client:
        with pytest.raises(TransientError, match="before answering") as info:
            await client.initialize()
    assert not isinstance(info.value, PermanentError)


async def test_not_an_mcp_endpoint(stub: tuple[str, dict[str, Any]]) -> None:
    url, behaviour = stub
    behaviour.update(status=200, body="<html>hello</html>")
    async with AkoshaClient(url) as client:
        with pytest.raises(PermanentError, match="not JSON"):
            await client.initialize()


async def test_reset_mid_request_is_transient() -> None:
    """A proxy that drops a large body (the 413-by-reset case) or a crash mid-request."""

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.close()  # linger 0: RST

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with AkoshaClient(f"http://127.0.0.1:{port}/mcp") as client:
            started = time.monotonic()
            with pytest.raises(TransientError) as info:
                await client.store([mem(i, text="z" * 20_000) for i in range(100)])
            assert not isinstance(info.value, PermanentError)
            assert time.monotonic() - started < 5  # the reset, not the 30 s timeout
            assert client.bytes_sent == 0  # cut before any answer: not counted as sent
    finally:
        server.close()
        await server.wait_closed()


# ---- pieces ---------------------------------------------------------------------------------
def test_health_url_is_beside_the_endpoint() -> None:
    assert health_url_for("http://127.0.0.1:8682/mcp") == "http://127.0.0.1:8682/healthz"
    # Akosha under a prefix behind a proxy: its healthz, not the origin's
    assert health_url_for("https://a.example/x/mcp?q=1") == "https://a.example/x/healthz"
    assert health_url_for("https://a.example/x/mcp/") == "https://a.example/x/healthz"
    assert health_url_for("http://u:p@a.example:81/mcp") == "http://u:p@a.example:81/healthz"


async def test_the_probe_asks_the_healthz_beside_the_endpoint() -> None:
    """A proxy serving Akosha under /akosha/ and another app, down, at its root: the
    probe asks /akosha/healthz (Akosha is up), not the root's /healthz (502), which kept
    the circuit open for ever once Akosha had been down."""

    async def up(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def other(_: web.Request) -> web.Response:
        return web.Response(status=502, text="Bad Gateway")

    app = web.Application()
    app.router.add_get("/akosha/healthz", up)
    app.router.add_get("/healthz", other)
    async with served(app) as base, AkoshaClient(f"{base}/akosha/mcp") as client:
        assert await client.probe(), client.last_probe_error


SSE = (
    b": comment\r\n"
    b"event: message\r\n"
    b'data: {"jsonrpc":"2.0",\r\n'
    b'data: "id":1,"result":{}}\r\n'
    b"\r\n"
    b"event: ping\n"
    b"data: x\n\n"
    b'data: {"a":1}\r\r'
    b"id: 5\n"
    b"data:no-space\n"
)


@pytest.mark.parametrize("step", [1, 2, 3, 7, len(SSE)])
def test_sse_parser_any_chunking(step: int) -> None:
    parser = _SSEParser()
    events: list[tuple[str, str]] = []
    for i in range(0, len(SSE), step):
        events.extend(parser.feed(SSE[i : i + step]))
    events.extend(parser.close())
    assert events == [
        ("message", '{"jsonrpc":"2.0",\n"id":1,"result":{}}'),
        ("ping", "x"),
        ("message", '{"a":1}'),
        ("message", "no-space"),
    ]


@pytest.mark.parametrize(
    ("payload", "status", "stored", "failed"),
    [
        # the server's stored count agrees: unmentioned ids are stored
        (
            {"status": "partial", "stored": 1, "errors": [{"memory_id": "b", "error": "e"}]},
            "partial",
            ("a",),
            {"b": "e"},
        ),
        # it does not: unmentioned ids are unconfirmed (resent; Duplicate key confirms)
        (
            {"status": "completed", "stored": 0, "errors": []},
            "completed",
            (),
            {"a": "not confirmed as stored by Akosha", "b": "not confirmed as stored by Akosha"},
        ),
        # a batch-level error names no id
        (
            {"status": "failed", "stored": 0, "errors": [{"memory_id": None, "error": "too many"}]},
            "failed",
            (),
            {"a": "too many", "b": "too many"},
        ),
        # no count reported: trust the per-id errors
        ({"status": "completed", "errors": []}, "completed", ("a", "b"), {}),
    ],
)
def test_parse_store_result(
    payload: dict[str, Any], status: str, stored: tuple[str, ...], failed: dict[str, str]
) -> None:
    result = parse_store_result({"structuredContent": payload, "isError": False}, ["a", "b"])
    assert (result.status, result.stored, result.failed) == (status, stored, failed)


def test_parse_store_result_reads_the_text_content_too() -> None:
    payload = {"status": "completed", "stored": 1, "errors": []}
    result = parse_store_result(
        {"content": [{"type": "text", "text": json.dumps(payload)}], "isError": False}, ["a"]
    )
    assert result.stored == ("a",)
    with pytest.raises(PermanentError, match="unexpected"):
        parse_store_result({"content": [{"type": "text", "text": "ok"}]}, ["a"])


async def test_a_counter_given_at_construction_counts_every_message(server: AkoshaServer) -> None:
    """The counter passed when the client is built sees each JSON-RPC message, by method,
    under the client's target name."""
    counted: list[tuple[str, str]] = []

    class Counter:
        def count(self, target: str, method: str) -> None:
            counted.append((target, method))

    async with AkoshaClient(server.url, counter=Counter(), counter_target="akosha") as client:
        result = await client.store([mem(1), mem(2)])
    assert len(result.delivered) == 2
    assert counted == [
        ("akosha", "initialize"),
        ("akosha", "notifications/initialized"),
        ("akosha", "tools/call"),
    ]


@pytest.mark.parametrize("status", [200, 500, 400])
async def test_long_rpc_error_message_is_one_bounded_line(
    stub: tuple[str, dict[str, Any]], status: int
) -> None:
    """A JSON-RPC error with a huge multi-line message (a traceback, an echoed payload) ends
    up in logs, status and webhooks: it is cut to one bounded line."""
    url, behaviour = stub
    message = "Internal error\nTraceback (most recent call last):\n" + "  frame\n" * 20_000
    body = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32603, "message": message}}
    behaviour.update(status=status, body=json.dumps(body), headers=None)
    async with AkoshaClient(url) as client:
        with pytest.raises((TransientError, PermanentError)) as info:
            await client.initialize()
    text = str(info.value)
    assert "\n" not in text and "\r" not in text
    assert len(text) <= 1000
    assert "Internal error" in text


def test_long_per_row_errors_are_one_bounded_line() -> None:
    """A per-row error is kept as the row's skip reason in the state database: a huge
    multi-line one (an echoed payload) is cut to one bounded line, Duplicate key still seen."""
    long = "validation failed:\n" + "input_value='xxxxxxxx'\n" * 50_000
    payload = {
        "status": "failed",
        "stored": 0,
        "errors": [
            {"memory_id": "a", "error": long},
            {"memory_id": "b", "error": long + 'Duplicate key "memory_id: b"'},
            {"memory_id": None, "error": long},
        ],
    }
    result = parse_store_result({"structuredContent": payload}, ["a", "b", "c"])
    assert result.duplicates == ("b",)
    for text in (result.failed["a"], result.failed["c"], result.batch_error or ""):
        assert text.startswith("validation failed: input_value=")
        assert "\n" not in text and len(text) <= 1000


async def test_an_event_of_many_lines_is_bounded_too(stub: tuple[str, dict[str, Any]]) -> None:
    """A server that sends one endless event in short ``data:`` lines: bounded at 16 MiB
    like an event in one long line, not held in memory without end."""
    url, behaviour = stub
    behaviour["sse"] = (
        b"event: message\n"
        + b"data: "
        + b"x" * 1018
        + b"\n" * 1
        + ((b"data: " + b"x" * 1018 + b"\n") * (17 * 1024))
    )
    async with AkoshaClient(url) as client:
        with pytest.raises(PermanentError, match="larger than 16 MiB"):
            await client.initialize()


@pytest.mark.parametrize("status", [200, 500])
async def test_a_huge_json_reply_is_not_read_without_end(
    stub: tuple[str, dict[str, Any]], status: int
) -> None:
    """An akosha_url that answers a huge body (a download, a proxy's dump): refused past
    16 MiB (an error body is cut), never read whole into memory."""
    url, behaviour = stub
    behaviour.update(status=status, body="[" + "0," * (12 * 1024 * 1024) + "0]", headers=None)
    async with AkoshaClient(url) as client:
        with pytest.raises((PermanentError, TransientError)) as info:
            await client.initialize()
    text = str(info.value)
    assert len(text) < 1000
    if status == 200:
        assert "larger than 16 MiB" in text
