"""The daemon's drill and its prune share the target: a prune that repacks the packs of the
upload a drill is reading must not make that drill fail (a false alarm: status unsafe for a
whole drill interval)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from akoshad.events import EventBus
from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.stats import Stats
from akoshad.runtime.drills import DrillScheduler
from akoshad.runtime.prune import PruneScheduler
from tests.f2_rig import CountingTarget, close_rig, open_rig, rig_settings

SID = "drillprune"
MiB = 1024 * 1024


class PausingTarget(CountingTarget):
    """Holds the first ranged read of a pack until ``go`` is set (``held`` says it is)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.armed = False
        self.held = asyncio.Event()
        self.go = asyncio.Event()

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        if self.armed and "/packs/" in key:
            self.armed = False
            self.held.set()
            await self.go.wait()
        return await super().read_range(key, offset, length)


async def test_a_prune_never_repacks_under_a_running_drill(tmp_path: Path) -> None:
    settings = rig_settings(
        tmp_path,
        SID,
        retention={"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0},
    )
    target = PausingTarget(tmp_path / "outbox")
    rig = await open_rig(settings, target, tmp_path / "state/state.db")
    try:
        big = bytearray(random.Random(1).randbytes(8 * MiB))
        rig.write("big.bin", bytes(big))
        await rig.sync()
        big[4 * MiB :] = random.Random(2).randbytes(4 * MiB)  # half its pack dead
        rig.write("big.bin", bytes(big))
        await rig.sync()
        lock, stop, events = asyncio.Lock(), asyncio.Event(), EventBus(SID)
        drills = DrillScheduler(
            settings, state=rig.state, target=target, events=events, stop_event=stop, pass_lock=lock
        )
        prunes = PruneScheduler(
            settings,
            state=rig.state,
            target=target,
            gate=OwnerGate(settings.state_dir, SID, Stats()),
            events=events,
            stop_event=stop,
            pass_lock=lock,
            drills=drills,
        )
        target.armed = True
        drill = asyncio.create_task(drills.drill_once())
        await asyncio.wait_for(target.held.wait(), 30)  # the drill reads the newest upload
        prune = asyncio.create_task(prunes.prune_now())
        await asyncio.sleep(0.5)  # the prune goes as far as it may meanwhile
        target.go.set()
        result = await asyncio.wait_for(drill, 60)
        pruned = await asyncio.wait_for(prune, 60)
        assert pruned["ok"] and pruned["packs_repacked"] >= 1, pruned
        assert result is not None
        assert result.ok, result.problems
        (kept,) = await rig.uploads()
        assert await rig.restore(kept) == rig.on_disk()
    finally:
        await close_rig(rig)
