"""The MCP tools against a daemon that is busy, not hung: ``akosha_sync_status`` said
``daemon_not_responding ... restart it`` when the daemon took 2.9 s to answer ``status`` at
the end of a pass of 100,000 files (a restart would have interrupted that upload)."""

from __future__ import annotations

import asyncio
from typing import Any

from akoshad.cli.mcp import do_status, do_sync
from akoshad.config import load_settings
from akoshad.runtime.control import ControlServer
from tests.tmpdirs import short_dir

BUSY = 2.9  # seconds the daemon took to answer status, for real


async def test_a_busy_daemon_is_waited_for_and_a_silent_one_is_not_called_only_dead() -> None:
    sock = short_dir() / "a.sock"
    delay = [BUSY]

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(delay[0])
        if req["cmd"] == "sync":
            return {"ok_drain": True, "passes": [], "pending": 0}
        return {"state": "syncing", "pending": 100000, "in_flight": 100000}

    server = ControlServer(sock, handler)
    await server.start()
    settings = load_settings(environ={"HOME": "/nonexistent"}, overrides={"socket_path": str(sock)})
    try:
        status = await do_status(settings)
        assert status["success"] is True and status["state"] == "syncing", status
        synced = await do_sync(settings, timeout_seconds=10)
        assert synced["success"] is True, synced
        delay[0] = 60.0  # hung: told so, and to ask again before restarting it
        status = await do_status(settings)
        assert status["error"] == "daemon_not_responding"
        assert "hung, or too busy to answer; ask again shortly" in status["message"]
    finally:
        await server.close()


async def test_a_daemon_that_went_away_mid_request_is_not_called_never_there() -> None:
    """The connection closed after the sync went out (the daemon restarted or crashed
    during it): the tool said 'daemon_not_running ... start it with akoshad service
    install', as if no daemon had taken the sync; now it says what happened."""
    sock = short_dir() / "a.sock"
    calls: list[str] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        calls.append(line.decode())
        if b'"status"' in line:
            writer.write(b'{"ok": true, "result": {"state": "idle"}}\n')
            await writer.drain()
        writer.close()  # the sync: no reply, the daemon gone

    server = await asyncio.start_unix_server(on_connect, path=str(sock))
    settings = load_settings(environ={"HOME": "/nonexistent"}, overrides={"socket_path": str(sock)})
    try:
        result = await do_sync(settings, timeout_seconds=5)
    finally:
        server.close()
        await server.wait_closed()
    assert result["error"] == "daemon_went_away", result
    assert "before it answered the 'sync' request" in result["message"]
    assert len(calls) == 2
