"""Writing a restore under ``--dest`` without ever following a symlink.

Every directory and file is created relative to a directory descriptor, starting from one
for ``--dest``, with no-follow opens: a symlink found where a directory or a file of the
restore goes is replaced (``--force``) or refused, never followed. Files are written to a
private temporary name, then renamed over their final name (a rename replaces a link, it
does not write through it); the temporary names a killed restore left are removed when the
next restore opens ``--dest``. Directories come out 0700; files get the mode recorded at
capture, or 0600.

Everything here blocks: call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from akoshad.errors import AkoshadError
from akoshad.fileio import CHUNK, write_sparse
from akoshad.private import sync_entry
from akoshad.restore.direct import DirectWriter

DIR_MODE = 0o700
DEFAULT_FILE_MODE = 0o600
TEMP_PREFIX = ".akoshad-restore-"
# our temporary names: the writer's pid, then 12 hex digits (no pid: an older akoshad's)
_PARTIAL_RE = re.compile(r"^\.akoshad-restore-(?:(\d{1,10})-)?[0-9a-f]{12}$")
_NAMES = itertools.count(int.from_bytes(os.urandom(6), "big"))  # temporary names' tails
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class DestError(AkoshadError):
    """Something in ``--dest`` is in the way of the restore."""


def dest_link(dest: Path) -> str | None:
    """Why ``--dest`` is refused when it is itself a symlink (None: it is not). Its parents
    are the path the user named and are resolved as usual; the link at its end is not."""
    try:
        target = os.readlink(dest)
    except OSError:  # missing, or not a link
        return None
    return (
        f"--dest {dest} is a symlink (to {target}): a restore follows no symlink; "
        "name the directory itself"
    )


def open_dest(dest: Path) -> int:
    """A descriptor for ``--dest`` (created 0700 with its parents when missing). ``--dest``
    itself may not be a symlink (refused, ``DestError``), and nothing under it is followed;
    its parents are resolved as usual."""
    refused = dest_link(dest)
    if refused is not None:
        raise DestError(refused)
    made = [p for p in (dest, *dest.parents) if not os.path.lexists(p)]
    dest.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    for path in reversed(made):  # each new name outlives a power loss with the restore
        sync_entry(path.parent)
    try:
        fd = os.open(dest, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        # a symlink put there since (O_NOFOLLOW refuses it: ENOTDIR on Linux, ELOOP on BSD)
        raise DestError(dest_link(dest) or f"--dest {dest} is not a directory") from None
    remove_partials(fd)
    return fd


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: not ours to judge
    return True


def remove_partials(dest_fd: int) -> int:
    """Remove the partial files a killed restore left under ``dest_fd`` (our temporary
    names only, regular files, written by no live process; no link is followed). Returns
    how many. Blocking."""
    removed = 0
    # each directory by its path from DIR, opened only when it is still the one its
    # parent listed (a link swapped in on the way leads elsewhere); a stack, not
    # ``os.fwalk``'s recursion, which stops at a tree 1,000 levels deep
    stack = [(".", os.fstat(dest_fd))]
    while stack:
        rel, listed = stack.pop()
        fd = _open_listed(dest_fd, rel, listed)
        if fd is None:
            continue
        try:
            for entry in _entries(fd):
                if entry.is_dir(follow_symlinks=False):
                    with contextlib.suppress(OSError):  # gone meanwhile
                        stack.append((f"{rel}/{entry.name}", entry.stat(follow_symlinks=False)))
                elif _is_partial(entry.name):
                    st = _lstat_at(fd, entry.name)
                    if st is not None and stat.S_ISREG(st.st_mode):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(entry.name, dir_fd=fd)
                            removed += 1
        finally:
            os.close(fd)
    return removed


def _is_partial(name: str) -> bool:
    """A temporary name of a restore that is not running any more."""
    found = _PARTIAL_RE.match(name)
    return found is not None and not (found.group(1) and _alive(int(found.group(1))))


def _open_listed(dest_fd: int, rel: str, listed: os.stat_result) -> int | None:
    """The directory ``rel`` under ``dest_fd`` if it is still the one ``listed`` (same
    device and inode), else None (gone, replaced, a path too long to open)."""
    try:
        fd = os.open(rel, _DIR_FLAGS, dir_fd=dest_fd)
    except OSError:
        return None
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (listed.st_dev, listed.st_ino):
        os.close(fd)
        return None
    return fd


def _entries(fd: int) -> list[os.DirEntry[str]]:
    """The entries of the open directory ``fd`` (none when it cannot be listed)."""
    try:
        with os.scandir(fd) as it:
            return list(it)
    except OSError:
        return []


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """``name`` under ``dir_fd`` (a link itself), None when there is none: missing, or a
    name too long for any file there (a side file's name with its suffix)."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return None
        raise


def remove_stale(dir_fd: int, name: str, shown: str) -> None:
    """Remove the file or link ``name`` under ``dir_fd`` when there is one (a WAL that
    belongs to no restored database); a directory there is refused."""
    st = _lstat_at(dir_fd, name)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        raise DestError(f"{shown} in --dest is a directory")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def _subdir(dir_fd: int, name: str, shown: str, force: bool) -> int:
    """Open (creating it 0700) the directory ``name`` under ``dir_fd``, never through a
    link: a link or a file there is replaced with ``force``, refused without."""
    return _open_subdir(dir_fd, name, shown, force)[0]


def _open_subdir(dir_fd: int, name: str, shown: str, force: bool) -> tuple[int, bool]:
    """``_subdir``, and whether ``dir_fd`` changed (a directory made, a link removed)."""
    changed = False
    for _ in range(3):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd), changed
        except FileNotFoundError:
            try:
                os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
            except FileExistsError:
                continue  # raced with another creator: open what is there
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            os.fchmod(fd, DIR_MODE)  # whatever the umask
            return fd, True
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = _lstat_at(dir_fd, name)
            what = "a symlink" if st is not None and stat.S_ISLNK(st.st_mode) else "not a directory"
            if not force:
                raise DestError(
                    f"{shown} in --dest is {what} (use --force to replace it)"
                ) from None
            os.unlink(name, dir_fd=dir_fd)  # the link itself, never what it points at
            changed = True
    raise DestError(f"{shown} in --dest keeps changing")


def dest_conflict(dest: Path, paths: Iterable[str], force: bool) -> str | None:
    """The first store path of ``paths`` (files the restore writes, or side files it
    removes) that ``dest`` cannot take, as the restore would say it, else None (blocking):
    a directory where a file goes, a file or link where a directory goes (without
    ``force``). Looked for before anything is written, so that a refused restore leaves
    nothing half done; the writes check again as they go."""
    for path in sorted(paths):
        parts = path.split("/")
        for n in range(1, len(parts) + 1):
            try:
                st = os.lstat(os.path.join(dest, *parts[:n]))
            except (FileNotFoundError, NotADirectoryError):
                break  # made by the restore
            except OSError as exc:
                if exc.errno != errno.ENAMETOOLONG:
                    raise
                break  # a name no file there can have (a side file's): nothing in the way
            shown = "/".join(parts[:n])
            if n == len(parts):
                if stat.S_ISDIR(st.st_mode):
                    return f"{shown} in --dest is a directory"
            elif not stat.S_ISDIR(st.st_mode):
                what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
                if not force:
                    return f"{shown} in --dest is {what} (use --force to replace it)"
                break  # replaced: nothing below it is in the way
    return None


def parent_dir(dest_fd: int, path: str, force: bool) -> int:
    """A descriptor for the directory that holds the store path ``path`` (a validated
    relative path), created as needed under ``dest_fd``. The caller closes it."""
    parts = path.split("/")
    fd = os.dup(dest_fd)
    try:
        for n, name in enumerate(parts[:-1], start=1):
            sub = _subdir(fd, name, "/".join(parts[:n]), force)
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd


class FileSink:
    """A restored file being written: a temporary name in its directory, renamed over the
    final name by ``commit`` (or removed by ``discard``); ``direct``: written past the page
    cache (``direct.DirectWriter``), for a large file that is fsynced anyway."""

    def __init__(
        self,
        dir_fd: int,
        name: str,
        mode: int | None,
        direct: bool = False,
        label: str | None = None,
        mtime_ns: int | None = None,
    ) -> None:
        self.dir_fd = dir_fd
        self.mtime_ns = mtime_ns  # the modification time recorded at capture
        self.name = name
        self.label = label  # the file as errors name it (a write error carries no name)
        self.mode = DEFAULT_FILE_MODE if mode is None else mode & 0o777
        self.tmp = f"{TEMP_PREFIX}{os.getpid()}-{next(_NAMES) & 0xFFFF_FFFF_FFFF:012x}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        with self.naming():
            fd = os.open(self.tmp, flags, 0o600, dir_fd=dir_fd)
        self.fh: BinaryIO = os.fdopen(fd, "wb")
        self.written = 0  # bytes written or skipped as holes
        self.holes = False
        self.direct: DirectWriter | None = None
        if direct:
            try:
                self.direct = DirectWriter(fd)
            except BaseException:
                self.discard()
                raise

    @contextlib.contextmanager
    def naming(self) -> Iterator[None]:
        """An OSError raised within names this file (``label``) when it names no file or
        only our temporary name: "No space left on device" alone does not say where."""
        try:
            yield
        except OSError as exc:
            name = exc.filename
            if self.label is not None and (
                not isinstance(name, str) or os.path.basename(name).startswith(TEMP_PREFIX)
            ):
                exc.filename = self.label
            raise

    def write(self, data: bytes | memoryview) -> None:
        """Write decoded bytes, leaving whole chunks of zeros as holes."""
        with self.naming():
            self._write(data)

    def _write(self, data: bytes | memoryview) -> None:
        self.written += len(data)
        if self.direct is not None:
            self.direct.write(data)
            return
        if len(data) < CHUNK:
            self.fh.write(data)
            return
        view = memoryview(data)
        for start in range(0, len(view), CHUNK):
            piece = view[start : start + CHUNK]
            if piece[0] == 0 and piece[-1] == 0:  # perhaps a hole: look at all of it
                self.holes = True
                write_sparse(self.fh, bytes(piece))
            else:
                self.fh.write(piece)

    def commit(self, size: int, shown: str) -> None:
        """Finish the file (size, fsync), rename it over its final name, give it its mode."""
        self.finish(size)
        self.sync()
        self.publish(shown)

    def finish(self, size: int) -> None:
        """Set the file's size (only a hole at its end leaves it short) and hand its bytes
        to the kernel (no fsync)."""
        with self.naming():
            self._finish(size)

    def _finish(self, size: int) -> None:
        if self.direct is not None:
            self.direct.close()
            self.direct = None
            self.fh.truncate(size)  # the last write was padded
            return
        if self.holes or size != self.written:
            self.fh.truncate(size)
        self.fh.flush()

    def sync(self) -> None:
        """fsync the file's data (before ``publish`` makes it visible)."""
        with self.naming():
            os.fsync(self.fh.fileno())

    def publish(self, shown: str) -> None:
        """Rename the file over its final name (a directory there is refused), then give it
        its mode and modification time and close it: a temporary file is never more open
        than 0600. They reach the disk with the directories' fsync that ends a restore (one
        journal)."""
        try:
            os.replace(self.tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except IsADirectoryError:  # a file never replaces a directory (EISDIR)
            self.discard()
            raise DestError(f"{shown} in --dest is a directory") from None
        try:
            os.fchmod(self.fh.fileno(), self.mode)
            if self.mtime_ns is not None and os.utime in os.supports_fd:
                os.utime(self.fh.fileno(), ns=(self.mtime_ns, self.mtime_ns))
        finally:
            self.fh.close()

    def discard(self) -> None:
        """Close and remove the temporary file (idempotent)."""
        self.direct = None
        self.fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp, dir_fd=self.dir_fd)
