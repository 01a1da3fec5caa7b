"""Names and constants every layer shares, defined once.

Standard library only: the quick ``run --once`` check and the drill worker import it.
"""

from __future__ import annotations

import os
import re
import sys

SYSTEM_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
MANIFEST_NAME = "manifest.json"
MEMORIES_NAME = "memories.json"  # the memories of an upload, beside its files
MEMORY_DB = "reflection.duckdb"  # the store file memories are read from

# Exit codes of ``akoshad`` (sysexits where one fits)
EXIT_OK = 0
EXIT_FAIL = 1  # the operation failed
EXIT_USAGE = 2  # bad command line
EXIT_NO_DAEMON = 3  # no daemon answers on the socket
EXIT_DEGRADED = 69  # EX_UNAVAILABLE: degraded for longer than allowed
EXIT_CONFIG = 78  # EX_CONFIG: bad configuration

# the longest path a Unix socket can be bound to (sun_path holds it and a NUL: 108 bytes on
# Linux, 104 on macOS and the BSDs)
SOCKET_PATH_MAX = 107 if sys.platform.startswith("linux") else 103


def socket_path_problem(path: os.PathLike[str] | str) -> str | None:
    """Why no socket can be bound to ``path`` (too long), or None."""
    size = len(os.fsencode(path))
    if size <= SOCKET_PATH_MAX:
        return None
    return (
        f"is {size} bytes long, and a Unix socket path may have at most {SOCKET_PATH_MAX}: "
        "choose a shorter socket_path"
    )


_STAGED = re.compile(r"^\d{6}-")  # a private copy's name: 000003-reflection.duckdb


def copy_of(copy: os.PathLike[str] | str) -> str:
    """The name of the store file ``copy`` is a private copy of, for messages (its staged
    name, ``000003-reflection.duckdb``, is nowhere a user can look)."""
    return _STAGED.sub("", os.path.basename(copy))


# control characters (C0, DEL, C1): a file name may hold any of them
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with each control character written as an escape (``\\n``, ``\\x1b``):
    a file name with a newline or a terminal escape shown on one line, as it is."""
    return _CONTROL_RE.sub(lambda m: repr(m.group())[1:-1], text)
