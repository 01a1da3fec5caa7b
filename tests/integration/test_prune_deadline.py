"""A prune holds the pass lock, so uploads wait while it runs: a target that stops answering
in the middle of a prune (a server trickling its replies, which no read timeout ends) must
not keep the daemon from uploading for ever. The prune gives up at its deadline, as a failed
prune that names the reason, the lock is released, and every kept upload still restores."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from akoshad.runtime import prune as runtime_prune
from tests.f2_rig import close_rig, open_rig, rig_settings
from tests.holding import KEEP_LAST_ONE, HoldingTarget, prune_scheduler

SID = "prunedeadline"
MiB = 1024 * 1024


async def test_a_prune_that_the_target_stalls_gives_up_at_its_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime_prune, "DEADLINE_SECONDS", 1.0)
    settings = rig_settings(tmp_path, SID, retention=KEEP_LAST_ONE)
    target = HoldingTarget(tmp_path / "outbox")
    rig = await open_rig(settings, target, tmp_path / "state/state.db")
    try:
        for seed in (1, 2):
            rig.write("big.bin", random.Random(seed).randbytes(2 * MiB))
            await rig.sync()
        lock = asyncio.Lock()
        prunes = prune_scheduler(settings, rig.state, target, pass_lock=lock)
        await prunes.gate.ownership(target)  # the owner record read before the stall
        target.hold = lambda operation, key: True  # every read waits, for ever
        result = await asyncio.wait_for(prunes.prune_now(), 30)
        assert target.held.is_set()
        assert result["ok"] is False, result
        (problem,) = result["problems"]
        assert "did not finish within 1 s" in problem and "restorable" in problem, problem
        assert not lock.locked()  # uploads may go on
        last = await prunes.last()
        assert last is not None and last["ok"] is False
        target.hold = None
        uploads = await rig.uploads()
        assert uploads  # nothing was deleted half-way that a kept upload needs
        assert await rig.restore(uploads[-1]) == rig.on_disk()
        rig.write("later.json", b"{}")
        (report,) = await rig.sync()
        assert report.error is None and report.files_uploaded == ["later.json"]
    finally:
        await close_rig(rig)
