"""Reading files in chunks without reading their holes (sparse files stay cheap), and
opening files under a root without following a symlink out of it."""

from __future__ import annotations

import errno
import functools
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from akoshad.fastpath import racy_stat


@dataclass(frozen=True, slots=True)
class LiveStat:
    """The identity of a live file at capture time: what the reconcile fast path compares
    (a capture holds it; the ledger keeps it beside what was stored)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> LiveStat:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def same_content_identity(self, other: LiveStat | None) -> bool:
        """size, mtime_ns and inode unchanged (ctime moves on metadata-only changes too)."""
        return other is not None and (self.size, self.mtime_ns, self.inode) == (
            other.size,
            other.mtime_ns,
            other.inode,
        )

    def as_list(self) -> list[int]:
        """``[size, mtime_ns, ctime_ns, inode]`` (the attempt record's JSON form)."""
        return [self.size, self.mtime_ns, self.ctime_ns, self.inode]

    def settled(self, read_ns: int) -> LiveStat:
        """This stat as the ledger may keep it for a file read up to ``read_ns`` (wall
        clock): on a file system with coarse timestamps, a file changed shortly before
        that could be written again within the same tick and keep this very stat
        (``fastpath.racy_stat``); its ctime is kept as 0 then, so that the next reconcile
        hashes it again instead of taking it for unchanged."""
        if racy_stat(self.mtime_ns, self.ctime_ns, read_ns):
            return LiveStat(self.size, self.mtime_ns, 0, self.inode)
        return self


CHUNK = 1024 * 1024
ZEROS = bytes(CHUNK)
_SEEK_DATA = getattr(os, "SEEK_DATA", None)
_SEEK_HOLE = getattr(os, "SEEK_HOLE", None)


def segments(fd: int, size: int) -> Iterator[tuple[int, int, bool]]:
    """(offset, length, is_data) runs covering [0, size)."""
    if _SEEK_DATA is None or _SEEK_HOLE is None:
        yield 0, size, True
        return
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, _SEEK_DATA)
        except OSError:  # ENXIO: only a hole remains (or unsupported)
            yield pos, size - pos, False
            return
        if data > pos:
            yield pos, min(data, size) - pos, False
        if data >= size:
            return
        hole = min(os.lseek(fd, data, _SEEK_HOLE), size)
        yield data, hole - data, True
        pos = hole


def read_chunks(fh: BinaryIO, chunk: int = CHUNK) -> Iterator[bytes]:
    """Yield the file's bytes from the start; holes come as zeros without being read.

    Reads until EOF like ``fh.read`` would (a file that grows is read to its new end).
    """
    fd = fh.fileno()
    size = os.fstat(fd).st_size
    zeros = ZEROS if chunk == CHUNK else bytes(chunk)
    end = 0
    for offset, length, is_data in segments(fd, size):
        end = offset + length
        if not is_data:
            full, rest = divmod(length, chunk)
            for _ in range(full):
                yield zeros
            if rest:
                yield zeros[:rest]
            continue
        fh.seek(offset)
        remaining = length
        while remaining > 0:
            piece = fh.read(min(chunk, remaining))
            if not piece:
                return  # shrank under us: the caller's stability check notices
            remaining -= len(piece)
            yield piece
    fh.seek(end)
    while piece := fh.read(chunk):  # grew under us
        yield piece


def copy_data(src_fd: int, dst_fd: int, size: int) -> bool:
    """Copy ``size`` bytes in the kernel (``copy_file_range``), data runs only, so holes stay
    holes. False when the platform or file system cannot (the caller copies by hand)."""
    copy = getattr(os, "copy_file_range", None)
    if copy is None:
        return False
    try:
        for offset, length, is_data in segments(src_fd, size):
            if not is_data:
                continue
            done = 0
            while done < length:
                n = copy(src_fd, dst_fd, length - done, offset + done, offset + done)
                if n == 0:
                    break  # the source shrank: the caller's stability check notices
                done += n
        os.ftruncate(dst_fd, size)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            return False
        raise
    return True


def write_sparse(fh: BinaryIO, data: bytes) -> None:
    """Write ``data``; a whole chunk of zeros becomes a hole (finish with ``truncate``)."""
    if len(data) == CHUNK and data == ZEROS:
        fh.seek(CHUNK, os.SEEK_CUR)
    else:
        fh.write(data)


class LinkRefused(OSError):
    """A path names a symlink (or leads through one) where none may be followed."""


_PROC_FD = Path("/proc/self/fd")
OUTSIDE = "symlink points outside data_dir"


def resolve_under(root_real: Path, path: Path) -> Path:
    """``path`` with every symlink resolved; LinkRefused when that leaves ``root_real``
    (itself resolved)."""
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(root_real):
        raise LinkRefused(errno.ELOOP, OUTSIDE, str(path))
    return real


def open_resolved(real: Path) -> BinaryIO:
    """Open the regular file ``real`` (a path ``resolve_under`` returned) for reading without
    following any symlink: ``O_NOFOLLOW`` catches a link swapped in for the file, and the
    descriptor's own path (``/proc/self/fd``) must still be ``real``, which catches a
    directory on the way swapped for a link after the check."""
    return os.fdopen(_open_resolved_fd(real), "rb")


def read_resolved(real: str | Path, limit: int) -> bytes:
    """Up to ``limit`` bytes of the regular file ``real``, opened as :func:`open_resolved`
    opens it (a small file read at once: no buffered file object)."""
    fd = _open_resolved_fd(real, blocking=False)  # a regular file: reads never wait anyway
    try:
        blocks: list[bytes] = []
        left = limit
        while left > 0:
            block = os.read(fd, left)
            blocks.append(block)
            if len(block) < left:  # the end of the file (a short read can only make the
                break  # caller, which compares the length with the stat, read it again)
            left -= len(block)
        return b"".join(blocks)
    finally:
        os.close(fd)


@functools.cache
def _proc_fd() -> bool:
    """Whether ``/proc/self/fd`` tells a descriptor's path (looked up once)."""
    return _PROC_FD.is_dir()


def _open_resolved_fd(real: str | Path, *, blocking: bool = True) -> int:
    """The descriptor :func:`open_resolved` reads (close-on-exec; in blocking mode unless
    ``blocking`` is False: it is opened non-blocking, so that a FIFO put in the file's place
    cannot hang the open)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LinkRefused(errno.ELOOP, "became a symlink while being read", str(real)) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LinkRefused(errno.EINVAL, "not a regular file", str(real))
        if _proc_fd():
            opened = os.readlink(f"/proc/self/fd/{fd}")
            if opened.endswith(" (deleted)"):
                raise FileNotFoundError(errno.ENOENT, "removed while being opened", str(real))
            if opened != str(real):
                raise LinkRefused(
                    errno.ELOOP, "a directory on its path became a symlink", str(real)
                )
        if blocking:
            os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def directory_problem(
    path: Path, name: str, then: str, *, missing: str | None = None, follow: bool = True
) -> str | None:
    """One line when the directory ``path`` (the setting ``name``) is missing, cannot be
    looked at or is no directory, each ending with ``then`` (what that means; ``missing``
    instead for a missing one), else None. ``follow``: a symlink to a directory is one."""
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return f"{name} {path} does not exist: {missing or then}"
    except OSError as exc:
        return f"{name} {path} cannot be read ({exc.strerror or exc}): {then}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{name} {path} is not a directory: {then}"
    return None
