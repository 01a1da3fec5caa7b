"""The control socket: a Unix stream socket speaking JSON lines, and its client.

Request ``{"cmd": "status" | "sync" | "pause" | "resume" | "queue", ...}``, reply
``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "..."}``, one object per line.
The socket is 0600 in a 0700 directory and peers of another uid are dropped unanswered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
import struct
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from loguru import logger

from akoshad.errors import AkoshadError, DaemonNotRunning

COMMANDS = frozenset({"status", "sync", "pause", "resume", "queue"})
MAX_LINE = 64 * 1024
IDLE_TIMEOUT = 10.0
BACKLOG = 128

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlRequestError(AkoshadError):
    """A bad request, or a reply of ``{"ok": false}``."""


class AlreadyRunning(AkoshadError):
    """Another akoshad answers on this socket."""


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end, or None where the platform cannot say."""
    if hasattr(socket, "SO_PEERCRED"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return int(uid)
    if sys.platform == "darwin":  # LOCAL_PEERCRED: struct xucred {u_int version; uid_t uid;...}
        try:
            raw = sock.getsockopt(0, 0x001, struct.calcsize("2I") + 16 * 4 + 4)
        except OSError:
            return None
        return int(struct.unpack_from("2I", raw)[1])
    return None


def _reply(ok: bool, payload: Any) -> bytes:
    body = {"ok": True, "result": payload} if ok else {"ok": False, "error": payload}
    return (json.dumps(body, default=str) + "\n").encode()


class ControlServer:
    """Serves ``handler`` on ``socket_path`` until closed. Every connection is a task the
    server owns; ``close()`` cancels and awaits them and removes the socket file."""

    def __init__(
        self,
        socket_path: Path,
        handler: Handler,
        *,
        max_line: int = MAX_LINE,
        idle_timeout: float = IDLE_TIMEOUT,
        allowed_uid: int | None = None,
    ) -> None:
        self.path = socket_path
        self.handler = handler
        self.max_line = max_line
        self.idle_timeout = idle_timeout
        self.allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ControlServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind (replacing a stale socket, refusing a live one or a non-socket)."""
        await asyncio.to_thread(self._prepare_path)
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._on_connect, path=str(self.path), limit=self.max_line + 1, backlog=BACKLOG
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    def _prepare_path(self) -> None:
        parent = self.path.parent
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o700)
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise AkoshadError(f"{self.path} exists and is not a socket; refusing to replace it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink(missing_ok=True)  # stale: nobody answers
            return
        finally:
            probe.close()
        raise AlreadyRunning(f"another akoshad is already running on {self.path}")

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            uid = peer_uid(sock) if sock is not None else None
            if uid is not None and uid != self.allowed_uid:
                logger.warning("control socket: refused a peer of uid {}", uid)
                return
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), self.idle_timeout)
                except TimeoutError:
                    return
                except (ValueError, asyncio.LimitOverrunError):
                    writer.write(_reply(False, f"request line longer than {self.max_line} bytes"))
                    await writer.drain()
                    return
                if not line:
                    return
                if not line.strip():
                    continue
                writer.write(await self._answer(line))
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return _reply(False, "malformed JSON")
        if not isinstance(request, dict):
            return _reply(False, "a request must be a JSON object")
        cmd = request.get("cmd")
        if not isinstance(cmd, str) or cmd not in COMMANDS:
            return _reply(False, f"unknown command {cmd!r}; known: {', '.join(sorted(COMMANDS))}")
        try:
            return _reply(True, await self.handler(request))
        except (ControlRequestError, ValueError) as exc:
            return _reply(False, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.exception("control command {} failed", cmd)
            return _reply(False, f"internal error: {type(exc).__name__}")


def _not_running(path: Path) -> DaemonNotRunning:
    return DaemonNotRunning(
        f"akoshad is not running (no answer on {path}); "
        "start it with `akoshad run` or `akoshad service install`"
    )


async def request(
    socket_path: Path, payload: dict[str, Any], timeout: float = 5.0  # noqa: ASYNC109
) -> dict[str, Any]:
    """Send one request; return the reply's ``result`` (``DaemonNotRunning`` when nobody
    answers, ``ControlRequestError`` on ``{"ok": false}``)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(socket_path), limit=64 * 1024 * 1024),
            min(timeout, 2.0),
        )
    except (FileNotFoundError, ConnectionRefusedError, TimeoutError, OSError):
        raise _not_running(socket_path) from None
    try:
        writer.write((json.dumps(payload) + "\n").encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    except TimeoutError:
        raise ControlRequestError(f"no reply from the daemon within {timeout:g} s") from None
    except (ConnectionError, OSError):
        raise _not_running(socket_path) from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if not line:
        raise _not_running(socket_path)
    try:
        reply = json.loads(line)
    except ValueError:
        raise ControlRequestError("malformed reply from the daemon") from None
    if not isinstance(reply, dict):
        raise ControlRequestError("malformed reply from the daemon")
    if not reply.get("ok"):
        raise ControlRequestError(str(reply.get("error", "request failed")))
    result = reply.get("result")
    return result if isinstance(result, dict) else {}


def request_sync(
    socket_path: Path, payload: dict[str, Any], timeout: float = 5.0
) -> dict[str, Any]:
    """``request`` for synchronous callers (the CLI)."""
    return asyncio.run(request(socket_path, payload, timeout))
