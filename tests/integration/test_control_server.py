"""The control server against hostile clients: each gets an answer or a clean close."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import stat
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from akoshad.control import AlreadyRunning, ControlRequestError, ControlServer, request
from akoshad.errors import AkoshadError, DaemonNotRunning


async def handler(req: dict[str, Any]) -> dict[str, Any]:
    if req.get("boom"):
        raise RuntimeError("kaboom")
    if req.get("bad"):
        raise ControlRequestError("bad argument")
    return {"echo": req["cmd"]}


def short_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="ak", dir="/tmp"))


@pytest.fixture
async def server() -> AsyncIterator[ControlServer]:
    srv = ControlServer(short_dir() / "sub" / "s.sock", handler, max_line=1024, idle_timeout=0.5)
    await srv.start()
    yield srv
    await srv.close()


async def raw(path: Path, data: bytes, wait: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), wait)
    except (ConnectionError, OSError):
        return b""
    finally:
        writer.close()


async def test_modes(server: ControlServer) -> None:
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.path.parent.stat().st_mode) == 0o700


async def test_round_trip_and_errors(server: ControlServer) -> None:
    assert await request(server.path, {"cmd": "status"}) == {"echo": "status"}
    for bad, needle in [
        (b"{oops\n", "malformed"),
        (b"[1]\n", "object"),
        (b'{"cmd": "rm -rf"}\n', "unknown command"),
        (b'{"x": 1}\n', "unknown"),
    ]:
        reply = json.loads(await raw(server.path, bad))
        assert reply["ok"] is False and needle in reply["error"]
    reply = json.loads(await raw(server.path, b'{"cmd": "sync", "boom": true}\n'))
    assert reply == {"ok": False, "error": "internal error: RuntimeError"}
    with pytest.raises(ControlRequestError, match="bad argument"):
        await request(server.path, {"cmd": "sync", "bad": True})
    assert await request(server.path, {"cmd": "queue"}) == {"echo": "queue"}


async def test_many_requests_on_one_connection(server: ControlServer) -> None:
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    for _ in range(5):
        writer.write(b'{"cmd": "status"}\n\n')
        await writer.drain()
        assert json.loads(await reader.readline())["ok"] is True
    writer.close()


async def test_huge_line_gets_error_then_close(server: ControlServer) -> None:
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(b'{"cmd": "status", "pad": "' + b"x" * 10_000_000 + b'"}\n')
    with contextlib.suppress(ConnectionError, OSError):
        await writer.drain()
    try:
        line = await asyncio.wait_for(reader.readline(), 10)
    except ConnectionResetError:
        line = b""  # closed with our unread bytes pending: a reset is a close too
    assert line == b"" or json.loads(line)["ok"] is False
    writer.close()
    assert await request(server.path, {"cmd": "status"}) == {"echo": "status"}


async def test_hundred_concurrent_clients(server: ControlServer) -> None:
    results = await asyncio.gather(*(request(server.path, {"cmd": "status"}) for _ in range(100)))
    assert results == [{"echo": "status"}] * 100


async def test_silent_client_is_closed_and_others_served(server: ControlServer) -> None:
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    t0 = time.monotonic()
    assert await request(server.path, {"cmd": "status"}) == {"echo": "status"}
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed after idle_timeout
    assert 0.3 < time.monotonic() - t0 < 3
    writer.close()


async def test_other_uid_refused() -> None:
    srv = ControlServer(short_dir() / "s.sock", handler, allowed_uid=os.getuid() + 1)
    await srv.start()
    try:
        assert await raw(srv.path, b'{"cmd": "status"}\n') == b""
        with pytest.raises(DaemonNotRunning):
            await request(srv.path, {"cmd": "status"})
    finally:
        await srv.close()


async def test_stale_socket_replaced_live_one_refused_file_refused() -> None:
    d = short_dir()
    path = d / "s.sock"
    first = ControlServer(path, handler)
    await first.start()
    with pytest.raises(AlreadyRunning):
        await ControlServer(path, handler).start()
    # make it stale: the server goes away without removing its file
    assert first._server is not None
    first._server.close()
    await first._server.wait_closed()
    first._server = None
    assert path.exists()
    second = ControlServer(path, handler)
    await second.start()
    assert await request(path, {"cmd": "status"}) == {"echo": "status"}
    await second.close()
    path.write_text("not a socket")
    with pytest.raises(AkoshadError, match="not a socket"):
        await ControlServer(path, handler).start()
    assert path.read_text() == "not a socket"


async def test_missing_socket_is_not_running_fast() -> None:
    t0 = time.monotonic()
    with pytest.raises(DaemonNotRunning):
        await request(short_dir() / "none.sock", {"cmd": "status"})
    assert time.monotonic() - t0 < 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=300).filter(lambda b: b"\n" not in b),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                lambda c: (
                    st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3)
                ),
                max_leaves=8,
            ).map(lambda v: json.dumps(v).encode()),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_lines_get_one_reply_each(lines: list[bytes]) -> None:
    async def scenario() -> None:
        srv = ControlServer(short_dir() / "s.sock", handler, max_line=1024)
        await srv.start()
        try:
            reader, writer = await asyncio.open_unix_connection(str(srv.path))
            for line in lines:
                writer.write(line + b"\n")
                await writer.drain()
                if not line.strip():
                    continue
                reply = await asyncio.wait_for(reader.readline(), 5)
                assert reply.endswith(b"\n")
                assert isinstance(json.loads(reply)["ok"], bool)
            writer.close()
            assert await request(srv.path, {"cmd": "status"}) == {"echo": "status"}
        finally:
            await srv.close()

    asyncio.run(scenario())
