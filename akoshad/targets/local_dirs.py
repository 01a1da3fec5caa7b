"""The directories of the local target, never reached through a link: a directory opened
relative to its parent's descriptor with ``O_NOFOLLOW`` (made 0700 when missing and asked
for), a walk down from the root one directory at a time (:func:`open_dir`), the listing of
every regular file below a directory (:func:`walk_files`), and the root's own mode
tightened to 0700 (:func:`tighten_root`)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from loguru import logger

from akoshad.names import SYSTEM_ID_RE
from akoshad.private import DIR_MODE, make_private_dirs, sync_entry
from akoshad.targets.local_files import TMP_MARK

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NOT_FOLLOWED = (errno.ELOOP, errno.ENOTDIR)  # what O_NOFOLLOW / O_DIRECTORY say of a link


class LinkInTarget(Exception):
    """A symlink (or a non-directory) where the outbox needs a directory."""

    def __init__(self, rel: str) -> None:
        super().__init__(rel)
        self.rel = rel


def _open_child(parent: int, name: str, *, create: bool) -> int:
    """The directory ``name`` inside ``parent``, never through a link; made 0700 when
    ``create`` and missing."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise
    try:
        os.mkdir(name, DIR_MODE, dir_fd=parent)
    except FileExistsError:
        return os.open(name, DIR_FLAGS, dir_fd=parent)  # made meanwhile
    fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    os.fchmod(fd, DIR_MODE)  # the umask may have taken bits away, never added
    sync_entry(parent)  # the new name outlives a power loss with the files put in it
    return fd


@contextlib.contextmanager
def open_dir(
    root: Path, parts: Sequence[str], *, create: bool, create_root: bool = True
) -> Iterator[int]:
    """A descriptor of ``root/parts...``, walked one directory at a time without
    following a link. ``FileNotFoundError`` if missing (and not ``create``; the root
    itself, not ``create_root`` either), ``LinkInTarget`` for a link or a file in the way."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        if not (create and create_root):
            raise
        make_private_dirs(root)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(parts):
            try:
                child = _open_child(fd, name, create=create)
            except OSError as exc:
                if exc.errno in NOT_FOLLOWED:
                    raise LinkInTarget("/".join(parts[: i + 1])) from None
                raise
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def walk_files(
    fd: int,
    rel: str,
    warn_link: Callable[[str, str], None],
    *,
    temps: bool = False,
    stats: dict[str, tuple[int, float]] | None = None,
) -> list[str]:
    """Every regular file's key under the directory ``fd`` (named ``rel``); links and
    entries that are no file nor directory (a FIFO) are skipped with a warning
    (``warn_link(key, "listed")``), temp files only listed with
    ``temps``. With ``stats``, each file's size and modification time go there too (a
    file removed meanwhile is left out)."""
    keys: list[str] = []
    with os.scandir(fd) as it:
        entries = list(it)
    for entry in entries:
        key = f"{rel}/{entry.name}" if rel else entry.name
        if entry.is_symlink():
            warn_link(key, "listed")
        elif entry.is_dir(follow_symlinks=False):
            try:
                child = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                continue  # removed meanwhile
            except OSError as exc:
                if exc.errno not in NOT_FOLLOWED:
                    raise
                warn_link(key, "listed")  # swapped for a link meanwhile
                continue
            try:
                keys += walk_files(child, key, warn_link, temps=temps, stats=stats)
            finally:
                os.close(child)
        elif entry.is_file(follow_symlinks=False) and (temps or TMP_MARK not in entry.name):
            if stats is not None:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # removed meanwhile
                stats[key] = (st.st_size, st.st_mtime)
            keys.append(key)
        elif not entry.is_file(follow_symlinks=False):  # a FIFO, a socket, a device
            warn_link(key, "listed")
    return keys


def remove_empty_dirs(fd: int, named: Callable[[str], bool] = lambda _: True) -> int:
    """Remove each directory below the directory ``fd`` that is empty, deepest first (a
    folder holding only empty ones goes too; links are never followed nor removed), of
    those directly in ``fd`` only the ones ``named`` accepts; then fsync the directories
    that changed. Returns how many went."""
    with os.scandir(fd) as it:
        names = [e.name for e in it if e.is_dir(follow_symlinks=False) and named(e.name)]
    removed = 0
    for name in names:
        try:
            child = os.open(name, DIR_FLAGS, dir_fd=fd)
        except OSError:
            continue  # removed or swapped for a link meanwhile
        try:
            removed += remove_empty_dirs(child)
        finally:
            os.close(child)
        try:
            os.rmdir(name, dir_fd=fd)
        except OSError:
            continue  # not empty
        removed += 1
    if removed:
        sync_entry(fd)
    return removed


def remove_empty_uploads(own_fd: int) -> None:
    """The empty folders of uploads under a system's ``uploads/`` (``own_fd``: its
    ``systems/{id}/``; an upload being written has a file in its own; a folder whose name is
    no upload id with a time is not akoshad's)."""
    from akoshad.manifest.layout import upload_time

    try:
        fd = os.open("uploads", DIR_FLAGS, dir_fd=own_fd)
    except OSError:
        return  # none yet, or a link (never followed)
    try:
        remove_empty_dirs(fd, lambda name: upload_time(name) is not None)
    finally:
        os.close(fd)


def system_ids_in(root: Path, limit: int) -> list[str]:
    """The folders under ``root/systems/`` named as system ids (links not followed)."""
    try:
        with os.scandir(root / "systems") as it:
            found = [e.name for e in it if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    return sorted(n for n in found if SYSTEM_ID_RE.match(n))[:limit]


def tighten_root(fd: int, root: Path) -> None:
    """An outbox of ours that others could enter (made by an older akoshad, or by hand)
    becomes 0700: what is inside is a copy of private data. One that others could still
    change (another user's, root aside, or one whose mode cannot be changed) is warned of."""
    st = os.fstat(fd)
    if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
        with contextlib.suppress(OSError):
            os.fchmod(fd, DIR_MODE)
            logger.info("local target {}: mode {:04o} -> 0700", root, stat.S_IMODE(st.st_mode))
    st = os.fstat(fd)
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (os.getuid(), 0) or mode & (stat.S_IWGRP | stat.S_IWOTH):
        owner = "you" if st.st_uid == os.getuid() else f"uid {st.st_uid}"
        logger.warning(
            "local target {} (mode {:04o}, owned by {}) can be changed by other users: they "
            "could delete or replace its uploads (verify finds damage, not a whole upload "
            "replaced); use a directory only you can write to",
            root,
            mode,
            owner,
        )
