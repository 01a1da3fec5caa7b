"""Large restored files are written past the page cache (``restore.direct``): whole aligned
stages with ``O_DIRECT``, a stage of zeros left as a hole, the padded last stage cut back to
the file's size, and the same bytes buffered where the file system refuses ``O_DIRECT``."""

from __future__ import annotations

import errno
import fcntl
import os
import random
from pathlib import Path

import pytest

from akoshad.restore import direct, landing
from akoshad.restore.destdir import FileSink
from akoshad.restore.direct import ALIGN, STAGE, DirectWriter
from akoshad.restore.readback import restore_files
from tests.format2_store import MemTarget, Store

SIZES = [1, ALIGN - 1, ALIGN, ALIGN + 1, STAGE - 1, STAGE, STAGE + 1, 3 * STAGE + 12_345]


def _write(path: Path, data: bytes, rng: random.Random) -> DirectWriter:
    """``data`` written through a DirectSink-like sequence: pieces of random sizes, then
    closed and cut to its size (as ``FileSink.finish`` does)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        writer = DirectWriter(fd)
        pos = 0
        while pos < len(data):
            n = rng.choice([1, 100, ALIGN, 70_000, STAGE, 3 * STAGE])
            writer.write(memoryview(data)[pos : pos + n])
            pos += n
        assert writer.close() == len(data)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
    return writer


def _direct_supported(tmp_path: Path) -> bool:
    fd = os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        return direct.enable_direct(fd)
    finally:
        os.close(fd)
        os.unlink(tmp_path / "probe")


@pytest.mark.parametrize("size", SIZES)
def test_every_size_comes_out_byte_for_byte(tmp_path: Path, size: int) -> None:
    rng = random.Random(size)
    data = rng.randbytes(size)
    writer = _write(tmp_path / "f", data, rng)
    assert (tmp_path / "f").read_bytes() == data
    assert writer.direct == _direct_supported(tmp_path)


def test_a_stage_of_zeros_is_a_hole(tmp_path: Path) -> None:
    rng = random.Random(1)
    data = rng.randbytes(STAGE) + bytes(4 * STAGE) + rng.randbytes(STAGE // 2 + 7)
    writer = _write(tmp_path / "f", data, rng)
    assert writer.holes
    assert (tmp_path / "f").read_bytes() == data
    assert (tmp_path / "f").stat().st_blocks * 512 < len(data) - 3 * STAGE  # not written


def test_a_refused_direct_write_is_done_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that takes ``O_DIRECT`` at open but refuses its writes (alignment):
    the write is done again without it, and the file is whole."""
    monkeypatch.setattr(direct, "enable_direct", lambda fd: True)
    real = os.pwrite
    refused: list[int] = []

    def pwrite(fd: int, data: memoryview, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & direct.O_DIRECT or not refused:
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, data, offset)

    monkeypatch.setattr(direct.os, "pwrite", pwrite)
    rng = random.Random(2)
    data = rng.randbytes(2 * STAGE + 5)
    writer = _write(tmp_path / "f", data, rng)
    assert refused == [0] and not writer.direct
    assert (tmp_path / "f").read_bytes() == data


def test_no_direct_io_on_this_file_system_writes_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = fcntl.fcntl

    def refuse(fd: int, cmd: int, arg: int = 0) -> int:
        if cmd == fcntl.F_SETFL and arg & direct.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real(fd, cmd, arg)

    monkeypatch.setattr(direct.fcntl, "fcntl", refuse)
    rng = random.Random(3)
    data = rng.randbytes(STAGE + 99)
    writer = _write(tmp_path / "f", data, rng)
    assert not writer.direct
    assert (tmp_path / "f").read_bytes() == data


async def test_restore_writes_large_files_direct_and_small_ones_buffered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through ``restore_files``: the large file's bytes go out by aligned ``O_DIRECT``
    writes (where the file system takes them), the small file's by the page cache; both
    come back whole."""
    if not _direct_supported(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    monkeypatch.setattr(landing, "DIRECT_MIN", 2 * STAGE)
    rng = random.Random(4)
    src = tmp_path / "src"
    src.mkdir()
    big = rng.randbytes(3 * STAGE + 4321)
    (src / "big.bin").write_bytes(big)
    (src / "small.bin").write_bytes(rng.randbytes(STAGE))
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    target = MemTarget()
    files = await Store(target, "sys", staging).store_tree(src)
    writes: list[tuple[int, int, bool]] = []
    real = os.pwrite

    def pwrite(fd: int, data: memoryview, offset: int) -> int:
        writes.append((offset, len(data), bool(fcntl.fcntl(fd, fcntl.F_GETFL) & direct.O_DIRECT)))
        return real(fd, data, offset)

    monkeypatch.setattr(direct.os, "pwrite", pwrite)
    dest = tmp_path / "dest"
    assert await restore_files(target, files, dest) == 2
    assert (dest / "big.bin").read_bytes() == big
    assert (dest / "small.bin").read_bytes() == (src / "small.bin").read_bytes()
    assert sum(n for _, n, _ in writes) == 3 * STAGE + 2 * ALIGN  # the big file, padded
    assert all(d and off % ALIGN == 0 and n % ALIGN == 0 for off, n, d in writes)


def test_a_direct_sink_ending_in_zeros_has_its_size_and_a_discarded_one_leaves_nothing(
    tmp_path: Path,
) -> None:
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        data = random.Random(5).randbytes(STAGE + 3) + bytes(2 * STAGE)
        sink = FileSink(dir_fd, "f", 0o640, direct=True)
        for pos in range(0, len(data), 300_000):
            sink.write(data[pos : pos + 300_000])
        sink.commit(len(data), "f")
        gone = FileSink(dir_fd, "g", None, direct=True)
        gone.write(data[:STAGE])
        gone.discard()
    finally:
        os.close(dir_fd)
    assert (tmp_path / "f").read_bytes() == data
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]
