"""The daemon's drill and its prune share the target: a prune that repacks the packs of the
upload a drill is reading must not make that drill fail (a false alarm: status unsafe for a
whole drill interval)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from akoshad.events import EventBus
from akoshad.runtime.drills import DrillScheduler
from tests.f2_rig import close_rig, open_rig, rig_settings
from tests.holding import KEEP_LAST_ONE, HoldingTarget, pack_ranges, prune_scheduler

SID = "drillprune"
MiB = 1024 * 1024


async def test_a_prune_never_repacks_under_a_running_drill(tmp_path: Path) -> None:
    settings = rig_settings(tmp_path, SID, retention=KEEP_LAST_ONE)
    target = HoldingTarget(tmp_path / "outbox")
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
        prunes = prune_scheduler(
            settings,
            rig.state,
            target,
            events=events,
            stop_event=stop,
            pass_lock=lock,
            drills=drills,
        )
        target.hold_once(pack_ranges)
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
