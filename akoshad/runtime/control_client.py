"""The control socket's client side: one request, one reply (``request``, and
``request_sync`` for the CLI), refusing a server run by another user; and what both sides
share (the peer's uid, ``ControlRequestError``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import sys
from pathlib import Path
from typing import Any

from akoshad.errors import AkoshadError, DaemonNotRunning, DaemonWentAway
from akoshad.names import socket_path_problem
from akoshad.private import user_name

REPLY_LIMIT = 256 * 1024 * 1024  # a queue listing can be large


class ControlRequestError(AkoshadError):
    """A bad request, or a reply of ``{"ok": false}``."""


class NoReply(ControlRequestError):
    """No reply within the timeout: the daemon may still be at the request."""


class OlderDaemon(ControlRequestError):
    """The daemon answering does not know the command: an older akoshad still running
    (one started before an upgrade, not restarted since)."""


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end, or None where the platform cannot say."""
    if hasattr(socket, "SO_PEERCRED"):
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _pid, uid, _gid = struct.unpack("3i", creds)
        return int(uid)
    if sys.platform == "darwin" or sys.platform.startswith("freebsd"):
        # getpeereid(3) is LOCAL_PEERCRED underneath: struct xucred {u_int cr_version;
        # uid_t cr_uid; short cr_ngroups; gid_t cr_groups[16];} at level SOL_LOCAL (0).
        level, option = getattr(socket, "SOL_LOCAL", 0), getattr(socket, "LOCAL_PEERCRED", 1)
        raw = sock.getsockopt(level, option, struct.calcsize("2I") + 16 * 4 + 4)
        return int(struct.unpack_from("2I", raw)[1])
    return None


def _not_running(path: Path) -> DaemonNotRunning:
    return DaemonNotRunning(
        f"akoshad is not running (no answer on {path}); "
        "start it with `akoshad run` or `akoshad service install`"
    )


def _went_away(path: Path, payload: dict[str, Any]) -> DaemonWentAway:
    return DaemonWentAway(
        f"akoshad closed the connection on {path} before it answered the "
        f"{str(payload.get('cmd'))[:40]!r} request (it stopped, or refused the connection): "
        "what it did of the request is unknown; see `akoshad status`"
    )


async def request(
    socket_path: Path,
    payload: dict[str, Any],
    timeout: float | None = 5.0,  # noqa: ASYNC109
) -> dict[str, Any]:
    """Send one request and return the reply's ``result``.

    ``timeout`` bounds the wait for the reply (None: as long as the daemon keeps the
    connection, for ``sync --wait``); connecting is bounded separately (at most 2 s).
    Raises ``DaemonNotRunning`` when nobody answers (no socket, refused, connect timeout),
    its subclass ``DaemonWentAway`` when the connection closes after the request went out
    without a reply, ``ControlRequestError`` on ``{"ok": false}``, a malformed
    reply or no reply within ``timeout``; ``AkoshadError`` for other socket errors.
    """
    connect_timeout = 2.0 if timeout is None else min(timeout, 2.0)
    too_long = socket_path_problem(socket_path)
    if too_long is not None:  # no daemon can listen there
        raise DaemonNotRunning(f"akoshad is not running: the socket path {too_long}")
    try:
        async with asyncio.timeout(connect_timeout):  # not wait_for: it can lose a Ctrl-C
            reader, writer = await asyncio.open_unix_connection(str(socket_path), limit=REPLY_LIMIT)
    except (FileNotFoundError, ConnectionError, NotADirectoryError, TimeoutError):
        raise _not_running(socket_path) from None
    except OSError as exc:
        raise AkoshadError(f"cannot connect to {socket_path}: {exc}") from None
    sent = False
    try:
        _check_server(socket_path, writer)
        writer.write((json.dumps(payload) + "\n").encode())
        async with asyncio.timeout(connect_timeout):
            await writer.drain()
        sent = True
        async with asyncio.timeout(timeout):
            line = await reader.readline()
    except TimeoutError:
        waited = connect_timeout if timeout is None else timeout
        raise NoReply(f"no reply from the daemon within {waited:g} s") from None
    except ValueError:
        raise ControlRequestError("the daemon's reply is too long") from None
    except (ConnectionError, OSError):
        raise (_went_away(socket_path, payload) if sent else _not_running(socket_path)) from None
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    if not line:
        raise _went_away(socket_path, payload)
    try:
        reply = json.loads(line)
    except ValueError:
        raise ControlRequestError("malformed reply from the daemon") from None
    if not isinstance(reply, dict):
        raise ControlRequestError("malformed reply from the daemon")
    if reply.get("ok") is not True:
        error = str(reply.get("error", "request failed"))
        cmd = payload.get("cmd")
        if cmd != "status" and error.startswith(f"unknown command {cmd!r}"):
            raise await _older(socket_path, str(cmd))
        raise ControlRequestError(error)
    result = reply.get("result")
    return result if isinstance(result, dict) else {}


async def _older(socket_path: Path, cmd: str) -> OlderDaemon:
    """What to say of a daemon that answered "unknown command" to ``cmd``: an akoshad of
    an earlier version, named by its status (version, pid, how long up) when it gives one.
    The version string alone does not tell builds apart, so the pid and age say which."""
    try:
        st = await request(socket_path, {"cmd": "status"}, 2.0)
    except AkoshadError:
        st = {}
    facts = [f"version {st.get('version', '?')!s:.40}"]
    if isinstance(st.get("pid"), int):
        facts.append(f"pid {st['pid']}")
    up = st.get("uptime_seconds")
    if isinstance(up, int | float) and not isinstance(up, bool):
        facts.append(f"up {_age(float(up))}")
    return OlderDaemon(
        f"the running daemon is older ({', '.join(facts)}) and does not know {cmd!r}; "
        "restart it (`systemctl --user restart akoshad`, or as it was started) and try again"
    )


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _check_server(socket_path: Path, writer: asyncio.StreamWriter) -> None:
    """Refuse a server run by another user (one who took the socket's name): its replies
    are not akoshad's and our requests are none of its business."""
    sock = writer.get_extra_info("socket")
    uid = peer_uid(sock) if sock is not None else None
    if uid is not None and uid != os.getuid():
        raise AkoshadError(
            f"the control socket {socket_path} is served by {user_name(uid)}, not by you: "
            "refusing to talk to it; remove it and set socket_path to a directory only "
            "you can write to"
        )


def request_sync(
    socket_path: Path, payload: dict[str, Any], timeout: float | None = 5.0
) -> dict[str, Any]:
    """``request`` for synchronous callers (the CLI)."""
    return asyncio.run(request(socket_path, payload, timeout))
