"""One conformance suite, run against every target (local directory and real S3)."""

from __future__ import annotations

import asyncio
import errno
import gzip
import hashlib
import os
import shutil
import subprocess
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest

import akoshad.targets.s3.parts as s3parts
import akoshad.targets.s3.target as s3mod
from akoshad import compress, fileio
from akoshad.errors import TransientError
from akoshad.storage.errors import PackError
from akoshad.storage.prune_load import DatedLister
from akoshad.targets.base import Compression, ExclusiveCreate, ListsSystems, Target
from akoshad.targets.local import LocalTarget
from akoshad.targets.s3.target import S3Target
from tests.s3server import WeedServer

MiB = 1024 * 1024


@pytest.fixture(params=["local", pytest.param("cloud", marks=pytest.mark.s3)])
async def target(
    request: pytest.FixtureRequest, tmp_path: Path, system_id: str
) -> AsyncIterator[Target]:
    t: Target
    if request.param == "local":
        t = LocalTarget(tmp_path / "outbox")
    else:
        s3: WeedServer = request.getfixturevalue("s3")
        t = s3.s3_target(system_id, retry_backoff=0.1, max_retries=1)
    await t.start()
    yield t
    await t.close()


def key(system_id: str, name: str) -> str:
    return f"systems/{system_id}/uploads/u1/{name}"


async def read_all(t: Target, k: str) -> bytes:
    return b"".join([c async for c in t.read(k)])


@pytest.mark.parametrize("compression", ["none", "gzip"])
async def test_round_trip(target: Target, tmp_path: Path, system_id: str, compression: str) -> None:
    src = tmp_path / "src.json"
    src.write_bytes(b'{"hello": "world"}' * 1000)
    k = key(system_id, f"a.{compression}")
    stored = await target.put_file(k, src, compression)  # type: ignore[arg-type]
    data = await read_all(target, k)
    assert stored.stored_size == len(data) == await target.head(k)
    plain = gzip.decompress(data) if compression == "gzip" else data
    assert plain == src.read_bytes()
    assert stored.sha256 == hashlib.sha256(plain).hexdigest()
    if compression == "gzip":
        out = tmp_path / "x.gz"
        out.write_bytes(data)
        gunzip = await asyncio.to_thread(
            subprocess.run, ["gunzip", "-c", str(out)], capture_output=True, check=True
        )
        assert gunzip.stdout == src.read_bytes()


@pytest.mark.parametrize("compression", ["none", "gzip"])
async def test_larger_than_a_part(
    target: Target, tmp_path: Path, system_id: str, compression: Compression
) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(12 * MiB + 123))  # random: gzip makes it slightly larger
    k = key(system_id, f"big.{compression}")
    stored = await target.put_file(k, src, compression)
    data = await read_all(target, k)
    assert stored.stored_size == len(data) == await target.head(k)
    assert (gzip.decompress(data) if compression == "gzip" else data) == src.read_bytes()
    assert stored.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    if isinstance(target, S3Target):
        head = await target._call(
            lambda c: c.head_object(Bucket=target.bucket, Key=k), what=f"head {k}"
        )
        assert head["ETag"].strip('"').endswith("-3")  # three parts of 5 MiB


@pytest.mark.parametrize(
    "size", [1, 256 * 1024, 256 * 1024 + 1, 5 * MiB - 1, 5 * MiB, 5 * MiB + 1, 10 * MiB]
)
async def test_sizes_at_the_boundaries(
    target: Target, tmp_path: Path, system_id: str, size: int
) -> None:
    """Bytes or window bodies, one PUT or multipart (5 MiB exactly: one part)."""
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(size))
    k = key(system_id, f"f{size}")
    stored = await target.put_file(k, src, "none")
    assert stored.stored_size == size == await target.head(k)
    assert await read_all(target, k) == src.read_bytes()
    assert stored.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()


async def test_gzip_large_streams(target: Target, tmp_path: Path, system_id: str) -> None:
    src = tmp_path / "text.log"
    with src.open("wb") as fh:
        for i in range(300_000):
            fh.write(f"line {i} some repetitive text for the compressor\n".encode())
    k = key(system_id, "text.log.gz")
    stored = await target.put_file(k, src, "gzip")
    assert stored.stored_size < src.stat().st_size / 3
    assert gzip.decompress(await read_all(target, k)) == src.read_bytes()
    assert stored.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()


async def test_empty_file_and_bytes(target: Target, tmp_path: Path, system_id: str) -> None:
    src = tmp_path / "empty"
    src.write_bytes(b"")
    k = key(system_id, "empty")
    stored = await target.put_file(k, src, "none")
    assert stored.stored_size == 0 and stored.sha256 == hashlib.sha256(b"").hexdigest()
    assert await read_all(target, k) == b""
    m = key(system_id, "manifest.json")
    assert await target.put_bytes(m, b'{"x": 1}', "application/json") == 8
    assert await read_all(target, m) == b'{"x": 1}'


async def test_missing_key(target: Target, system_id: str) -> None:
    with pytest.raises(KeyError):
        await read_all(target, key(system_id, "nope"))
    assert await target.head(key(system_id, "nope")) is None


async def test_read_range(target: Target, tmp_path: Path, system_id: str) -> None:
    """Ranged reads of a pack-like object: anywhere in it, up to its last byte, nothing
    more than asked; across a part boundary of a multipart object too."""
    data = os.urandom(6 * MiB + 4321)  # above one 5 MiB part: multipart on S3
    src = tmp_path / "pack"
    src.write_bytes(data)
    k = key(system_id, "pack")
    await target.put_file(k, src, "none")
    for offset, length in [(0, 1), (17, 4096), (5 * MiB - 10, 20), (len(data) - 7, 7), (0, 0)]:
        assert await target.read_range(k, offset, length) == data[offset : offset + length]
    assert await target.read_range(k, 0, len(data)) == data
    assert await target.read_range(k, len(data), 0) == b""


@pytest.mark.parametrize("offset,length", [(4090, 10), (4096, 1), (10_000, 5), (10_000, 0)])
async def test_read_range_past_the_end(
    target: Target, tmp_path: Path, system_id: str, offset: int, length: int
) -> None:
    src = tmp_path / "short"
    src.write_bytes(b"x" * 4096)
    k = key(system_id, "short")
    await target.put_file(k, src, "none")
    with pytest.raises(PackError):
        await target.read_range(k, offset, length)


async def test_read_range_missing(target: Target, system_id: str) -> None:
    for length in (10, 0):
        with pytest.raises(KeyError):
            await target.read_range(key(system_id, "nope"), 0, length)


async def test_local_read_range_never_follows_a_link(tmp_path: Path, system_id: str) -> None:
    """A link planted where a pack is expected (or on its way) is a missing object."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"private bytes")
    target = LocalTarget(tmp_path / "outbox")
    await target.start()
    k = key(system_id, "pack")
    folder = tmp_path / "outbox" / Path(k).parent
    folder.mkdir(parents=True)
    (folder / "pack").symlink_to(secret)
    with pytest.raises(KeyError):
        await target.read_range(k, 0, 4)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "pack").write_bytes(b"0123456789")
    shutil.rmtree(tmp_path / "outbox" / "systems" / system_id / "uploads")
    (tmp_path / "outbox" / "systems" / system_id / "uploads").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KeyError):
        await target.read_range(f"systems/{system_id}/uploads/pack", 0, 4)


async def test_local_listing_names_a_fifo_as_it_names_a_link(
    tmp_path: Path, system_id: str
) -> None:
    """A FIFO (or socket, device) where an object is (an upload's manifest.json) is left
    out of a listing with the same warning as a link; before, it was left out silently: the
    newest upload vanished from ``uploads`` and ``restore --latest`` took an older one with
    nothing said."""
    from loguru import logger

    target = LocalTarget(tmp_path / "outbox")
    await target.start()
    folder = tmp_path / "outbox" / "systems" / system_id / "uploads" / "u1"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "manifest.json")
    (folder / "pack").write_bytes(b"x")
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), level="WARNING", format="{message}")
    try:
        keys = [k async for k in target.list_keys(f"systems/{system_id}/")]
    finally:
        logger.remove(sink)
    assert keys == [f"systems/{system_id}/uploads/u1/pack"]
    fifo = f"systems/{system_id}/uploads/u1/manifest.json"
    assert any(fifo in w and "not a regular entry: not listed" in w for w in warnings), warnings


async def test_list_and_delete(target: Target, tmp_path: Path, system_id: str) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    names = ["b", "a", "c/d"]
    for n in names:
        await target.put_file(key(system_id, n), src, "none")
    prefix = f"systems/{system_id}/uploads/u1/"
    assert [k async for k in target.list_keys(prefix)] == [prefix + n for n in sorted(names)]
    await target.delete_keys([prefix + "a", prefix + "c/d", prefix + "missing"])
    assert [k async for k in target.list_keys(prefix)] == [prefix + "b"]


async def test_system_ids_name_the_folders_under_systems(target: Target, system_id: str) -> None:
    """``system_ids`` (one listing) names every system id holding objects, sorted, and
    leaves out a folder whose name is no system id."""
    assert isinstance(target, ListsSystems)
    for sid in (system_id, f"{system_id}-b", "not.an.id"):
        await target.put_bytes(f"systems/{sid}/uploads/u1/manifest.json", b"{}", "application/json")
    ids = await target.system_ids(1000)  # (a shared bucket holds other tests' too)
    assert ids == sorted(ids)
    assert {system_id, f"{system_id}-b"} <= set(ids) and "not.an.id" not in ids
    assert len(await target.system_ids(1)) == 1


async def test_listing_with_sizes_and_stored_times(
    target: Target, tmp_path: Path, system_id: str
) -> None:
    """What a prune lists: every key with its stored size and its stored time, from one
    listing (a prune keeps what an unreadable upload may use by those times)."""
    assert isinstance(target, DatedLister)
    prefix = f"systems/{system_id}/uploads/u1/"
    src = tmp_path / "f"
    before = time.time()
    for name, size in (("b", 3), ("a", 0), ("c/d", 70_000)):
        src.write_bytes(os.urandom(size))
        await target.put_file(key(system_id, name), src, "none")
    after = time.time()
    listed = [item async for item in target.list_stored(prefix)]
    assert [(k, n) for k, n, _ in listed] == [(prefix + "a", 0), (prefix + "b", 3),
                                              (prefix + "c/d", 70_000)]  # fmt: skip
    assert [k async for k in target.list_keys(prefix)] == [k for k, _, _ in listed]
    for _, _, stored_at in listed:  # S3 dates to the second
        assert before - 2 <= stored_at <= after + 2
    assert [item async for item in target.list_stored(prefix + "none/")] == []


async def test_failed_put_leaves_no_object(target: Target, tmp_path: Path, system_id: str) -> None:
    k = key(system_id, "gone")
    with pytest.raises((FileNotFoundError, OSError)):
        await target.put_file(k, tmp_path / "does-not-exist", "gzip")
    assert await target.head(k) is None
    if isinstance(target, LocalTarget):
        assert not [p for p in target.root.rglob("*") if p.is_file()]


async def test_source_failing_mid_way_leaves_nothing(
    target: Target, tmp_path: Path, system_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fails 8 MiB into a 12 MiB file (S3: after a part went out): no object, and
    the multipart upload is aborted."""
    real = fileio.read_chunks

    def failing(fh: BinaryIO, chunk: int = fileio.CHUNK) -> Iterator[bytes]:
        sent = 0
        for piece in real(fh, chunk):
            if sent >= 8 * MiB:
                raise OSError(errno.EIO, "Input/output error")
            sent += len(piece)
            yield piece

    for module in (fileio, compress, s3mod, s3parts):
        if hasattr(module, "read_chunks"):
            monkeypatch.setattr(module, "read_chunks", failing)
    src = tmp_path / "failing.bin"
    src.write_bytes(os.urandom(12 * MiB))
    k = key(system_id, "failing.bin")
    with pytest.raises((OSError, TransientError)):  # local: a write that failed
        await target.put_file(k, src, "gzip")
    assert await target.head(k) is None
    assert [x async for x in target.list_keys(f"systems/{system_id}/")] == []
    if isinstance(target, LocalTarget):
        assert not [p for p in target.root.rglob("*") if p.is_file()]
    else:
        assert isinstance(target, S3Target)
        uploads = await target._call(
            lambda c: c.list_multipart_uploads(
                Bucket=target.bucket, Prefix=f"systems/{system_id}/"
            ),
            what="list uploads",
        )
        assert not uploads.get("Uploads")


async def test_local_temp_files_kept_by_a_reader_start(tmp_path: Path) -> None:
    """``start(clean_up=False)`` (verify, restore) leaves a writer's temp file alone."""
    from akoshad.targets.local import TMP_MARK

    root = tmp_path / "outbox"
    temp = root / "systems" / "s" / f"obj{TMP_MARK}1"
    temp.parent.mkdir(parents=True)
    temp.write_bytes(b"being written")
    await LocalTarget(root).start(clean_up=False)
    assert temp.exists()
    await LocalTarget(root).start()
    assert not temp.exists()


async def test_local_clean_up_leaves_other_systems_temp_files(tmp_path: Path) -> None:
    """Two system ids may share one outbox (as they share a bucket): the owner of one
    removes only the temp files under its own ``systems/{id}/``, never the files another
    system's daemon is writing at that moment (S3 aborts only its own prefix's uploads)."""
    from akoshad.config import load_settings
    from akoshad.targets import make_target
    from akoshad.targets.local import TMP_MARK

    root = tmp_path / "outbox"
    mine = root / "systems" / "a" / "packs" / f"p{TMP_MARK}1"
    other = root / "systems" / "ab" / "packs" / f"p{TMP_MARK}2"
    for temp in (mine, other):
        temp.parent.mkdir(parents=True)
        temp.write_bytes(b"being written")
    settings = load_settings(
        environ={"HOME": str(tmp_path)},
        overrides={"local_target_dir": str(root), "cloud_sync": {"system_id": "a"}},
    )
    target = make_target("local", settings)
    await target.start(clean_up=True)
    assert not mine.exists()
    assert other.read_bytes() == b"being written"


async def test_leftover_multipart_uploads_aborted_at_start(s3: WeedServer, system_id: str) -> None:
    c = s3.client()
    mine = c.create_multipart_upload(Bucket=s3.bucket, Key=f"systems/{system_id}/uploads/x/y")
    other = c.create_multipart_upload(Bucket=s3.bucket, Key=f"elsewhere/{system_id}/z")
    t = s3.s3_target(system_id)
    await t.start()
    await t.close()
    left = {u["UploadId"] for u in s3.multipart_uploads()}
    assert mine["UploadId"] not in left
    assert other["UploadId"] in left
    c.abort_multipart_upload(
        Bucket=s3.bucket, Key=f"elsewhere/{system_id}/z", UploadId=other["UploadId"]
    )
    assert shutil.which("gunzip")


@pytest.mark.parametrize("size", [0, 1000, 5 * 1024 * 1024 + 3])
async def test_put_object_file_stores_a_finished_file_whole(
    target: Target, tmp_path: Path, system_id: str, size: int
) -> None:
    """A pack goes up as it is, in one piece, with the CRC32 its writer computed."""
    src = tmp_path / "pack"
    data = os.urandom(size)
    src.write_bytes(data)
    k = key(system_id, f"pack-{size}")
    sent = await target.put_object_file(k, src, size, zlib.crc32(data))
    assert sent == size == await target.head(k)
    assert await read_all(target, k) == data


async def test_put_object_file_refuses_a_file_of_another_size(
    target: Target, tmp_path: Path, system_id: str
) -> None:
    src = tmp_path / "pack"
    src.write_bytes(b"x" * 100)
    k = key(system_id, "pack-wrong")
    with pytest.raises(TransientError):
        await target.put_object_file(k, src, 99, zlib.crc32(b"x" * 100))
    assert await target.head(k) is None


async def test_put_object_file_never_follows_a_link(
    target: Target, tmp_path: Path, system_id: str
) -> None:
    real = tmp_path / "real"
    real.write_bytes(b"secret")
    link = tmp_path / "pack"
    link.symlink_to(real)
    k = key(system_id, "pack-link")
    with pytest.raises(OSError):
        await target.put_object_file(k, link, 6, zlib.crc32(b"secret"))
    assert await target.head(k) is None


async def test_local_put_object_file_links_the_finished_file(
    tmp_path: Path, system_id: str
) -> None:
    """The local target stores a pack from staging as a hard link (no copy): the same
    bytes, fsynced, kept when staging deletes its name, no temporary file left."""
    t = LocalTarget(tmp_path / "outbox")
    await t.start()
    src = tmp_path / "pack"
    data = os.urandom(3 * MiB + 5)
    src.write_bytes(data)
    k = key(system_id, "pack-linked")
    assert await t.put_object_file(k, src, len(data), zlib.crc32(data)) == len(data)
    stored = tmp_path / "outbox" / k
    assert os.stat(stored).st_ino == os.stat(src).st_ino and os.stat(src).st_nlink == 2
    src.unlink()  # staging removes the pack once it landed
    assert await read_all(t, k) == data
    assert sorted(p.name for p in stored.parent.iterdir()) == ["pack-linked"]


def second_file_system(than: Path) -> Path:
    """/dev/shm when it is another file system than ``than`` (else the test is skipped)."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(than).st_dev:
        pytest.skip("no second file system at /dev/shm")
    return shm


async def test_local_put_object_file_copies_across_file_systems(
    tmp_path: Path, system_id: str
) -> None:
    """Staging on another file system (tmpfs here): the pack is copied, as before."""
    shm = second_file_system(tmp_path)
    t = LocalTarget(tmp_path / "outbox")
    await t.start()
    data = os.urandom(MiB + 7)
    src = shm / f"akoshad-test-pack-{os.getpid()}-{system_id}"
    src.write_bytes(data)
    try:
        k = key(system_id, "pack-copied")
        assert await t.put_object_file(k, src, len(data), zlib.crc32(data)) == len(data)
        assert os.stat(tmp_path / "outbox" / k).st_ino != os.stat(src).st_ino
        assert await read_all(t, k) == data
    finally:
        src.unlink()


async def test_create_exclusive_stores_only_when_the_key_is_free(
    target: Target, system_id: str
) -> None:
    """Every target akoshad ships stores an object only when its key is free (the owner
    record's claim relies on it): the first create wins, later ones change nothing."""
    assert isinstance(target, ExclusiveCreate)
    k = f"systems/{system_id}/owner.json"
    assert await target.create_exclusive(k, b'{"first": 1}', "application/json") == "created"
    assert await target.create_exclusive(k, b'{"second": 2}', "application/json") == "exists"
    assert await read_all(target, k) == b'{"first": 1}'
    assert [x async for x in target.list_keys(f"systems/{system_id}/")] == [k]
    await target.delete_keys([k])
    assert await target.create_exclusive(k, b'{"third": 3}', "application/json") == "created"
    assert await read_all(target, k) == b'{"third": 3}'
