"""Private files and directories: what akoshad creates for itself is 0700 / 0600, whatever
the umask (the outbox, the log file and their directories hold copies of private data)."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dirs(path: Path) -> None:
    """``mkdir -p path``: every directory it creates is 0700 whatever the umask. Existing
    ones are left as they are (their owner chose their mode)."""
    missing: list[Path] = []
    while not os.path.lexists(path):
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(directory, DIR_MODE)


def private_opener(path: str, flags: int) -> int:
    """An ``open()`` opener: the file is 0600 whatever the umask, also when it exists (a
    regular file of ours; a device such as /dev/stderr is left alone)."""
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != FILE_MODE:
        with contextlib.suppress(PermissionError):
            os.fchmod(fd, FILE_MODE)
    return fd
