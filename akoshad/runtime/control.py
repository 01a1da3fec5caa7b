"""The control socket: a Unix stream socket speaking JSON lines (its client is
``control_client``).

Request ``{"cmd": "status" | "sync" | "pause" | "resume" | "queue", ...}``, reply
``{"ok": true, "result": {...}}`` or ``{"ok": false, "error": "..."}``, one object per line.
The socket is 0600 in a directory no other user can write to (else the daemon refuses to
start: someone else could take the socket's name first); peers of another uid are dropped
unanswered, and the client refuses a server run by another uid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from loguru import logger

from akoshad.errors import AkoshadError
from akoshad.lifecycle import StartClose
from akoshad.redaction import redact
from akoshad.runtime.control_client import ControlRequestError, peer_uid
from akoshad.runtime.control_path import check_socket

COMMANDS = frozenset({"status", "sync", "pause", "resume", "queue", "prune", "drill", "takeover"})
MAX_LINE = 64 * 1024
IDLE_TIMEOUT = 10.0
BACKLOG = 128
# beyond this, a new connection closes the one idle longest (waiting for its request: a
# client that connected and said nothing), or is itself closed at once when every one is
# at work on a request (fd safety)
MAX_CONNECTIONS = 256
WARN_INTERVAL = 60.0
REBIND_CHECK_SECONDS = 5.0  # how often a running daemon looks that its socket file is there

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def _reply(ok: bool, payload: Any) -> bytes:
    """One reply line, redacted (errors, URLs, status texts: no secret leaves)."""
    body = {"ok": True, "result": payload} if ok else {"ok": False, "error": payload}
    return (redact(json.dumps(body, default=str)) + "\n").encode()


class ControlServer(StartClose):
    """Serves ``handler`` on ``socket_path`` until closed.

    ``handler(request)`` gets a validated request (``cmd`` is one of ``COMMANDS``) and
    returns the ``result`` dict; raising ``ControlRequestError`` (a bad argument) makes an
    ``{"ok": false, "error": str(exc)}`` reply, any other exception (a ``ValueError`` too:
    it is a bug, not a bad request) an ``"internal error: <type>"`` reply (logged).
    ``allowed_uid`` defaults to our own uid. Every connection is a task the server owns;
    ``close()`` stops accepting, cancels and awaits those tasks and removes the socket file
    (if it is still the one it bound).
    """

    def __init__(
        self,
        socket_path: Path,
        handler: Handler,
        *,
        max_line: int = MAX_LINE,
        idle_timeout: float = IDLE_TIMEOUT,
        allowed_uid: int | None = None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.path = Path(socket_path)
        self.handler = handler
        self.max_line = max_line
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.allowed_uid = os.getuid() if allowed_uid is None else allowed_uid
        self._server: asyncio.AbstractServer | None = None
        self._inode: int | None = None
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        # the connections waiting for a request line, the one idle longest first
        self._idle: dict[asyncio.Task[None], None] = {}
        self._evicted: set[asyncio.Task[None]] = set()  # cancelled for a newer one, ending
        self._last_warning: dict[str, float] = {}  # kind: when last said

    async def start(self) -> None:
        """Bind and listen: a stale socket is replaced; a live one (``AlreadyRunning``) or a
        path that is not a socket (``ConfigError``, exit 78) is refused."""
        sock = await asyncio.to_thread(self._bind)
        try:
            self._server = await asyncio.start_unix_server(
                self._on_connect, sock=sock, limit=self.max_line + 1, backlog=BACKLOG
            )
        except BaseException:
            sock.close()
            with contextlib.suppress(OSError):
                self.path.unlink()
            raise
        self._closing = False
        logger.debug("control socket listening on {}", self.path)

    def _bind(self) -> socket.socket:
        """Blocking: check the directory and the path, bind, make the file 0600.

        The umask is left alone (it is process-wide: changing it would race with other
        threads creating files); the moment between bind and chmod is covered by the
        peer-uid check, and no other user can write to the directory.
        """
        check_socket(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                sock.bind(str(self.path))
            except OSError as exc:  # a path longer than AF_UNIX allows, a racing daemon
                raise AkoshadError(f"cannot bind the control socket {self.path}: {exc}") from exc
            os.chmod(self.path, 0o600)
            self._inode = os.lstat(self.path).st_ino
            sock.listen(BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def close(self) -> None:
        """Stop accepting, cancel and await the connections, remove the socket file."""
        self._closing = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)
            self._unlink_own()

    async def keep_bound(
        self, stop_event: asyncio.Event, every: float = REBIND_CHECK_SECONDS
    ) -> None:
        """Until ``stop_event``: a socket file removed under the daemon (a clean-up of /tmp
        or of the runtime directory) is bound again, else every client said "not running"
        (or "still starting") for as long as the daemon ran. A path taken meanwhile by
        something else is left alone."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), every)
                return
            if self._server is not None and await asyncio.to_thread(self._removed):
                await self._rebind()

    def _removed(self) -> bool:
        """Blocking: nothing is at the socket's path any more."""
        try:
            os.lstat(self.path)
        except FileNotFoundError:
            return True
        except OSError:
            return False  # cannot tell: left as it is
        return False

    async def _rebind(self) -> None:
        """Bind the path again and serve it; the old listening socket, unreachable, closed."""
        try:
            sock = await asyncio.to_thread(self._bind)
        except (AkoshadError, OSError) as exc:
            self._warn(
                f"control socket {self.path} was removed and cannot be bound again: {exc}", "rebind"
            )
            return
        try:
            server = await asyncio.start_unix_server(
                self._on_connect, sock=sock, limit=self.max_line + 1, backlog=BACKLOG
            )
        except OSError as exc:
            sock.close()
            self._warn(
                f"control socket {self.path} was removed and cannot be served again: {exc}",
                "rebind",
            )
            return
        old, self._server = self._server, server
        if old is not None:
            old.close()  # its connections are tasks of ours, closed as they end
        logger.warning("control socket {} was removed while akoshad ran: bound again", self.path)

    def _unlink_own(self) -> None:
        """Remove the socket file unless something else has replaced it meanwhile."""
        try:
            if os.lstat(self.path).st_ino == self._inode:
                self.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("could not remove {}: {}", self.path, exc)

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        if len(self._tasks) - len(self._evicted) >= self.max_connections and not self._evict():
            self._warn(
                f"control socket: {len(self._tasks)} connections at work, refusing more", "full"
            )
            writer.close()
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._forget)

    def _evict(self) -> bool:
        """Make room: the connection idle longest (no request in hand) is closed, so that
        idle ones (a client that connects and says nothing) never shut out a new client for
        their ``idle_timeout``. False: every connection is at work on a request."""
        if not self._idle:
            return False
        oldest = next(iter(self._idle))
        del self._idle[oldest]
        self._evicted.add(oldest)
        oldest.cancel()
        self._warn(
            f"control socket: {self.max_connections} connections open, closing the ones idle "
            "longest for new clients",
            "evict",
        )
        return True

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._idle.pop(task, None)
        self._evicted.discard(task)

    def _waiting(self, idle: bool) -> None:
        """The current connection waits for its next request (``idle``), or has one."""
        task = asyncio.current_task()
        if task is None or task in self._evicted:
            return
        self._idle.pop(task, None)
        if idle:
            self._idle[task] = None

    def _warn(self, message: str, kind: str) -> None:
        """A warning at most once per ``WARN_INTERVAL`` per ``kind`` (a hostile loop must not
        flood; one kind must not silence another: a flood of connections hid the refused
        peer of another uid)."""
        now = time.monotonic()
        if now - self._last_warning.get(kind, -WARN_INTERVAL) >= WARN_INTERVAL:
            self._last_warning[kind] = now
            logger.warning(message)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.idle_timeout)  # a peer that never reads

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            sock = writer.get_extra_info("socket")
            uid = peer_uid(sock) if sock is not None else None
            if uid is not None and uid != self.allowed_uid:
                self._warn(f"control socket: refused a peer of uid {uid}", "peer")
                return
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.idle_timeout
            while True:
                self._waiting(True)
                try:
                    async with asyncio.timeout_at(deadline):
                        line = await reader.readline()
                except TimeoutError:
                    return
                except (ValueError, asyncio.LimitOverrunError):
                    msg = f"request line longer than {self.max_line} bytes"
                    await self._send(writer, _reply(False, msg))
                    return
                if not line:
                    return
                if not line.strip():
                    continue  # ignored (handy with socat/nc), and no more time for it
                self._waiting(False)
                await self._send(writer, await self._answer(line))
                deadline = loop.time() + self.idle_timeout  # a request answered: time again
        except (ConnectionError, OSError, TimeoutError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("control connection failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1)

    async def _answer(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
        except (ValueError, RecursionError):
            return _reply(False, "malformed JSON")
        if not isinstance(request, dict):
            return _reply(False, "a request must be a JSON object")
        cmd = request.get("cmd")
        known = ", ".join(sorted(COMMANDS))
        if "cmd" not in request:
            return _reply(False, f'unknown command: missing "cmd"; known: {known}')
        if not isinstance(cmd, str) or cmd not in COMMANDS:
            return _reply(False, f"unknown command {cmd!r}; known: {known}")
        try:
            result = await self.handler(request)
        except ControlRequestError as exc:
            return _reply(False, str(exc) or type(exc).__name__)
        except asyncio.CancelledError:
            raise
        except (OSError, sqlite3.Error) as exc:  # the state's disk full...: no bug, one line
            logger.error("{} could not run: {}: {}", cmd, type(exc).__name__, exc)
            return _reply(False, f"{cmd} could not run: {type(exc).__name__}: {exc}")
        except Exception as exc:  # a handler bug: logged, the server goes on
            logger.exception("control command {} failed", cmd)
            return _reply(False, f"internal error: {type(exc).__name__}")
        try:
            return _reply(True, result)
        except (TypeError, ValueError, RecursionError) as exc:
            logger.error("control command {}: result cannot be encoded: {}", cmd, exc)
            return _reply(False, f"internal error: {type(exc).__name__}")
