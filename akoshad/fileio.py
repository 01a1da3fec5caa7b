"""Reading files in chunks without reading their holes (sparse files stay cheap)."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from typing import BinaryIO

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
