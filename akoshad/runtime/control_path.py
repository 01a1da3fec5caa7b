"""Where the control socket may be bound: its directory no other user can write to, its
path our own socket or nothing; a stale socket (nobody answers) is replaced, a live one
refused (``AlreadyRunning``, naming the running daemon's pid)."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

from loguru import logger

from akoshad.errors import AkoshadError, AlreadyRunning, ConfigError
from akoshad.private import make_private_dirs, user_name

PROBE_TIMEOUT = 1.0


def check_socket_dir(socket_path: Path) -> None:
    """Blocking: create the socket's directory 0700 if missing; refuse (``ConfigError``)
    one that another user could write to, where they could take the socket's name first.

    Writable by group or others is refused unless the directory is sticky and ours; a
    directory owned by another user (root aside) is refused too.
    """
    parent = socket_path.parent
    try:
        make_private_dirs(parent)
        st = os.stat(parent)
    except OSError as exc:
        raise AkoshadError(f"cannot prepare the socket directory {parent}: {exc}") from None
    _refuse_shared_dir(socket_path, st)


def _refuse_shared_dir(socket_path: Path, st: os.stat_result) -> None:
    """``ConfigError`` when the socket's directory (its stat ``st``) is open to others."""
    parent = socket_path.parent
    uid = os.getuid()
    mode = stat.S_IMODE(st.st_mode)
    shared = bool(mode & (stat.S_IWGRP | stat.S_IWOTH))
    if st.st_uid not in (uid, 0) or (shared and not (mode & stat.S_ISVTX and st.st_uid == uid)):
        owner = "you" if st.st_uid == uid else user_name(st.st_uid)
        raise ConfigError(
            f"socket_path {socket_path}: its directory {parent} (mode {mode:04o}, owned by "
            f"{owner}) can be written by other users, who could take the socket's place; "
            f"run `chmod 700 {parent}` or set socket_path to a directory only you can "
            "write to (e.g. $XDG_RUNTIME_DIR/akoshad.sock)"
        )


def _refuse_not_ours(socket_path: Path, st: os.stat_result) -> None:
    """``ConfigError`` when what is at ``socket_path`` (its lstat ``st``) is no socket, or
    another user's: a daemon never replaces it."""
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(
            f"socket_path {socket_path} exists and is not a socket; refusing to replace it "
            "(move it away or set another socket_path)"
        )
    if st.st_uid != os.getuid():
        raise ConfigError(
            f"socket_path {socket_path} is taken by a socket of {user_name(st.st_uid)}, not "
            "ours; set socket_path to a path in a directory only you can write to "
            "(e.g. $XDG_RUNTIME_DIR/akoshad.sock)"
        )


def check_socket(socket_path: Path) -> None:
    """Blocking: what binding ``socket_path`` needs, checked before a daemon writes
    anything (its state, its claim on the system id): the directory (made 0700 if missing,
    ``check_socket_dir``) and the path, where a stale socket is removed; a live one is
    refused (``AlreadyRunning``), so is a path that is not our socket (``ConfigError``)."""
    check_socket_dir(socket_path)
    _clear_stale(socket_path)


def socket_path_refusal(socket_path: Path) -> str | None:
    """Blocking, changes nothing (``config check``): why ``run`` would refuse
    ``socket_path`` with exit 78 (a directory others can write to, a path that is not our
    socket), or None. A missing directory is fine: ``run`` makes it 0700."""
    try:
        _refuse_shared_dir(socket_path, os.stat(socket_path.parent))
        _refuse_not_ours(socket_path, os.lstat(socket_path))
    except ConfigError as exc:
        return str(exc)
    except OSError:  # missing (made, or bound, at start) or unreadable: run says why
        return None
    return None


def _clear_stale(path: Path) -> None:
    """Remove a socket file nobody answers on; refuse a live one or a non-socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    _refuse_not_ours(path, st)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        probe.close()
        logger.info("replacing stale control socket {}", path)
        path.unlink(missing_ok=True)  # stale: nobody listens
        return
    except TimeoutError:
        probe.close()  # accepted by the kernel but slow to answer: someone is there
        raise AlreadyRunning(f"another akoshad is already running on {path}") from None
    except OSError as exc:
        probe.close()
        raise AkoshadError(f"cannot check the existing socket {path}: {exc}") from exc
    pid = _probe_pid(probe)
    who = f" (pid {pid})" if pid is not None else ""
    raise AlreadyRunning(f"another akoshad is already running on {path}{who}")


def _probe_pid(probe: socket.socket) -> int | None:
    """Blocking: ask a live daemon for its pid over a connected socket (None if it won't say)."""
    try:
        probe.sendall(b'{"cmd": "status"}\n')
        buf = b""
        while not buf.endswith(b"\n") and len(buf) < 1024 * 1024:
            chunk = probe.recv(65536)
            if not chunk:
                break
            buf += chunk
        pid = json.loads(buf).get("result", {}).get("pid")
        return pid if isinstance(pid, int) else None
    except (OSError, ValueError, AttributeError):
        return None
    finally:
        probe.close()
