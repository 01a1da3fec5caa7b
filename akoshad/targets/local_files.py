"""Writing one object of the local target inside its directory (a descriptor): a
temporary name, fsynced, then renamed into place (or, for an exclusive create, hard-linked:
never over another file); a finished file (a pack) is hard-linked instead of copied where the
file system allows it."""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from akoshad.errors import TransientError
from akoshad.private import FILE_MODE
from akoshad.storage.errors import PackError

TMP_MARK = ".akoshad-tmp-"


# a file system that cannot link the file into the target: copy it instead
NO_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP})


def link_in(dfd: int, name: str, source: Path, st: os.stat_result) -> bool:
    """Hard-link ``source`` (the file whose stat is ``st``) as ``name`` in the directory
    ``dfd``: a temporary name, checked to be that very file, fsynced, renamed. The source
    must not change afterwards (a sealed pack, deleted from staging once it landed)."""
    tmp = f"{name}{TMP_MARK}{uuid.uuid4().hex[:8]}"
    os.link(source, tmp, dst_dir_fd=dfd, follow_symlinks=False)
    try:
        fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        try:
            linked = os.fstat(fd)
            if (linked.st_dev, linked.st_ino) != (st.st_dev, st.st_ino):
                raise TransientError(f"local target: {source.name} changed while it was stored")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise
    with contextlib.suppress(OSError):
        os.fsync(dfd)
    return True


def write_in(dfd: int, name: str, chunks: Iterator[bytes], *, exclusive: bool = False) -> int:
    """Write ``chunks`` to ``name`` in the directory ``dfd`` atomically, 0600. With
    ``exclusive``, only when ``name`` is free (a hard link: ``FileExistsError`` else)."""
    tmp = f"{name}{TMP_MARK}{uuid.uuid4().hex[:8]}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    written = 0
    try:
        with os.fdopen(os.open(tmp, flags, FILE_MODE, dir_fd=dfd), "wb") as fh:
            os.fchmod(fh.fileno(), FILE_MODE)
            for chunk in chunks:
                fh.write(chunk)
                written += len(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
            os.unlink(tmp, dir_fd=dfd)
        else:
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise
    with contextlib.suppress(OSError):
        os.fsync(dfd)
    return written


def pread_exact(fd: int, key: str, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` of the object ``key`` open as ``fd``; PackError when
    it ends too soon (named as S3 reads name it: where the object ends)."""
    if length == 0 and offset > os.fstat(fd).st_size:
        raise PackError(f"object {key} ends before {offset}")
    pieces: list[bytes] = []
    got = 0
    while got < length:
        piece = os.pread(fd, length - got, offset + got)
        if not piece:
            size = os.fstat(fd).st_size
            raise PackError(
                f"object {key} ends at {size}, a read needs {offset}..{offset + length}"
            )
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)
