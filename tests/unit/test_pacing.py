"""Upload pacing (``min_upload_interval_seconds``): every cell of the rule with an injected
clock, a busy writer played against it, and the drain telling the pacer what a pass did
(a real local target and state database)."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from akoshad.compress import Compression
from akoshad.errors import TransientError
from akoshad.pipeline.capture.snapshot import Snapshotter
from akoshad.pipeline.debounce import Debouncer
from akoshad.pipeline.drain import Drain
from akoshad.pipeline.pacing import UploadPacer, next_upload_at
from akoshad.pipeline.stats import Stats
from akoshad.pipeline.upload import Uploader
from akoshad.store.db import StateDB
from akoshad.targets.base import StoredObject
from akoshad.targets.local import LocalTarget


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# ---- the rule ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("last", "interval", "waived", "expected"),
    [
        (None, 30.0, False, None),  # no upload yet: at once
        (100.0, 30.0, False, 130.0),  # after an upload: one interval later
        (100.0, 0.0, False, None),  # interval 0: never held back (the behaviour before it)
        (100.0, 30.0, True, None),  # `sync` waived the wait
        (None, 0.0, True, None),
    ],
)
def test_next_upload_at(
    last: float | None, interval: float, waived: bool, expected: float | None
) -> None:
    assert next_upload_at(last, interval, waived=waived) == expected


# (interval, uploads that started at, the moment asked) -> seconds held back
HOLD_CELLS = [
    ("no upload yet", 30.0, [], 1000.0, 0.0),
    ("inside the interval", 30.0, [1000.0], 1010.0, 20.0),
    ("right after the upload", 30.0, [1000.0], 1000.0, 30.0),
    ("interval just over", 30.0, [1000.0], 1030.0, 0.0),
    ("quiet spell", 30.0, [1000.0], 5000.0, 0.0),
    ("the newest upload counts", 30.0, [1000.0, 1040.0], 1050.0, 20.0),
    ("interval 0", 0.0, [1000.0, 1000.5], 1000.5, 0.0),
    ("clock before the upload: at most one interval", 30.0, [1000.0], 900.0, 30.0),
]


@pytest.mark.parametrize(
    ("interval", "uploads", "now", "held"),
    [c[1:] for c in HOLD_CELLS],
    ids=[c[0] for c in HOLD_CELLS],
)
def test_hold(interval: float, uploads: list[float], now: float, held: float) -> None:
    clock = Clock(now)
    pacer = UploadPacer(interval, clock)
    for started in uploads:
        pacer.pass_done(started, uploaded=True)
    assert pacer.hold() == pytest.approx(held)


def test_a_failed_or_empty_pass_does_not_count() -> None:
    clock = Clock(1000.0)
    pacer = UploadPacer(30.0, clock)
    pacer.pass_done(1000.0, uploaded=False)  # failed, or nothing to upload
    assert pacer.hold() == 0.0 and pacer.last_upload is None
    pacer.pass_done(1000.0, uploaded=True)
    clock.now = 1010.0
    pacer.pass_done(1010.0, uploaded=False)  # a retry that failed again
    assert pacer.hold() == pytest.approx(20.0)  # still from the committed upload


def test_sync_waives_the_wait_once() -> None:
    clock = Clock(1000.0)
    pacer = UploadPacer(30.0, clock)
    pacer.pass_done(1000.0, uploaded=True)
    clock.now = 1005.0
    pacer.waive()
    assert pacer.hold() == 0.0  # the sync's pass goes at once
    pacer.pass_done(1005.0, uploaded=True)
    assert pacer.hold() == pytest.approx(30.0)  # and the next one waits from it


def test_a_pass_begun_before_the_sync_keeps_the_waiver() -> None:
    clock = Clock(1000.0)
    pacer = UploadPacer(30.0, clock)
    pacer.pass_done(990.0, uploaded=True)
    pacer.waive()  # `sync` while a pass that began at 998 is still running
    pacer.pass_done(998.0, uploaded=True)
    assert pacer.hold() == 0.0  # the sync's changes were not in that pass: they go now
    pacer.pass_done(1000.0, uploaded=False)  # the sync's pass found nothing: waiver used
    assert pacer.hold() == pytest.approx(28.0)


def test_a_reload_changes_the_interval_at_once() -> None:
    clock = Clock(1010.0)
    pacer = UploadPacer(30.0, clock)
    pacer.pass_done(1000.0, uploaded=True)
    pacer.interval = 0.0
    assert pacer.hold() == 0.0
    pacer.interval = 60.0
    assert pacer.hold() == pytest.approx(50.0)


def test_defer_and_not_before_in_wall_time() -> None:
    clock = Clock(1010.0)  # the pacer's (monotonic) clock
    pacer = UploadPacer(30.0, clock)
    wall = 5_000_000.0
    assert pacer.not_before(wall) is None and pacer.defer(wall - 1, wall) == wall - 1
    pacer.pass_done(1000.0, uploaded=True)
    assert pacer.not_before(wall) == pytest.approx(wall + 20.0)
    assert pacer.defer(None, wall) is None  # nothing queued: nothing to wake for
    assert pacer.defer(wall - 5, wall) == pytest.approx(wall + 20.0)  # held back
    assert pacer.defer(wall + 100, wall) == wall + 100  # due later anyway


# ---- a busy writer against the rule --------------------------------------------------------
def play(
    interval: float, changes: list[float], until: float, step: float = 0.05
) -> list[tuple[float, list[float]]]:
    """The daemon's loop in miniature: changes at the given times go through the debouncer
    (quiet 0.2 s, max delay 2 s) into a queue; a pass starts when the queue holds something
    and the pacer allows it. Returns (start, changes carried) per upload."""
    clock = Clock(0.0)
    pacer = UploadPacer(interval, clock)
    debouncer = Debouncer(0.2, 2.0)
    queue: list[float] = []
    pending = sorted(changes)
    uploads: list[tuple[float, list[float]]] = []
    seen: list[float] = []
    t = 0.0
    while t <= until:
        clock.now = t
        while pending and pending[0] <= t:
            seen.append(pending.pop(0))
            debouncer.touch("reflection.duckdb", "modified", seen[-1])
        if debouncer.due(t):
            queue.extend(seen)
            seen = []
        if queue and pacer.hold() <= 0:
            uploads.append((t, queue))
            queue = []
            pacer.pass_done(t, uploaded=True)
        t = round(t + step, 6)
    return uploads


def test_a_busy_writer_is_paced() -> None:
    writes = [round(0.3 * i, 6) for i in range(21)]  # every 0.3 s for 6 s
    paced = play(3.0, writes, until=20.0)
    starts = [s for s, _ in paced]
    assert len(paced) <= 3
    assert all(b - a >= 3.0 - 1e-9 for a, b in itertools.pairwise(starts))
    carried = sorted(c for _, cs in paced for c in cs)
    assert carried == writes  # every change went up, the last one too
    assert starts[0] == pytest.approx(0.2)  # the first after a quiet spell: its debounce only


def test_without_pacing_each_release_is_an_upload() -> None:
    # a write every second, each released after its quiet 0.2 s, uploads each on its own
    writes = [float(i) for i in range(6)]
    assert len(play(0.0, writes, until=10.0)) == 6
    paced = play(3.0, writes, until=10.0)
    assert len(paced) == 3  # 0.2 s, 3.2 s (writes at 1-3), 6.2 s (writes at 4-5)
    assert [len(cs) for _, cs in paced] == [1, 3, 2]


# ---- the drain tells the pacer what a pass did ---------------------------------------------
class FlakyTarget(LocalTarget):
    """Fails every put while ``down``."""

    down = False

    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        if self.down:
            raise TransientError("the outbox is away")
        return await super().put_file(key, source, compression)

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        if self.down:
            raise TransientError("the outbox is away")
        return await super().put_object_file(key, source, size, crc32)


@dataclass
class Rig:
    store: Path
    state: StateDB
    target: FlakyTarget
    drain: Drain
    clock: Clock

    async def change(self, text: str) -> None:
        (self.store / "a.json").write_text(text)
        await self.state.enqueue([("a.json", "modified")])


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = tmp_path / "store"
    store.mkdir()
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    target = FlakyTarget(tmp_path / "outbox")
    await target.start()
    stats = Stats()
    snapshotter = Snapshotter(store, tmp_path / "state" / "staging")
    uploader = Uploader(
        state=state,
        snapshotter=snapshotter,
        system_id="pace",
        stats=stats,
        staging_dir=tmp_path / "state" / "packs",
    )
    clock = Clock(1000.0)
    drain = Drain(
        state=state,
        snapshotter=snapshotter,
        uploader=uploader,
        stats=stats,
        local=target,
        retry_backoff=0.1,
        clock=lambda: time.time() + 3600,  # every queued row is due
        pacer=UploadPacer(30.0, clock),
    )
    yield Rig(store, state, target, drain, clock)
    await target.close()
    await state.close()


async def test_drain_counts_committed_uploads_only(rig: Rig) -> None:
    pacer = rig.drain.pacer
    assert await rig.drain.run_pass() is None  # nothing due: nothing counted
    assert pacer.last_upload is None
    rig.target.down = True
    await rig.change("one")
    failed = await rig.drain.run_pass()
    assert failed is not None and failed.error  # (its upload id names the discarded try)
    assert pacer.last_upload is None and pacer.hold() == 0.0  # a failed upload: not counted
    rig.target.down = False
    ok = await rig.drain.run_pass()
    assert ok is not None and ok.upload_id and ok.error is None
    assert pacer.last_upload == 1000.0 and pacer.hold() == pytest.approx(30.0)
    rig.clock.now = 1040.0
    await rig.change("one")  # the content is unchanged: no upload
    same = await rig.drain.run_pass()
    assert same is not None and not same.upload_id
    assert pacer.last_upload == 1000.0


async def test_sync_wait_is_not_held_back(rig: Rig) -> None:
    await rig.change("first")
    _, reports = await rig.drain.until_empty()
    assert [bool(r.upload_id) for r in reports] == [True]
    rig.clock.now = 1001.0
    assert rig.drain.pacer.hold() == pytest.approx(29.0)  # the loop would wait...
    await rig.change("second")
    ok, reports = await rig.drain.until_empty()  # ...`sync --wait` and `run --once` do not
    assert ok and len(reports) == 1 and reports[0].upload_id
    assert rig.drain.pacer.last_upload == 1001.0
