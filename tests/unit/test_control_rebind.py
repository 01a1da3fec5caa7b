"""A control socket file removed under a running daemon (a clean-up of /tmp or of the
runtime directory): every client said 'not running' (the MCP tools 'still starting, ask
again shortly') for as long as the daemon ran, the daemon backing up unseen. It is bound
again now; a path something else took meanwhile is left alone."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from akoshad.runtime.control import ControlServer
from akoshad.runtime.control_client import request
from tests.tmpdirs import short_dir


async def _status(_: dict[str, Any]) -> dict[str, Any]:
    return {"state": "idle"}


async def test_a_removed_socket_is_bound_again_and_a_taken_one_left_alone() -> None:
    sock = short_dir() / "a.sock"
    server = ControlServer(sock, _status)
    await server.start()
    stop = asyncio.Event()
    watch = asyncio.create_task(server.keep_bound(stop, every=0.05))
    try:
        assert await request(sock, {"cmd": "status"}) == {"state": "idle"}
        sock.unlink()  # removed under the daemon
        for _ in range(400):  # a loaded machine
            await asyncio.sleep(0.05)
            if sock.exists():
                break
        assert await request(sock, {"cmd": "status"}) == {"state": "idle"}
        assert (os.stat(sock).st_mode & 0o777) == 0o600
        sock.unlink()
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # someone else's now,
        other.bind(str(sock))  # answering there (one that does not is stale: replaced)
        other.listen(1)
        inode = os.lstat(sock).st_ino
        await asyncio.sleep(0.3)
        assert os.lstat(sock).st_ino == inode  # not replaced
        other.close()
    finally:
        stop.set()
        await watch
        await server.close()
