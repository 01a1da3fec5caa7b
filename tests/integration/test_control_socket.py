"""A real ControlServer with a fake handler: hostile clients get an answer or a clean close,
and the server keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import stat
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from akoshad.errors import (
    AlreadyRunning,
    ConfigError,
    DaemonNotRunning,
    DaemonWentAway,
)
from akoshad.runtime.control import ControlServer
from akoshad.runtime.control_client import ControlRequestError, peer_uid, request
from tests.tmpdirs import short_dir

STATUS = b'{"cmd": "status"}\n'


async def handler(req: dict[str, Any]) -> dict[str, Any]:
    """Echo the command; ``boom`` raises an unexpected error, ``bad`` a request error."""
    if req.get("boom"):
        raise RuntimeError("kaboom: secret detail")
    if req.get("bad"):
        raise ControlRequestError("bad argument")
    if req.get("value_error"):
        raise ValueError("method must be auto, cloud or http")
    if req.get("disk_full"):
        raise sqlite3.OperationalError("database or disk is full")
    if req.get("big"):
        return {"blob": "x" * int(req["big"])}
    return {"echo": req["cmd"], "tag": req.get("tag")}


@pytest.fixture
async def server() -> AsyncIterator[ControlServer]:
    srv = ControlServer(short_dir() / "run" / "s.sock", handler, max_line=4096, idle_timeout=0.5)
    async with srv:
        yield srv


async def exchange(path: Path, data: bytes, wait: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; return the first reply line (b"" on a close)."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), wait)
    except (ConnectionError, OSError):
        return b""
    finally:
        writer.close()


async def error_of(path: Path, data: bytes) -> str:
    reply = json.loads(await exchange(path, data))
    assert reply["ok"] is False, reply
    assert set(reply) == {"ok", "error"}
    return str(reply["error"])


async def assert_serving(path: Path) -> None:
    assert await request(path, {"cmd": "status"}) == {"echo": "status", "tag": None}


# ---- protocol ---------------------------------------------------------------------------


async def test_status_round_trip(server: ControlServer) -> None:
    raw = json.loads(await exchange(server.path, STATUS))
    assert raw == {"ok": True, "result": {"echo": "status", "tag": None}}
    for cmd in ("status", "sync", "pause", "resume", "queue"):
        assert (await request(server.path, {"cmd": cmd}))["echo"] == cmd


async def test_malformed_json(server: ControlServer) -> None:
    assert "malformed" in await error_of(server.path, b"{oops\n")
    assert "malformed" in await error_of(server.path, b"\xff\xfe\x00garbage\n")
    assert "malformed" in await error_of(server.path, b"[" * 4000 + b"\n")  # RecursionError
    await assert_serving(server.path)


async def test_non_object_json(server: ControlServer) -> None:
    for line in (b"[1]\n", b'"status"\n', b"42\n", b"null\n"):
        assert "object" in await error_of(server.path, line)
    await assert_serving(server.path)


async def test_missing_and_unknown_commands(server: ControlServer) -> None:
    assert "missing" in await error_of(server.path, b'{"x": 1}\n')
    assert "unknown command" in await error_of(server.path, b'{"cmd": "rm -rf"}\n')
    assert "unknown command" in await error_of(server.path, b'{"cmd": ["status"]}\n')
    await assert_serving(server.path)


async def test_errors_keep_the_connection_usable(server: ControlServer) -> None:
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    try:
        for line in (b"{oops\n", b"[]\n", b'{"cmd": "nope"}\n', b'{"cmd": "sync", "boom": 1}\n'):
            writer.write(line + b"\n" + STATUS)  # a blank line in between is ignored
            await writer.drain()
            assert json.loads(await reader.readline())["ok"] is False
            assert json.loads(await reader.readline())["ok"] is True
    finally:
        writer.close()


async def test_handler_errors(server: ControlServer) -> None:
    raw = json.loads(await exchange(server.path, b'{"cmd": "sync", "boom": true}\n'))
    assert raw == {"ok": False, "error": "internal error: RuntimeError"}  # no detail leaked
    with pytest.raises(ControlRequestError, match="bad argument"):
        await request(server.path, {"cmd": "sync", "bad": True})
    await assert_serving(server.path)


async def test_a_value_error_is_a_bug_not_a_bad_request(server: ControlServer) -> None:
    """Only ``ControlRequestError`` says the request was bad; a ``ValueError`` escaping the
    handler is an internal error, logged, and its text is not sent."""
    raw = json.loads(await exchange(server.path, b'{"cmd": "sync", "value_error": true}\n'))
    assert raw == {"ok": False, "error": "internal error: ValueError"}
    await assert_serving(server.path)


async def test_a_full_disk_is_said_in_one_line_not_an_internal_error(
    server: ControlServer,
) -> None:
    """A command that meets the state's full disk (``akoshad prune`` with state_dir's disk
    full printed ``akoshad: internal error: OperationalError``, the daemon a traceback):
    the reply says what failed."""
    raw = json.loads(await exchange(server.path, b'{"cmd": "prune", "disk_full": true}\n'))
    assert raw == {
        "ok": False,
        "error": "prune could not run: OperationalError: database or disk is full",
    }
    await assert_serving(server.path)


# ---- abuse ------------------------------------------------------------------------------


async def test_ten_megabyte_line(server: ControlServer) -> None:
    reader, writer = await asyncio.open_unix_connection(str(server.path))
    writer.write(b'{"cmd": "status", "pad": "' + b"x" * 10_000_000 + b'"}\n')
    with contextlib.suppress(ConnectionError, OSError):
        await asyncio.wait_for(writer.drain(), 10)
    try:
        line = await asyncio.wait_for(reader.readline(), 10)
    except ConnectionResetError:
        line = b""  # closed with our bytes unread: a reset is a close too
    assert line == b"" or "longer than" in json.loads(line)["error"]
    with contextlib.suppress(ConnectionError, OSError):
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and then closed
    writer.close()
    await assert_serving(server.path)


async def test_hundred_concurrent_clients(server: ControlServer) -> None:
    tags = [uuid.uuid4().hex for _ in range(100)]
    results = await asyncio.gather(
        *(request(server.path, {"cmd": "status", "tag": t}) for t in tags)
    )
    assert [r["tag"] for r in results] == tags


async def test_hundred_connections_open_at_once(server: ControlServer) -> None:
    conns = [await asyncio.open_unix_connection(str(server.path)) for _ in range(100)]
    try:
        for _, writer in conns:
            writer.write(STATUS)
        replies = await asyncio.gather(*(asyncio.wait_for(r.readline(), 5) for r, _ in conns))
        assert all(json.loads(line)["ok"] is True for line in replies)
    finally:
        for _, writer in conns:
            writer.close()


async def test_silent_client_closed_after_idle_timeout() -> None:
    # an idle timeout of 2 s: the other client is served well inside it, on a slow machine too
    srv = ControlServer(short_dir() / "run" / "s.sock", handler, max_line=4096, idle_timeout=2)
    async with srv:
        reader, writer = await asyncio.open_unix_connection(str(srv.path))
        t0 = time.monotonic()
        await assert_serving(srv.path)  # others are served meanwhile
        assert time.monotonic() - t0 < 1.9
        assert await asyncio.wait_for(reader.read(), 10) == b""
        assert 1.9 < time.monotonic() - t0 < 8
        writer.close()
        await assert_serving(srv.path)


async def test_client_that_never_reads_is_dropped(server: ControlServer) -> None:
    _reader, writer = await asyncio.open_unix_connection(str(server.path))
    for _ in range(4):  # 4 x 8 MB replies that nobody reads
        writer.write(b'{"cmd": "status", "big": 8000000}\n')
    await writer.drain()
    await asyncio.sleep(0.1)
    assert len(server._tasks) == 1  # stuck writing
    await assert_serving(server.path)
    await asyncio.wait(set(server._tasks), timeout=5)
    assert not server._tasks  # the stuck write timed out after idle_timeout
    writer.close()


async def test_close_cancels_connections_and_removes_the_socket() -> None:
    started, never = asyncio.Event(), asyncio.Event()

    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        started.set()
        await never.wait()
        return {}

    srv = ControlServer(short_dir() / "s.sock", slow)
    await srv.start()
    reader, writer = await asyncio.open_unix_connection(str(srv.path))
    writer.write(STATUS)
    await asyncio.wait_for(started.wait(), 5)
    t0 = time.monotonic()
    await srv.close()
    assert time.monotonic() - t0 < 3
    assert not srv._tasks
    assert await asyncio.wait_for(reader.read(), 5) == b""
    assert not srv.path.exists()
    writer.close()


# ---- the socket file --------------------------------------------------------------------


async def test_modes(server: ControlServer) -> None:
    assert stat.S_ISSOCK(server.path.lstat().st_mode)
    assert stat.S_IMODE(server.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.path.parent.stat().st_mode) == 0o700


async def test_mode_is_0600_even_under_a_permissive_umask() -> None:
    old = os.umask(0)
    try:
        srv = ControlServer(short_dir() / "a" / "b" / "s.sock", handler)
        await srv.start()
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(srv.path.stat().st_mode) == 0o600
        assert stat.S_IMODE(srv.path.parent.stat().st_mode) == 0o700
    finally:
        await srv.close()


def make_stale_socket(path: Path) -> None:
    """A socket file nobody listens on, as a killed daemon leaves behind."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()


async def test_stale_socket_replaced() -> None:
    path = short_dir() / "s.sock"
    make_stale_socket(path)
    with pytest.raises(DaemonNotRunning):
        await request(path, {"cmd": "status"})
    async with ControlServer(path, handler):
        await assert_serving(path)


async def test_non_socket_refused() -> None:
    path = short_dir() / "s.sock"
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="not a socket; refusing to replace it") as info:
        await ControlServer(path, handler).start()
    assert path.read_text() == "not a socket"
    assert info.value.exit_code == 78  # what no restart fixes: systemd's unit does not loop


async def test_second_server_refused() -> None:
    path = short_dir() / "s.sock"
    async with ControlServer(path, handler):
        with pytest.raises(AlreadyRunning, match="already running on"):
            await ControlServer(path, handler).start()
        await assert_serving(path)  # the first one is untouched
    assert not path.exists()


async def test_second_server_refusal_names_the_running_pid() -> None:
    async def with_pid(req: dict[str, Any]) -> dict[str, Any]:
        return {"pid": 4242}

    path = short_dir() / "s.sock"
    async with ControlServer(path, with_pid):
        with pytest.raises(AlreadyRunning, match=rf"already running on {path} \(pid 4242\)"):
            await ControlServer(path, handler).start()


async def test_close_leaves_a_replacement_socket_alone() -> None:
    path = short_dir() / "s.sock"
    srv = ControlServer(path, handler)
    await srv.start()
    path.unlink()
    make_stale_socket(path)  # someone else's file now
    await srv.close()
    assert path.exists()


async def test_other_uid_refused_without_reply() -> None:
    srv = ControlServer(short_dir() / "s.sock", handler, allowed_uid=os.getuid() + 1)
    async with srv:
        assert await exchange(srv.path, STATUS) == b""
        with pytest.raises(DaemonNotRunning):
            await request(srv.path, {"cmd": "status"})


def test_peer_uid_reads_the_real_credentials() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        assert peer_uid(a) == os.getuid()


async def test_idle_connections_make_room_for_a_new_client() -> None:
    """Connections that never sent a request (a client that connects and says nothing, 256
    of them from one user) held every new status off for their idle timeout: the one idle
    longest is now closed for the newcomer, the others are still served."""
    srv = ControlServer(short_dir() / "s.sock", handler, max_connections=3, idle_timeout=30)
    async with srv:
        held = []
        for _ in range(3):
            held.append(await asyncio.open_unix_connection(str(srv.path)))
            await asyncio.sleep(0.05)  # in this order
        started = time.monotonic()
        reply = await exchange(srv.path, STATUS, wait=5)
        assert json.loads(reply)["ok"] is True, reply
        assert time.monotonic() - started < 2
        assert await asyncio.wait_for(held[0][0].read(), 5) == b""  # the oldest: closed
        for reader, writer in held[1:]:  # the newer ones are still served
            writer.write(STATUS)
            assert json.loads(await asyncio.wait_for(reader.readline(), 5))["ok"] is True
        for _, writer in held:
            writer.close()


async def test_connections_beyond_the_limit_all_at_work_are_closed_at_once() -> None:
    release = asyncio.Event()

    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        await release.wait()
        return {"state": "idle"}

    srv = ControlServer(short_dir() / "s.sock", slow, max_connections=3, idle_timeout=30)
    async with srv:
        held = [await asyncio.open_unix_connection(str(srv.path)) for _ in range(3)]
        for _, writer in held:  # each one at work on a request
            writer.write(STATUS)
        await asyncio.sleep(0.2)
        assert await exchange(srv.path, STATUS, wait=2) == b""  # the fourth: closed, no reply
        release.set()
        for reader, _ in held:  # the three at work are answered
            assert json.loads(await asyncio.wait_for(reader.readline(), 5))["ok"] is True
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.1)
        reply = await exchange(srv.path, STATUS, wait=5)  # room again once they are gone
        assert json.loads(reply)["ok"] is True


async def test_unserialisable_result_is_an_error_reply() -> None:
    async def loop(req: dict[str, Any]) -> dict[str, Any]:
        d: dict[str, Any] = {}
        d["self"] = d
        return d

    async with ControlServer(short_dir() / "s.sock", loop) as srv:
        for _ in range(2):  # and it goes on serving
            reply = json.loads(await exchange(srv.path, STATUS))
            assert reply == {"ok": False, "error": "internal error: ValueError"}


# ---- the client -------------------------------------------------------------------------


async def test_a_server_that_takes_the_request_and_closes_went_away() -> None:
    """Nobody listening is "not running"; a server that reads the request and closes
    without a reply may have done part of it: ``DaemonWentAway`` (a ``DaemonNotRunning``
    for callers that only need to know no daemon answers), naming the request."""
    path = short_dir() / "s.sock"
    got: list[bytes] = []

    async def read_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got.append(await reader.readline())
        writer.close()

    server = await asyncio.start_unix_server(read_and_close, str(path))
    async with server:
        with pytest.raises(DaemonWentAway, match="before it answered the 'prune' request"):
            await request(path, {"cmd": "prune"})
    assert got == [b'{"cmd": "prune"}\n']
    path.unlink(missing_ok=True)
    make_stale_socket(path)
    with pytest.raises(DaemonNotRunning) as exc:
        await request(path, {"cmd": "prune"})
    assert not isinstance(exc.value, DaemonWentAway)


async def test_request_to_missing_socket_is_not_running_fast() -> None:
    path = short_dir() / "none.sock"
    t0 = time.monotonic()
    with pytest.raises(DaemonNotRunning, match="akoshad is not running") as exc:
        await request(path, {"cmd": "status"})
    assert time.monotonic() - t0 < 1
    assert str(path) in str(exc.value) and exc.value.exit_code == 3


async def test_request_without_timeout_waits_for_a_slow_answer() -> None:
    async def slow(req: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0.5)
        return {"done": True}

    async with ControlServer(short_dir() / "s.sock", slow) as srv:
        with pytest.raises(ControlRequestError, match="no reply"):
            await request(srv.path, {"cmd": "sync"}, timeout=0.1)
        assert await request(srv.path, {"cmd": "sync"}, timeout=None) == {"done": True}


async def test_request_times_out_on_a_mute_peer() -> None:
    path = short_dir() / "s.sock"

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    srv = await asyncio.start_unix_server(mute, path=str(path))
    try:
        t0 = time.monotonic()
        with pytest.raises(ControlRequestError, match="no reply"):
            await request(path, {"cmd": "status"}, timeout=0.3)
        assert time.monotonic() - t0 < 2
    finally:
        srv.close()


# ---- property -----------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=10,
)
LINES = st.one_of(
    st.binary(max_size=300).filter(lambda b: b"\n" not in b),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["cmd", "boom", "bad", "wait"]), JSON_VALUES, max_size=3).map(
        lambda v: json.dumps(v).encode()
    ),
    st.just(b"y" * 5000),  # over max_line: an error reply, then a close
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINES, min_size=1, max_size=6))
def test_any_lines_get_one_reply_each_or_a_close(lines: list[bytes]) -> None:
    async def scenario() -> None:
        srv = ControlServer(short_dir() / "s.sock", handler, max_line=1024, idle_timeout=5)
        async with srv:
            expected, closes = 0, False
            for line in lines:
                if len(line) + 1 > 1024:
                    expected, closes = expected + 1, True
                    break
                expected += bool(line.strip())  # blank lines are ignored
            sentinel = uuid.uuid4().hex
            reader, writer = await asyncio.open_unix_connection(str(srv.path))
            payload = b"".join(line + b"\n" for line in lines)
            writer.write(payload + json.dumps({"cmd": "status", "tag": sentinel}).encode() + b"\n")
            with contextlib.suppress(ConnectionError, OSError):
                await writer.drain()
            replies: list[dict[str, Any]] = []
            while True:
                try:
                    raw = await asyncio.wait_for(reader.readline(), 5)
                except ConnectionResetError:
                    raw = b""
                if not raw:
                    break
                assert raw.endswith(b"\n")
                reply = json.loads(raw)
                assert isinstance(reply, dict) and isinstance(reply["ok"], bool)
                if reply["ok"] and reply["result"].get("tag") == sentinel:
                    break
                replies.append(reply)
            writer.close()
            if closes:
                assert len(replies) <= expected and not raw
            else:
                assert len(replies) == expected and raw
            await assert_serving(srv.path)

    asyncio.run(scenario())


async def test_a_drill_by_hand_runs_here_when_the_daemon_does_not_know_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon of an earlier version (no ``drill`` command) answers "unknown command": the
    CLI drills in its own process instead of failing; another error reply is raised."""
    import akoshad.runtime.control as control
    from akoshad.cli.drill import drill_in_daemon
    from akoshad.config import load_settings

    monkeypatch.setattr(control, "COMMANDS", control.COMMANDS - {"drill"})
    path = short_dir() / "old.sock"
    settings = load_settings(
        overrides={"socket_path": str(path), "data_dir": str(tmp_path / "store")},
        environ={"HOME": str(tmp_path)},
    )
    async with ControlServer(path, handler, max_line=4096, idle_timeout=5):
        assert await drill_in_daemon(settings) is None
    assert await drill_in_daemon(settings) is None  # no daemon at all

    async def refusing(req: dict[str, Any]) -> dict[str, Any]:
        raise ControlRequestError("nothing to drill: no upload for x in local")

    monkeypatch.setattr(control, "COMMANDS", control.COMMANDS | {"drill"})
    async with ControlServer(path, refusing, max_line=4096, idle_timeout=5):
        with pytest.raises(ControlRequestError, match="nothing to drill"):
            await drill_in_daemon(settings)


async def test_one_kind_of_warning_does_not_silence_another() -> None:
    """The socket's warnings are said once a minute each: a flood of connections ('closing
    the ones idle longest') swallowed 'refused a peer of uid N' for that minute."""
    from loguru import logger

    said: list[str] = []
    sink = logger.add(lambda m: said.append(m.record["message"]), level="WARNING")
    try:
        srv = ControlServer(short_dir() / "s.sock", handler, max_connections=1)
        async with srv:
            held = [await asyncio.open_unix_connection(str(srv.path)) for _ in range(3)]
            await asyncio.sleep(0.2)  # the first two closed for the newer ones: said once
            srv.allowed_uid = os.getuid() + 1  # then a peer of "another" uid
            assert await exchange(srv.path, STATUS, wait=2) == b""
            for _, writer in held:
                writer.close()
    finally:
        logger.remove(sink)
    evicted = [m for m in said if "closing the ones idle longest" in m]
    assert len(evicted) == 1
    assert f"control socket: refused a peer of uid {os.getuid()}" in said
