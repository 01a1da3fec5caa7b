"""Private files and directories: what akoshad creates for itself is 0700 / 0600, whatever
the umask (the outbox, the log file and their directories hold copies of private data)."""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shutil
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
# a place that takes no writes: neither free space nor a retry helps (ENOENT: /proc/1/x)
NO_WRITES = frozenset({errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT})


def make_private_dirs(path: Path) -> None:
    """``mkdir -p path``: every directory it creates is 0700 whatever the umask, and its
    name fsynced into its parent (a file fsynced inside a new directory is not enough for
    the directory to outlive a power loss). Existing ones are left as they are (their owner
    chose their mode)."""
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
        sync_entry(directory.parent)


def sync_entry(directory: Path | int) -> None:
    """fsync ``directory`` (a path or an open descriptor) so that a name just made in it
    survives a power loss; a file system that cannot fsync a directory is let be."""
    with contextlib.suppress(OSError):
        if isinstance(directory, int):
            os.fsync(directory)
            return
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def private_opener(path: str, flags: int) -> int:
    """An ``open()`` opener: the file is 0600 whatever the umask, also when it exists (a
    regular file of ours; a device such as /dev/stderr is left alone)."""
    fd = os.open(path, flags | os.O_CLOEXEC, FILE_MODE)
    st = os.fstat(fd)
    if stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) != FILE_MODE:
        with contextlib.suppress(PermissionError):
            os.fchmod(fd, FILE_MODE)
    return fd


def fresh_private_dir(path: Path) -> int:
    """Make ``path`` a new, empty directory of ours, mode 0700 (its missing parents too).

    Whatever stands there first (what a killed run left: a directory, a file, or a link,
    removed as the link itself, never what it points at; ``rmtree`` follows no link) is
    removed. Returns how many entries it held (0: nothing was left over). Blocking."""
    removed = 0
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        removed = len(os.listdir(path))
        shutil.rmtree(path)
    elif st is not None:
        os.unlink(path)
        removed = 1
    make_private_dirs(path.parent)
    path.mkdir(mode=DIR_MODE)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, DIR_MODE)  # whatever the umask
    finally:
        os.close(fd)
    return removed


def remove_tree(path: Path) -> None:
    """Remove the directory ``path`` and everything below it, as ``shutil.rmtree(path,
    ignore_errors=True)`` does (no link followed: one is removed as itself; what cannot be
    removed is left), with a stack of its own instead of a recursion: Python 3.11's
    ``rmtree`` stops with RecursionError in a tree 1,000 levels deep. ``path`` itself a
    link: nothing is removed. Blocking."""
    if os.path.islink(path):
        return
    stack: list[tuple[str, bool]] = [(str(path), False)]
    while stack:
        top, emptied = stack.pop()
        if emptied:
            with contextlib.suppress(OSError):
                os.rmdir(top)
            continue
        stack.append((top, True))  # removed once what is below it is
        try:
            entries = list(os.scandir(top))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, False))
                else:
                    os.unlink(entry.path)
            except OSError:
                continue


def user_name(uid: int) -> str:
    """``user NAME (uid N)``, or ``uid N`` for an unknown uid."""
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _owner(uid: int) -> str:
    return "you" if uid == os.geteuid() else user_name(uid)


def shared_dir_problem(field: str, path: Path) -> str | None:
    """One line when another user could plant, swap or remove files in the existing
    directory ``path`` (``field`` names the setting): it is another user's (root aside),
    or its group or others may write to it; or a directory above it is another user's
    (root aside), or others may write to it and it is not sticky (they could rename ours
    away and put theirs in its place). None when it is private, or does not exist yet."""
    uid = os.geteuid()
    try:
        real = path.resolve()
        st = os.stat(real)
    except OSError:
        return None
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (uid, 0):  # root can do anything anyway
        return (
            f"{field} {path} is owned by {_owner(st.st_uid)}, not you: they could plant or "
            f"replace akoshad's files there; set {field} to a directory of your own"
        )
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"{field} {path} (mode {mode:04o}) can be written by other users, who could plant "
            f"or replace akoshad's files there; run `chmod 700 {real}` or set {field} to a "
            "directory only you can write to"
        )
    for above in real.parents:
        try:
            st = os.stat(above)
        except OSError:
            return None
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid not in (uid, 0) or (mode & stat.S_IWOTH and not mode & stat.S_ISVTX):
            return (
                f"{field} {path}: the directory above it {above} (mode {mode:04o}, owned by "
                f"{_owner(st.st_uid)}) lets other users replace it; set {field} to a "
                "directory whose parents only you (or root) can change"
            )
    return None
