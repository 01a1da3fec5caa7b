"""The ``log_file`` sink: loguru's formatted records appended to a file of mode 0600,
rotated by size (``akoshad.log`` -> ``akoshad.log.1`` ... ``.5``, the oldest dropped).

A write that fails (the disk full, the file system gone read-only) loses that record in the
file only: one line says so on the daemon's standard error, once until the file takes
writes again (then one more line). loguru's own file sink printed a multi-line traceback
for every record instead.

A directory others may write to is refused (:func:`check_log_dir`), unless it is sticky
(``/tmp``): there the file is opened without following a link and must be ours, with no
other name (another user could have put a link, or a hard link to a file of ours, first)."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import TextIO

from akoshad.errors import ConfigError
from akoshad.private import FILE_MODE, private_opener, shared_dir_problem

ROTATE_BYTES = 10 * 1024 * 1024
KEPT = 5  # rotated files kept beside the current one


class LogFile:
    """A loguru sink (an object with ``write`` and ``stop``) for ``log_file``. Opening it
    raises ``OSError`` (the caller refuses the configuration); later failures never
    raise: ``notice`` gets one line per spell of failures."""

    def __init__(
        self,
        path: Path,
        notice: Callable[[str], None],
        rotate_bytes: int = ROTATE_BYTES,
        kept: int = KEPT,
    ) -> None:
        self.path = path
        self.notice = notice
        self.rotate_bytes = rotate_bytes
        self.kept = kept
        self.failing = False
        self.strict = check_log_dir(path)
        self._file: TextIO | None = self._open()

    def _open(self) -> TextIO:
        opener = _own_file_opener if self.strict else private_opener
        return open(self.path, "a", encoding="utf-8", opener=opener)

    def write(self, message: str) -> None:
        try:
            if self._file is None:
                self._file = self._open()
            size = self._file.tell()
            if size and size + len(message.encode()) > self.rotate_bytes:
                self._rotate()
                self._file = self._open()
            self._file.write(message)
            self._file.flush()
        except OSError as exc:
            self._failed(exc)
            return
        if self.failing:
            self.failing = False
            self.notice(f"log_file {self.path} takes writes again")

    def _rotate(self) -> None:
        """``path`` becomes ``path.1``, ``path.1`` ``path.2``... (``path.<kept>`` dropped)."""
        self._close()
        for n in range(self.kept - 1, 0, -1):
            older = Path(f"{self.path}.{n}")
            if older.exists():
                os.replace(older, f"{self.path}.{n + 1}")
        os.replace(self.path, f"{self.path}.1")

    def _failed(self, exc: OSError) -> None:
        self._close()  # opened again at the next record (a write half done is not resumed)
        if not self.failing:
            self.failing = True
            why = exc.strerror or type(exc).__name__
            self.notice(
                f"log_file {self.path} cannot be written ({why}): its records are lost "
                "until it can; they still come here"
            )

    def _close(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            with suppress(OSError):  # the buffer could not be flushed: the disk is full
                file.close()

    def stop(self) -> None:
        """Called by loguru when the sink is removed."""
        self._close()


class NotOurs(OSError):
    """The log file in a shared directory is a link, or not a file of ours alone."""


def check_log_dir(path: Path) -> bool:
    """Whether ``path``'s directory is shared but sticky (open the file strictly);
    ``ConfigError`` when another user could replace what is in it."""
    parent = path.parent
    problem = shared_dir_problem("log_file's directory", parent)
    if problem is None:
        return False
    st = os.stat(parent)
    if st.st_mode & stat.S_ISVTX and st.st_uid in (os.geteuid(), 0):
        return True  # as /tmp: others may add names, never replace ours
    raise ConfigError(f"log_file {path}: {problem}")


def _own_file_opener(path: str, flags: int) -> int:
    """``private_opener`` for a shared sticky directory: no link followed, and a file
    that is ours with one name (checked before its mode is touched), else ``NotOurs``."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotOurs(errno.ELOOP, "it is a symlink, put there by someone") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_nlink != 1:
        os.close(fd)
        raise NotOurs(errno.EPERM, "it is not a file of ours alone (another user's, or a link)")
    if stat.S_IMODE(st.st_mode) != FILE_MODE:
        os.fchmod(fd, FILE_MODE)
    return fd
