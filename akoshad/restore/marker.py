"""The mark of a restore that has not (yet) restored every file into ``--dest``.

Before the first file is written, ``DIR/.akoshad-incomplete-restore`` is made and
fsynced (with DIR); it is removed (and DIR fsynced) only once every file of the restore
has landed and DIR is synced. A restore killed on the way (SIGKILL, a power loss), one
stopped by a signal, a full disk or a target that stopped answering, and one that could
not restore some files leave it: a later look at DIR, or a restore run into it again,
tells that DIR does not hold the whole upload. The name holds ``.akoshad-``, which the
daemon never backs up, so no upload holds a store file of that name; one a hand-made
manifest names is not restored (``refused``). Blocking.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from akoshad.private import sync_entry
from akoshad.storage.stored import StoredFile

MARKER = ".akoshad-incomplete-restore"
_READ_MAX = 4096
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def mark(dest_fd: int, upload_id: str) -> None:
    """Make the marker in the directory ``dest_fd`` (one already there, a link or a file,
    replaced; never written through), fsync it and the directory."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(MARKER, dir_fd=dest_fd)
    fd = os.open(MARKER, _FLAGS, 0o600, dir_fd=dest_fd)
    try:
        started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = (
            f"the restore of upload {upload_id} started {started} (pid {os.getpid()}) has "
            "not restored every file here\nThe files here are each whole and checked, "
            "but not every file of the upload: killed or stopped on the way, or some "
            "files could not be restored (its output named them). Restore again into "
            "this directory with --force; akoshad removes this file once a restore into "
            "it has restored every file (or remove it once this directory is as you want "
            "it).\n"
        )
        os.write(fd, text.encode())
        os.fsync(fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(MARKER, dir_fd=dest_fd)
        raise
    finally:
        os.close(fd)
    sync_entry(dest_fd)


def unmark(dest: Path) -> None:
    """Remove the marker from ``dest`` (a restore that restored every file), then fsync
    ``dest``: the removal reaches the disk after the files did."""
    try:
        os.unlink(dest / MARKER)
    except FileNotFoundError:
        return
    sync_entry(dest)


def marked(dest: Path) -> str | None:
    """What the marker in ``dest`` says (its first line, bounded), or None when there is
    none (a directory or link so named is not ours: None)."""
    try:
        st = os.lstat(dest / MARKER)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    try:
        fd = os.open(dest / MARKER, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        return f"unreadable: {exc.strerror}" if exc.errno != errno.ENOENT else None
    try:
        text = os.read(fd, _READ_MAX).decode("utf-8", "replace")
    finally:
        os.close(fd)
    return text.split("\n", 1)[0].strip() or "empty"


def only_marker(dest: Path) -> bool:
    """Whether ``dest`` holds nothing but the marker."""
    try:
        with os.scandir(dest) as it:
            return [e.name for e in it] == [MARKER]
    except OSError:
        return False


def refused(files: Sequence[StoredFile]) -> list[tuple[StoredFile, str]]:
    """The files of ``files`` at the marker's path (a hand-made manifest), with why."""
    return [
        (f, f"'{f.path}': not restored: that name is the mark of a restore that has not "
         "restored every file (akoshad never backs up a name holding '.akoshad-')")
        for f in files
        if f.path == MARKER
    ]  # fmt: skip
