"""Large plain files: captured where they lie, hashed while they are sent (when they cannot
be duplicates), checked unchanged afterwards. In process, on the local target."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

import akoshad.pipeline.capture.files as capture_files
import akoshad.pipeline.capture.plain as capture_plain
import akoshad.pipeline.capture.snapshot as snapshot
import akoshad.pipeline.drain as drain_module
from akoshad.errors import TransientError
from akoshad.manifest.facts import Facts
from akoshad.pipeline.capture.quiet import (
    MAX_WAIT_SECONDS,
    QUIET_SECONDS,
    QuietWatch,
    copy_watch,
)
from akoshad.pipeline.capture.snapshot import Captured, Snapshotter
from akoshad.pipeline.cloud_memories import StreamTo
from akoshad.pipeline.drain import Drain
from akoshad.pipeline.plan import stored_file
from akoshad.pipeline.report import PassReport
from akoshad.pipeline.routes import ExtraObject, MemoriesJson
from akoshad.pipeline.stats import Stats
from akoshad.pipeline.upload import Uploader
from akoshad.storage.chunker import Chunk
from akoshad.storage.fetch import fetch_file
from akoshad.store.db import StateDB
from akoshad.targets.base import Compression, StoredObject
from akoshad.targets.local import LocalTarget

MiB = 1024 * 1024
BIG = "big.bin"


@dataclass
class Rig:
    store: Path
    state: StateDB
    target: LocalTarget
    drain: Drain
    memories_json: MemoriesJson | None = None

    async def pass_of(self, *paths: str) -> PassReport:
        await self.state.enqueue([(p, "modified") for p in paths], now=time.time() - 60)
        report = await self.drain.drain_once(
            self.target, now=time.time() + 60, memories_json=self.memories_json
        )
        assert report is not None
        return report

    async def stored(self, path: str) -> tuple[str, bytes]:
        """The ledger's sha256 for ``path`` and the bytes its chunks hold (read back
        through the chunk table and the storage engine)."""
        entry = (await self.state.ledger(self.target.name))[path]
        f = stored_file(entry, await self.state.chunks_of(self.target.name))
        assert f is not None
        pieces: list[bytes] = []
        await fetch_file(self.target, f, pieces.append)
        return entry.sha256, b"".join(pieces)


@pytest.fixture
async def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setattr(snapshot, "IN_PLACE_MIN_BYTES", MiB)
    store = tmp_path / "store"
    store.mkdir()
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    target = LocalTarget(tmp_path / "outbox")
    await target.start()
    snapshotter = Snapshotter(store, tmp_path / "state" / "staging")
    stats = Stats()
    uploader = Uploader(
        state=state,
        snapshotter=snapshotter,
        system_id="test-system",
        stats=stats,
        staging_dir=tmp_path / "state" / "packs",
        enable_compression=False,
    )
    drain = Drain(
        state=state, snapshotter=snapshotter, uploader=uploader, stats=stats, local=target
    )
    yield Rig(store, state, target, drain)
    await target.close()
    await state.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_new_large_file_is_captured_unhashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshot, "IN_PLACE_MIN_BYTES", MiB)
    (tmp_path / BIG).write_bytes(os.urandom(2 * MiB))
    snap = Snapshotter(tmp_path, tmp_path / "staging")
    res = snap.capture(BIG)
    assert isinstance(res, Captured)
    (f,) = res.files
    assert f.in_place and f.staged == tmp_path / BIG and f.sha256 is None
    # a file of the size last uploaded may be a duplicate: hashed at capture
    same = snap.capture(BIG, hash_if_size=2 * MiB)
    assert isinstance(same, Captured)
    assert same.files[0].sha256 == sha((tmp_path / BIG).read_bytes())


async def test_hashed_while_sent_then_deduplicated(rig: Rig) -> None:
    data = os.urandom(3 * MiB + 5)
    (rig.store / BIG).write_bytes(data)
    first = await rig.pass_of(BIG)
    assert first.ok and first.files_uploaded == [BIG]
    assert await rig.stored(BIG) == (sha(data), data)

    os.utime(rig.store / BIG, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched only
    second = await rig.pass_of(BIG)
    assert second.ok and second.files_uploaded == [] and second.deduplicated == 1

    changed = os.urandom(len(data))  # same size, other bytes: hashed at capture, sent
    (rig.store / BIG).write_bytes(changed)
    third = await rig.pass_of(BIG)
    assert third.ok and third.files_uploaded == [BIG]
    assert await rig.stored(BIG) == (sha(changed), changed)

    grown = changed + b"more"  # another size: hashed while sent
    (rig.store / BIG).write_bytes(grown)
    fourth = await rig.pass_of(BIG)
    assert fourth.ok and fourth.files_uploaded == [BIG]
    assert await rig.stored(BIG) == (sha(grown), grown)


def read_hook(
    monkeypatch: pytest.MonkeyPatch,
    before: Callable[[Path], None] | None = None,
    after_first: Callable[[Path], None] | None = None,
) -> None:
    """The sender's chunker, with ``before`` run on the file before its first read and
    ``after_first`` once its first chunk was read (each once per test)."""
    real = capture_files.iter_file_chunks
    done: set[str] = set()

    def hooked(source: Path) -> Iterator[Chunk]:
        if before is not None and "before" not in done:
            done.add("before")
            before(source)
        for i, chunk in enumerate(real(source)):
            yield chunk
            if i == 0 and after_first is not None and "after" not in done:
                done.add("after")
                after_first(source)

    monkeypatch.setattr(capture_files, "iter_file_chunks", hooked)


def append(path: Path) -> None:
    with path.open("ab") as fh:
        fh.write(b"appended while it was being sent")


async def test_a_file_changed_while_sent_is_not_recorded(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    read_hook(monkeypatch, after_first=append)
    data = os.urandom(2 * MiB)
    (rig.store / BIG).write_bytes(data)
    failed = await rig.pass_of(BIG)
    assert failed.error is not None and "changed" in failed.error
    # the store's doing: the target is not marked failed (status would blame it)
    assert failed.source_changed and rig.drain.stats.target(rig.target.name).available
    assert BIG not in await rig.state.ledger(rig.target.name)
    [row] = await rig.state.queue_items()  # kept, retried ...
    assert row.path == BIG and row.next_attempt <= time.time()  # ... at once
    counters = rig.drain.stats.counters
    assert (counters.failures, counters.retries) == (0, 1)  # sent again, not a failure

    retried = await rig.drain.drain_once(rig.target, now=time.time() + 3600)
    assert retried is not None and retried.ok and retried.files_uploaded == [BIG]
    now = (rig.store / BIG).read_bytes()
    assert await rig.stored(BIG) == (sha(now), now)


async def test_a_drain_goes_on_after_a_file_changed_while_sent(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run --once`` and ``sync --wait`` drain until empty: the pass a store file's change
    stopped is followed by another, whose upload decides (ok), not reported as a failure."""
    read_hook(monkeypatch, after_first=append)
    (rig.store / BIG).write_bytes(os.urandom(2 * MiB))
    await rig.state.enqueue([(BIG, "modified")], now=time.time() - 60)
    ok, reports = await rig.drain.until_empty()
    assert [r.source_changed for r in reports] == [True, False], reports
    assert ok and reports[-1].files_uploaded == [BIG]
    now = (rig.store / BIG).read_bytes()
    assert await rig.stored(BIG) == (sha(now), now)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Writer:
    """A writer appending to the live ``big.bin`` whenever it is read: while its upload
    chunks it in place, and while it is copied into staging (while ``on``)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, live: Path) -> None:
        self.on = True
        real_chunks, real_copy = capture_files.iter_file_chunks, capture_plain.copy_hashing

        def chunks(source: Path) -> Iterator[Chunk]:
            for i, chunk in enumerate(real_chunks(source)):
                yield chunk
                if i == 0 and self.on and Path(source) == live:
                    append(live)

        def copy(src: Path, dst: Path) -> tuple[int, str]:
            got = real_copy(src, dst)
            if self.on and Path(src) == live:
                append(live)
            return got

        monkeypatch.setattr(capture_files, "iter_file_chunks", chunks)
        monkeypatch.setattr(capture_plain, "copy_hashing", copy)


async def test_a_large_file_written_all_the_time_never_holds_back_the_others(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its in-place upload fails once; from then on it is copied into staging, and while
    it keeps changing there it waits (its last version kept) and the others go up."""
    rig.drain.snap.sleep = lambda _s: None
    clock = Clock()
    rig.drain.snap.copy_kept_changing = copy_watch(clock)
    live = rig.store / BIG
    first = os.urandom(2 * MiB)
    live.write_bytes(first)
    assert (await rig.pass_of(BIG)).ok

    writer = Writer(monkeypatch, live)
    live.write_bytes(os.urandom(2 * MiB))
    (rig.store / "small.json").write_bytes(b'{"kept": "waiting"}')
    failed = await rig.pass_of(BIG, "small.json")
    assert failed.source_changed and "changed while it was being uploaded" in (failed.error or "")

    for _ in range(2):  # every pass after it: the others land, big.bin waits
        later = await rig.drain.drain_once(rig.target, now=time.time() + 3600)
        assert later is not None
        assert later.error is None, later.error
        assert BIG in later.retrying and "kept changing" in later.retrying[BIG]
        ledger = await rig.state.ledger(rig.target.name)
        assert "small.json" in ledger and ledger[BIG].sha256 == sha(first)  # its last version
        assert BIG in {i.path for i in await rig.state.queue_items()}
        (rig.store / "small.json").write_bytes(os.urandom(8).hex().encode())
        await rig.state.enqueue([("small.json", "modified")], now=time.time() - 60)

    writer.on = False  # quiet again (for a minute): its copy lands
    clock.now += QUIET_SECONDS + 1
    quiet = await rig.drain.drain_once(rig.target, now=time.time() + 7200)
    assert quiet is not None and quiet.ok and BIG in quiet.files_uploaded
    now = live.read_bytes()
    assert await rig.stored(BIG) == (sha(now), now)
    (f,) = [f for c in quiet.captures for f in c.files if f.path == BIG]
    assert not f.in_place
    live.write_bytes(os.urandom(2 * MiB))  # and read in place again after that
    again = await rig.pass_of(BIG)
    assert again.ok and [f.in_place for c in again.captures for f in c.files] == [True]


async def _moved_while_sent(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> tuple[Writer, Clock]:
    """big.bin uploaded once, then changed while its next upload read it in place: its
    next capture is a copy into staging. The writer is left off; the no-room watch runs on
    a clock the test moves."""
    rig.drain.snap.sleep = lambda _s: None
    clock = Clock()
    rig.drain.snap.no_room = QuietWatch(clock)
    live = rig.store / BIG
    live.write_bytes(os.urandom(2 * MiB))
    assert (await rig.pass_of(BIG)).ok
    writer = Writer(monkeypatch, live)
    live.write_bytes(os.urandom(2 * MiB))
    failed = await rig.pass_of(BIG)
    assert failed.source_changed
    writer.on = False
    return writer, clock


def _staging_full(monkeypatch: pytest.MonkeyPatch) -> None:
    full = SimpleNamespace(total=10 * 2**30, used=10 * 2**30 - MiB, free=MiB)
    monkeypatch.setattr(capture_plain.shutil, "disk_usage", lambda _p: full)


def _count_copies(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The sources of every copy into staging from now on, in order."""
    copies: list[Path] = []
    real_copy = capture_plain.copy_hashing

    def counted(src: Path, dst: Path) -> tuple[int, str]:
        copies.append(Path(src))
        return real_copy(src, dst)

    monkeypatch.setattr(capture_plain, "copy_hashing", counted)
    return copies


async def _pass(rig: Rig, hours: float) -> PassReport:
    report = await rig.drain.drain_once(rig.target, now=time.time() + 3600 * hours)
    assert report is not None
    return report


async def _copy_kept_changing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> tuple[Writer, Clock, list[Path]]:
    """big.bin moved while sent in place, then its copy kept changing (the writer appends
    after every copy): the copies' watch runs on a clock the test moves; returns the
    writer (still on), the clock and the copies made so far (one round)."""
    clock = Clock()
    rig.drain.snap.copy_kept_changing = copy_watch(clock)
    writer, _ = await _moved_while_sent(rig, monkeypatch)
    copies = _count_copies(monkeypatch)
    writer.on = True
    first = await _pass(rig, 1)
    assert "kept changing during" in first.retrying.get(BIG, ""), first.retrying
    assert len(copies) == rig.drain.snap.attempts
    return writer, clock, copies


async def test_a_copy_that_kept_changing_is_not_begun_again_while_the_file_is_written(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every copy of a large file is a full read and write of it: one that kept changing
    is not begun again while each look finds the file changed since the look before (the
    others go up), for an hour at most: a file written all the time costs one round of
    copies an hour, not one at every retry. A look that finds it unchanged since the one
    before copies it, and it lands."""
    writer, clock, copies = await _copy_kept_changing(rig, monkeypatch)
    live = rig.store / BIG
    for hours in (2, 3):
        append(live)  # written between the looks
        clock.now += QUIET_SECONDS + 1
        waiting = await _pass(rig, hours)
        assert "copied again once it is found unchanged" in waiting.retrying.get(BIG, "")
        assert len(copies) == rig.drain.snap.attempts  # no copy begun
    append(live)
    clock.now += MAX_WAIT_SECONDS  # an hour of waiting: one more round of copies
    again = await _pass(rig, 4)
    assert "kept changing during" in again.retrying.get(BIG, ""), again.retrying
    assert len(copies) == 2 * rig.drain.snap.attempts
    writer.on = False
    clock.now += 1  # unchanged since the look before (a second ago): copied, and lands
    landed = await _pass(rig, 5)
    assert landed.ok and BIG in landed.files_uploaded
    assert [f.in_place for c in landed.captures for f in c.files if f.path == BIG] == [False]
    now = live.read_bytes()
    assert await rig.stored(BIG) == (sha(now), now)


async def test_a_new_file_by_the_name_is_copied_at_once(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file saved by a rename (a new inode) at every write never looks unchanged; its
    copy is not held back: a new file is copied at the next look."""
    writer, _clock, copies = await _copy_kept_changing(rig, monkeypatch)
    writer.on = False
    live = rig.store / BIG
    fresh = live.with_name("big.tmp")
    fresh.write_bytes(os.urandom(2 * MiB))
    fresh.rename(live)
    landed = await _pass(rig, 2)
    assert landed.ok and BIG in landed.files_uploaded
    assert len(copies) == rig.drain.snap.attempts + 1
    now = live.read_bytes()
    assert await rig.stored(BIG) == (sha(now), now)


async def test_a_large_file_is_read_in_place_when_staging_has_no_room_for_its_copy(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy that follows a failed in-place upload is not begun when staging's disk
    has no room for it: the file waits until it has been left alone for a minute (as this
    process counts time: its mtime, here ten years ahead, does not hold it back), then it
    is read where it lies, and lands."""
    _, clock = await _moved_while_sent(rig, monkeypatch)
    ahead = time.time() + 10 * 365 * 86400
    os.utime(rig.store / BIG, (ahead, ahead))
    copies = _count_copies(monkeypatch)
    _staging_full(monkeypatch)
    waiting = await _pass(rig, 1)
    assert "no room to stage a copy" in waiting.retrying.get(BIG, ""), waiting.retrying
    clock.now += QUIET_SECONDS + 1
    landed = await _pass(rig, 2)
    assert landed.ok and BIG in landed.files_uploaded
    assert [f.in_place for c in landed.captures for f in c.files if f.path == BIG] == [True]
    assert rig.store / BIG not in copies
    now = (rig.store / BIG).read_bytes()
    assert await rig.stored(BIG) == (sha(now), now)


async def test_room_that_comes_back_is_used_for_the_copy(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No room for the copy at one look (another large file's copy in staging at that
    moment, say), room again at the next: the file is copied then, not left waiting for a
    quiet moment (a file written all the time would wait its hour)."""
    _, _clock = await _moved_while_sent(rig, monkeypatch)
    full = SimpleNamespace(total=10 * 2**30, used=10 * 2**30 - MiB, free=MiB)
    roomy = SimpleNamespace(total=10 * 2**30, used=0, free=10 * 2**30)
    answers = [full]
    monkeypatch.setattr(
        capture_plain.shutil, "disk_usage", lambda _p: answers[0] if answers else roomy
    )
    append(rig.store / BIG)
    waiting = await _pass(rig, 1)
    assert "no room to stage a copy" in waiting.retrying.get(BIG, ""), waiting.retrying
    answers.clear()
    append(rig.store / BIG)
    landed = await _pass(rig, 2)
    assert landed.ok and BIG in landed.files_uploaded
    assert [f.in_place for c in landed.captures for f in c.files if f.path == BIG] == [False]


async def test_a_large_file_still_written_with_no_room_for_a_copy_holds_back_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No room in staging for its copy, and the file is still being written: it is not read
    in place (it would move again and fail the whole upload, pass after pass), it waits
    with the reason, and the other files go up; once it has been left alone, it lands."""
    _, clock = await _moved_while_sent(rig, monkeypatch)
    _staging_full(monkeypatch)
    for n in range(3):
        append(rig.store / BIG)  # written between the passes
        clock.now += QUIET_SECONDS + 1
        (rig.store / "small.json").write_bytes(f'{{"n": {n}}}'.encode())
        await rig.state.enqueue([("small.json", "modified")], now=time.time() - 60)
        later = await _pass(rig, n + 1)
        assert later.error is None, later.error
        assert "no room to stage a copy" in later.retrying.get(BIG, ""), later.retrying
        assert "small.json" in later.files_uploaded
    clock.now += QUIET_SECONDS + 1  # left alone since the last pass
    landed = await _pass(rig, 5)
    assert landed.ok and BIG in landed.files_uploaded
    now = (rig.store / BIG).read_bytes()
    assert await rig.stored(BIG) == (sha(now), now)


async def test_a_large_file_never_left_alone_is_read_in_place_after_an_hour(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written between every two passes, and no room for a copy: it is not kept from its
    backup for ever; after an hour of waiting it is read where it lies all the same."""
    _, clock = await _moved_while_sent(rig, monkeypatch)
    _staging_full(monkeypatch)
    append(rig.store / BIG)
    assert BIG in (await _pass(rig, 1)).retrying
    append(rig.store / BIG)
    clock.now += MAX_WAIT_SECONDS + 1
    landed = await _pass(rig, 2)
    assert landed.ok and BIG in landed.files_uploaded


async def test_a_copy_that_meets_a_full_disk_is_not_tried_again(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy into staging that runs out of space (a quota the free space does not show,
    or two copies at once) fails that pass with a reason naming staging (not a read error
    of the store file); no copy is tried again, the file waits until it has been left
    alone, and is then read where it lies: a full staging disk neither keeps a large file
    from its backup nor fails the others."""
    _, clock = await _moved_while_sent(rig, monkeypatch)
    tried: list[Path] = []

    def no_room(src: Path, dst: Path) -> tuple[int, str]:
        tried.append(Path(src))
        raise OSError(errno.EDQUOT, "Disk quota exceeded")

    monkeypatch.setattr(capture_plain, "copy_hashing", no_room)
    refused = await _pass(rig, 1)
    assert "no room to stage a copy in" in refused.retrying.get(BIG, ""), refused.retrying
    assert refused.error is None
    waiting = await _pass(rig, 2)
    assert "no room to stage a copy" in waiting.retrying.get(BIG, ""), waiting.retrying
    assert len(tried) == 1  # not copied again
    clock.now += QUIET_SECONDS + 1
    landed = await _pass(rig, 3)
    assert landed.ok and BIG in landed.files_uploaded
    assert [f.in_place for c in landed.captures for f in c.files if f.path == BIG] == [True]


def flip_first_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))


async def test_bytes_sent_must_be_the_bytes_captured(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small file is hashed at capture (its staged copy) and again as it is chunked to
    be sent: a difference fails the upload, nothing is recorded, the next pass succeeds."""
    rig.drain.snap.memory_max_file = 0  # staged, not held in memory
    read_hook(monkeypatch, before=flip_first_byte)
    data = b'{"small": true}'
    (rig.store / "small.json").write_bytes(data)
    failed = await rig.pass_of("small.json")
    assert failed.error is not None and "between its capture and its upload" in failed.error
    assert failed.source_changed and rig.drain.stats.degraded_reason() is None
    assert "small.json" not in await rig.state.ledger(rig.target.name)
    retried = await rig.drain.drain_once(rig.target, now=time.time() + 3600)
    assert retried is not None and retried.ok
    assert await rig.stored("small.json") == (sha(data), data)


class RendezvousTarget(LocalTarget):
    """A put that waits until the extras hook has started (and tells it that it began)."""

    def __init__(self, root: Path, put_started: asyncio.Event, hook_started: asyncio.Event):
        super().__init__(root)
        self.put_started, self.hook_started = put_started, hook_started
        self.fail = False

    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        self.put_started.set()
        await asyncio.wait_for(self.hook_started.wait(), 5)
        if self.fail:
            raise TransientError("the target went away")
        return await super().put_file(key, source, compression)

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        self.put_started.set()
        await asyncio.wait_for(self.hook_started.wait(), 5)
        if self.fail:
            raise TransientError("the target went away")
        return await super().put_object_file(key, source, size, crc32)


async def test_extra_objects_are_made_while_files_are_sent(rig: Rig, tmp_path: Path) -> None:
    """memories.json is built during the file uploads (each waits for the other here), is
    stored with the upload, and its callbacks say whether the upload landed."""
    put_started, hook_started = asyncio.Event(), asyncio.Event()
    target = RendezvousTarget(tmp_path / "outbox", put_started, hook_started)
    rig.target = target
    events: list[str] = []

    class Builder(MemoriesJson):
        def __init__(self) -> None:  # no MemorySync: the objects are made here
            pass

        async def build(
            self, captures: Sequence[Captured], upload_id: str, stream: StreamTo | None = None
        ) -> list[ExtraObject]:
            assert stream is None  # a local target: built whole, then sent
            hook_started.set()
            await asyncio.wait_for(put_started.wait(), 5)
            made = tmp_path / "memories.json"
            made.write_bytes(b'{"conversations":[]}')
            return [ExtraObject("memories.json", made)]

        async def committed(self, upload_id: str) -> None:
            events.append(f"committed {upload_id}")

        def failed(self, upload_id: str) -> None:
            events.append(f"failed {upload_id}")

    rig.memories_json = Builder()
    (rig.store / "a.json").write_bytes(b"{}")
    target.fail = True
    failed = await rig.pass_of("a.json")
    assert failed.error == "the target went away"
    assert events == [f"failed {failed.upload_id}"]
    target.fail = False
    put_started.clear()
    hook_started.clear()
    ok = await rig.drain.drain_once(
        rig.target, now=time.time() + 3600, memories_json=rig.memories_json
    )
    assert ok is not None and ok.ok and ok.files_uploaded == ["a.json"]
    assert events[-1] == f"committed {ok.upload_id}"
    key = f"systems/test-system/uploads/{ok.upload_id}/memories.json"
    assert b"".join([c async for c in rig.target.read(key)]) == b'{"conversations":[]}'


async def test_small_files_held_in_memory_are_sent_and_released(rig: Rig) -> None:
    """Small files are captured into memory (nothing staged on disk), sent in runs, stored
    byte for byte with their facts, and their bytes are released when the pass ends."""
    contents = {f"s/{i:03d}/state.json": b'{"n": %d}' % i for i in range(300)}
    contents["s/torn.json"] = b'{"n": '
    contents["s/empty.bin"] = b""
    for rel, data in contents.items():
        (rig.store / rel).parent.mkdir(parents=True, exist_ok=True)
        (rig.store / rel).write_bytes(data)
    report = await rig.pass_of(*contents)
    assert report.ok and sorted(report.files_uploaded) == sorted(contents)
    held = [f for c in report.captures for f in c.files]
    assert len(held) == len(contents) and all(f.held is not None for f in held)
    assert all(f.held is not None and f.held.data is None for f in held)  # released
    assert rig.drain.snap.memory.used == 0
    ledger = await rig.state.ledger(rig.target.name)
    for rel in ("s/000/state.json", "s/299/state.json", "s/torn.json", "s/empty.bin"):
        assert await rig.stored(rel) == (sha(contents[rel]), contents[rel])
    assert Facts.from_json(ledger["s/torn.json"].facts) == Facts(json_ok=False)
    assert Facts.from_json(ledger["s/007/state.json"].facts) == Facts(json_ok=True)


async def test_a_large_pass_gives_its_freed_memory_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    trims: list[int] = []
    monkeypatch.setattr(drain_module, "trim", lambda: trims.append(1) or True)  # type: ignore[func-returns-value]
    monkeypatch.setattr(drain_module, "TRIM_THRESHOLD", 2 * MiB)
    (rig.store / "small.txt").write_bytes(b"a few bytes")
    small = await rig.pass_of("small.txt")
    assert small.ok and small.bytes_sent < 2 * MiB
    assert trims == []  # a small pass frees little: no call
    (rig.store / BIG).write_bytes(os.urandom(3 * MiB))
    large = await rig.pass_of(BIG)
    assert large.ok and large.bytes_sent >= 3 * MiB
    assert trims == [1]
