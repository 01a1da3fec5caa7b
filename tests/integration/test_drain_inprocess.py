"""The drain and the reconcile in-process: a local target, an injected clock, drained in
burst style (every due entry, pass after pass, until nothing is due), beside the
subprocess tests of the same pipeline."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from akoshad.compress import Compression
from akoshad.errors import TransientError
from akoshad.fileio import LiveStat
from akoshad.pipeline.capture.snapshot import Snapshotter
from akoshad.pipeline.drain import Drain
from akoshad.pipeline.feed import ChangeFeed
from akoshad.pipeline.report import PassReport
from akoshad.pipeline.stats import Stats
from akoshad.pipeline.storefiles import PathFilter
from akoshad.pipeline.upload import Uploader
from akoshad.pipeline.watch import StoreWatcher
from akoshad.store.db import LedgerEntry, StateDB
from akoshad.targets.base import StoredObject
from akoshad.targets.local import LocalTarget
from tests.f2_rig import rig_settings

SYSTEM = "inproc"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class FlakyTarget(LocalTarget):
    """Fails the next ``failures`` puts as an outage would."""

    failures = 0

    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        if self.failures:
            self.failures -= 1
            raise TransientError("the outbox is away")
        return await super().put_file(key, source, compression)

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        if self.failures:
            self.failures -= 1
            raise TransientError("the outbox is away")
        return await super().put_object_file(key, source, size, crc32)


@dataclass
class Rig:
    store: Path
    outbox: Path
    state: StateDB
    target: FlakyTarget
    feed: ChangeFeed
    drain: Drain
    clock: Clock

    def uploads(self) -> list[str]:
        root = self.outbox / "systems" / SYSTEM / "uploads"
        return [p.parent.name for p in sorted(root.glob("*/manifest.json"))]

    def manifests(self) -> list[dict[str, object]]:
        root = self.outbox / "systems" / SYSTEM / "uploads"
        return [json.loads(p.read_text()) for p in sorted(root.glob("*/manifest.json"))]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings = rig_settings(tmp_path, SYSTEM)
    store = tmp_path / "store"
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    target = FlakyTarget(tmp_path / "outbox")
    await target.start()
    stats = Stats()
    snapshotter = Snapshotter(store, tmp_path / "state" / "staging")
    uploader = Uploader(
        state=state,
        snapshotter=snapshotter,
        system_id=SYSTEM,
        stats=stats,
        staging_dir=tmp_path / "state" / "packs",
        retry_backoff_seconds=1,
    )
    clock = Clock()
    drain = Drain(
        state=state,
        snapshotter=snapshotter,
        uploader=uploader,
        stats=stats,
        local=target,
        retry_backoff=1,
        clock=clock,
    )
    feed = ChangeFeed(settings, state, target, stats)
    yield Rig(store, tmp_path / "outbox", state, target, feed, drain, clock)
    await target.close()
    await state.close()


def write(rig: Rig, name: str, text: str) -> None:
    path = rig.store / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


async def test_a_burst_drains_everything_queued_in_one_upload(rig: Rig) -> None:
    for i in range(5):
        write(rig, f"notes/n{i}.json", json.dumps({"i": i}))
    assert await rig.feed.reconcile() == 5
    ok, reports = await rig.drain.until_empty()
    assert ok and len(reports) == 1
    (report,) = reports
    assert report.upload_id and sorted(report.files_uploaded) == [
        f"notes/n{i}.json" for i in range(5)
    ]
    assert await rig.state.queue_depth() == 0
    assert rig.uploads() == [report.upload_id]
    assert await rig.drain.until_empty() == (True, [])  # nothing due: no pass, no upload


async def test_reconcile_queues_only_what_changed(rig: Rig) -> None:
    write(rig, "a.json", "{}")
    write(rig, "b.json", "{}")
    await rig.feed.reconcile()
    await rig.drain.until_empty()
    assert await rig.feed.reconcile() == 0  # the ledger knows both
    write(rig, "b.json", '{"changed": true}')
    assert await rig.feed.reconcile() == 1
    ok, (report,) = await rig.drain.until_empty()
    assert ok and report.files_uploaded == ["b.json"] and report.deduplicated == 1


async def test_a_failed_pass_waits_for_its_backoff_on_the_clock(rig: Rig) -> None:
    write(rig, "a.json", "{}")
    await rig.feed.reconcile()
    rig.target.failures = 1
    failed = await rig.drain.run_pass()
    assert isinstance(failed, PassReport) and failed.error == "the outbox is away"
    assert rig.manifests() == [] and await rig.state.queue_depth() == 1
    assert await rig.drain.run_pass() is None  # not due yet on the injected clock
    rig.clock.now += 3600  # well past the backoff
    ok, (report,) = await rig.drain.until_empty()
    assert ok and report.files_uploaded == ["a.json"]
    assert await rig.state.queue_depth() == 0 and len(rig.manifests()) == 1


async def test_a_deleted_file_leaves_the_next_upload(rig: Rig) -> None:
    write(rig, "a.json", "{}")
    write(rig, "b.json", "{}")
    await rig.feed.reconcile()
    await rig.drain.until_empty()
    (rig.store / "a.json").unlink()
    assert await rig.feed.reconcile() == 1
    ok, (report,) = await rig.drain.until_empty()
    assert ok and report.deleted == ["a.json"] and report.files_uploaded == []
    files = rig.manifests()[-1]["metadata"]["files"]  # type: ignore[index]
    assert [f["path"] for f in files] == ["b.json"]


async def test_many_small_files_are_captured_in_one_lane_in_order(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass of many paths: the small files in one thread at a time (two would only fight
    over the GIL), a file last uploaded large in a lane of its own beside them; the
    results come back in the paths' order. A few paths still go two at a time."""
    paths = [f"s/{i:03d}.json" for i in range(300)]
    for p in paths:
        write(rig, p, "{}")
    write(rig, "big.bin", "x")
    real = Snapshotter.capture
    busy: list[str] = []
    most = 0

    def capture(snap: Snapshotter, rel: str, hash_if_size: int | None = None) -> Any:
        nonlocal most
        busy.append(rel)
        most = max(most, len([b for b in busy if not b.startswith("big")]))
        try:
            time.sleep(0.05 if rel == "big.bin" else 0)
            return real(snap, rel, hash_if_size)
        finally:
            busy.remove(rel)

    monkeypatch.setattr(Snapshotter, "capture", capture)
    big = LedgerEntry(
        target="local", path="big.bin", group_path="big.bin", size=64 << 20,
        live=LiveStat(1, 1, 1, 1), sha256="0" * 64, key="", name="", stored_size=1,
        compression="none", kind="file", upload_id="u",
    )  # fmt: skip
    order = [*paths[:150], "big.bin", *paths[150:]]
    results = await rig.drain.capture_all(order, {"big.bin": big})
    assert [r.group for r in results] == order
    assert most == 1  # the small files one at a time, while the large one was captured
    busy.clear()
    few = await rig.drain.capture_all(paths[:100])
    assert [r.group for r in few] == paths[:100]


async def _watch_until(rig: Rig, watcher: StoreWatcher, first_reset_done: bool, path: str) -> bool:
    """Run ``watcher`` until ``path`` waits in the feed's debouncer (or 6 s went by)."""
    task = asyncio.create_task(watcher.run(first_reset_done=first_reset_done))
    try:
        for _ in range(120):
            if path in rig.feed.debouncer.paths():
                return True
            await asyncio.sleep(0.05)
        return False
    finally:
        watcher.stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_write_between_the_reset_walk_and_the_watch_is_seen(rig: Rig) -> None:
    """The store is reconciled when the watch (re)starts; a file written right after that
    walk, before the watch took over, must still reach the queue."""
    write(rig, "a.json", "1")

    async def reconcile_then_write() -> None:
        await rig.feed.reconcile()
        write(rig, "late.json", "2")  # after the walk

    watcher = StoreWatcher(
        rig.store, rig.feed.flt, rig.feed.on_change, reconcile_then_write, asyncio.Event()
    )
    assert await _watch_until(rig, watcher, False, "late.json")


async def test_a_write_between_the_startup_reconcile_and_the_watch_is_seen(rig: Rig) -> None:
    """The daemon reconciles at start, then begins to watch: what is written in between
    (created, rewritten in place, or removed) reaches the queue once the watch is up."""
    write(rig, "kept.json", "1")
    write(rig, "gone.json", "1")
    await rig.feed.reconcile()
    await rig.drain.until_empty()
    rig.feed.keep_stats = True  # as the daemon sets it
    assert await rig.feed.reconcile() == 0
    write(rig, "late.json", "2")
    (rig.store / "kept.json").write_text("2")
    (rig.store / "gone.json").unlink()
    watcher = StoreWatcher(
        rig.store,
        rig.feed.flt,
        rig.feed.on_change,
        rig.feed.reconcile,
        asyncio.Event(),
        on_watching=rig.feed.catch_up,
    )
    assert await _watch_until(rig, watcher, True, "late.json")
    assert rig.feed.debouncer.paths() == ["gone.json", "kept.json", "late.json"]


async def test_files_in_a_new_directory_reach_the_queue_under_an_include(rig: Rig) -> None:
    """A directory made and filled at once: inotify reports only the directory (its files
    were written before the watch on it was added). With ``include`` naming files, the
    directory itself matches no pattern: its files must still be found and queued."""
    rig.feed.flt = PathFilter.of(["*.json"], [])
    stop = asyncio.Event()
    watcher = StoreWatcher(rig.store, rig.feed.flt, rig.feed.on_change, rig.feed.reconcile, stop)
    task = asyncio.create_task(watcher.run(first_reset_done=True))
    try:
        for _ in range(100):  # the watch is up once it has answered (a timeout, at most 1 s)
            if watcher.watching:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)
        for i in range(10):
            write(rig, f"sessions/s{i}/state.json", json.dumps({"i": i}))
            write(rig, f"sessions/s{i}/notes.txt", "not included")
        await asyncio.sleep(1.5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    await rig.feed.flush()
    queued = sorted(i.path for i in await rig.state.queue_items())
    assert queued == [f"sessions/s{i}/state.json" for i in range(10)]


def write_raw(path: bytes, data: bytes) -> None:
    Path(os.fsdecode(path)).write_bytes(data)


async def test_a_skip_whose_file_is_gone_is_forgotten_by_the_reconcile(rig: Rig) -> None:
    """A skipped file removed (or renamed) while nobody watched leaves no event: the
    reconcile forgets its skip, else status, every manifest's ``metadata.skipped`` and the
    exit of every ``run --once`` would report it forever. A refusal the walk still finds
    stays."""
    bad = os.fsencode(str(rig.store)) + b"/caf\xe9.json"
    write_raw(bad, b"{}")
    (rig.store / "out.json").symlink_to("/etc/hostname")
    await rig.feed.reconcile()
    # a capture skipped it, then it was removed while the daemon was down
    await rig.state.transaction(
        lambda c: rig.state.record_skipped(c, {"gone.json": "permission denied"})
    )
    assert sorted(await rig.state.skipped()) == ["caf\ufffd.json", "gone.json", "out.json"]
    os.unlink(bad)
    await rig.feed.reconcile()
    assert sorted(await rig.state.skipped()) == ["out.json"]


async def test_a_skip_below_a_linked_directory_is_forgotten_by_the_reconcile(
    rig: Rig, tmp_path: Path
) -> None:
    """The watch named events through a link to a directory out of data_dir (its own log
    file there), whose captures were recorded as skips: status listed them (UNSAFE) after
    every restart. The walk never enters a linked directory: the reconcile forgets such
    skips, and the link's own refusal stays."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "d.log").write_text("log")
    (rig.store / "out").symlink_to(tmp_path / "outside")
    write(rig, "a.json", "{}")
    await rig.state.transaction(
        lambda c: rig.state.record_skipped(c, {"out/d.log": "symlink points outside data_dir"})
    )
    await rig.feed.reconcile()
    assert await rig.state.skipped() == {"out": "symlink points outside data_dir"}


async def test_a_directory_listed_again_loses_its_skip(rig: Rig) -> None:
    write(rig, "sub/a.json", "{}")
    await rig.state.transaction(
        lambda c: rig.state.record_skipped(c, {"sub": "cannot list the directory: denied"})
    )
    await rig.feed.reconcile()
    assert await rig.state.skipped() == {}


async def test_the_periodic_rescan_queues_what_no_event_reported(rig: Rig) -> None:
    """A change the watcher never reported (a full inotify queue drops events without a
    path) reaches the queue at the next rescan; a rescan that finds nothing queues nothing."""
    write(rig, "a.json", "1")
    await rig.feed.reconcile()
    await rig.drain.until_empty()
    stop = asyncio.Event()
    task = asyncio.create_task(rig.feed.rescan_every(0.2, stop))
    try:
        await asyncio.sleep(0.5)
        assert await rig.state.queue_depth() == 0  # nothing changed: nothing queued
        write(rig, "missed.json", "2")  # no watcher runs: no event
        for _ in range(40):
            if await rig.state.queue_depth():
                break
            await asyncio.sleep(0.05)
        assert [i.path for i in await rig.state.queue_items()] == ["missed.json"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert task.done() and task.exception() is None


async def test_an_entry_that_is_no_file_is_said_once_never_skipped(rig: Rig) -> None:
    """A FIFO in the store is not backed up (it is never opened: reading one blocks) and
    is no skip, but a reconcile says so once, not at every rescan; said again once it
    was gone."""
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    try:
        write(rig, "a.json", "{}")
        os.mkfifo(rig.store / "pipe")
        assert await rig.feed.reconcile() == 1
        ok, (report,) = await rig.drain.until_empty()
        assert ok and report.files_uploaded == ["a.json"]
        assert await rig.feed.reconcile() == 0
        said = [line for line in lines if "pipe" in line]
        assert said == ["not syncing pipe: a FIFO, not a file to back up"]
        assert await rig.state.skipped() == {}
        (rig.store / "pipe").unlink()
        await rig.feed.reconcile()
        os.mkfifo(rig.store / "pipe")
        await rig.feed.reconcile()
        assert len([line for line in lines if "pipe" in line]) == 2
    finally:
        logger.remove(sink)


async def test_a_file_hard_linked_from_outside_is_backed_up_and_said_once(
    rig: Rig, tmp_path: Path
) -> None:
    """A store file with another name outside data_dir (a hard link) is backed up as the
    store file it is (never skipped), and a reconcile says once that a write through the
    other name reaches no watch."""
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    try:
        write(rig, "a.json", "{}")
        os.link(rig.store / "a.json", tmp_path / "elsewhere.json")
        assert await rig.feed.reconcile() == 1
        ok, (report,) = await rig.drain.until_empty()
        assert ok and report.files_uploaded == ["a.json"]
        await rig.feed.reconcile()
        said = [line for line in lines if "a.json" in line]
        assert said == [
            "a.json has 1 other name(s) outside data_dir (a hard link): it is backed up, "
            "but a write through that name is seen only at the next rescan (hourly)"
        ]
        assert await rig.state.skipped() == {}
    finally:
        logger.remove(sink)


async def test_many_deletions_at_once_reach_the_queue_in_proportion(rig: Rig) -> None:
    """15,000 files removed together (a directory of session files deleted): their
    deletions are queued in seconds, not by looking up each one's files below it across
    the whole ledger (225 million comparisons, minutes of the event loop held)."""
    many = rig.store / "many"
    many.mkdir()
    (rig.store / "kept.json").write_bytes(b"{}")  # a store left with no file queues none
    for i in range(15_000):
        (many / f"m{i}.json").write_bytes(b"{}")
    await rig.feed.reconcile()
    ok, _ = await rig.drain.until_empty()
    assert ok
    for child in many.iterdir():
        child.unlink()
    many.rmdir()
    rig.feed.on_change((f"many/m{i}.json", "deleted") for i in range(15_000))
    began = time.monotonic()
    await rig.feed.flush()
    assert time.monotonic() - began < 10
    assert await rig.state.queue_depth() == 15_000


async def test_a_refusal_found_walk_after_walk_is_logged_once(rig: Rig, tmp_path: Path) -> None:
    """A store walked again and again (every 30 s while its watch cannot start) says each
    refusal once, not at every walk; again once it is refused anew."""
    from loguru import logger

    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    try:
        outside = tmp_path / "outside.json"
        outside.write_text("{}")
        link = rig.store / "linked.json"
        os.symlink(outside, link)
        for _ in range(3):
            await rig.feed.reconcile()
        said = [line for line in lines if line.startswith("not syncing linked.json")]
        assert len(said) == 1, lines
        assert "linked.json" in await rig.state.skipped()  # still shown as a skip
        link.unlink()
        await rig.feed.reconcile()
        os.symlink(outside, link)
        await rig.feed.reconcile()
        said = [line for line in lines if line.startswith("not syncing linked.json")]
        assert len(said) == 2, lines
    finally:
        logger.remove(sink)


async def test_files_held_by_an_open_circuit_say_why_it_opened(rig: Rig, tmp_path: Path) -> None:
    """A pass whose files wait for an open circuit: its error (``sync --wait``'s line, the
    MCP tool's ``errors``) names why the bucket failed, not only ``waiting for the cloud
    (circuit open)``, which sent the user to ``status`` to learn it."""
    from akoshad.pipeline.chain import CircuitBreaker
    from akoshad.pipeline.routes import CloudRoute

    bucket = LocalTarget(tmp_path / "bucket")
    breaker = CircuitBreaker("cloud")
    rig.drain.cloud = CloudRoute(bucket, breaker, rig.drain.stats)
    rig.drain.primary = bucket
    breaker.record_failure(
        "cannot reach http://127.0.0.1:9 (sent 3 times over 0 s)", permanent=True
    )
    write(rig, "a.json", "{}")
    await rig.feed.reconcile()
    ok, reports = await rig.drain.until_empty()
    assert not ok and reports[-1].waiting, reports
    assert reports[-1].error == (
        "waiting for the cloud (circuit open: cannot reach http://127.0.0.1:9 (sent 3 times "
        "over 0 s))"
    )


async def test_a_one_off_http_sync_holds_the_files_for_the_cloud_without_an_error(
    rig: Rig, tmp_path: Path
) -> None:
    """``sync --wait --method http`` while the bucket is the primary delivers memories only:
    the files wait for the cloud, and that is neither a failure nor "circuit open" (it
    printed ``sync FAILED ... waiting for the cloud (circuit open)`` with the circuit
    closed, and the MCP tool said success false). The next pass uploads them."""
    from akoshad.pipeline.chain import CircuitBreaker
    from akoshad.pipeline.routes import CloudRoute

    bucket = LocalTarget(tmp_path / "bucket")
    await bucket.start()
    rig.drain.cloud = CloudRoute(bucket, CircuitBreaker("cloud"), rig.drain.stats)
    rig.drain.primary = bucket
    write(rig, "a.json", "{}")
    await rig.feed.reconcile()
    ok, reports = await rig.drain.until_empty(method="http")
    assert ok and len(reports) == 1, reports
    (held,) = reports
    assert held.error is None and held.waiting and held.upload_id is None
    assert rig.drain.cloud.breaker.state.value == "closed"
    assert await rig.state.queue_depth() == 1 and rig.uploads() == []
    rig.clock.now += 60
    ok, (report,) = await rig.drain.until_empty()
    assert ok and report.files_uploaded == ["a.json"] and rig.uploads() == []  # not the outbox
    assert len(list((tmp_path / "bucket").glob(f"systems/{SYSTEM}/uploads/*/manifest.json"))) == 1
    await bucket.close()
