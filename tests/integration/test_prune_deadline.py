"""A prune holds the pass lock, so uploads wait while it runs: a target that stops answering
in the middle of a prune (a server trickling its replies, which no read timeout ends) must
not keep the daemon from uploading for ever. The prune gives up at its deadline, as a failed
prune that names the reason, the lock is released, and every kept upload still restores."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from akoshad.events import EventBus
from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.stats import Stats
from akoshad.runtime import prune as runtime_prune
from akoshad.runtime.prune import PruneScheduler
from tests.f2_rig import CountingTarget, close_rig, open_rig, rig_settings

SID = "prunedeadline"
MiB = 1024 * 1024


class StallingTarget(CountingTarget):
    """Once ``stall`` is set, every read hangs (until the test ends)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.stall = False
        self.stalled = asyncio.Event()

    async def _hang(self) -> None:
        self.stalled.set()
        await asyncio.Event().wait()

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        if self.stall:
            await self._hang()
        return await super().read_range(key, offset, length)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        if self.stall:
            await self._hang()
        async for piece in super().read(key):
            yield piece

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:
        if self.stall:
            await self._hang()
        async for key in super().list_keys(prefix):
            yield key


async def test_a_prune_that_the_target_stalls_gives_up_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_prune, "DEADLINE_SECONDS", 1.0)
    settings = rig_settings(
        tmp_path,
        SID,
        retention={"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0},
    )
    target = StallingTarget(tmp_path / "outbox")
    rig = await open_rig(settings, target, tmp_path / "state/state.db")
    try:
        for seed in (1, 2):
            rig.write("big.bin", random.Random(seed).randbytes(2 * MiB))
            await rig.sync()
        lock, stop, events = asyncio.Lock(), asyncio.Event(), EventBus(SID)
        prunes = PruneScheduler(
            settings,
            state=rig.state,
            target=target,
            gate=OwnerGate(settings.state_dir, SID, Stats()),
            events=events,
            stop_event=stop,
            pass_lock=lock,
        )
        await prunes.gate.ownership(target)  # the owner record read before the stall
        target.stall = True
        result = await asyncio.wait_for(prunes.prune_now(), 30)
        assert target.stalled.is_set()
        assert result["ok"] is False, result
        (problem,) = result["problems"]
        assert "did not finish within 1 s" in problem and "restorable" in problem, problem
        assert not lock.locked()  # uploads may go on
        last = await prunes.last()
        assert last is not None and last["ok"] is False
        target.stall = False
        uploads = await rig.uploads()
        assert uploads  # nothing was deleted half-way that a kept upload needs
        assert await rig.restore(uploads[-1]) == rig.on_disk()
        rig.write("later.json", b"{}")
        (report,) = await rig.sync()
        assert report.error is None and report.files_uploaded == ["later.json"]
    finally:
        await close_rig(rig)
