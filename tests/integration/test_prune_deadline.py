"""A prune holds the pass lock, so uploads wait while it runs: a target that stops answering
in the middle of a prune (a server trickling its replies, which no read timeout ends) must
not keep the daemon from uploading for ever. The prune gives up at its deadline, as a failed
prune that names the reason, the lock is released, and every kept upload still restores."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

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
        assert "made no progress for 1 s" in problem and "restorable" in problem, problem
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


class SlowWrites(HoldingTarget):
    """Each write and delete takes ``delay`` seconds once ``delay`` is set."""

    delay = 0.0

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        await asyncio.sleep(self.delay)
        return await super().put_object_file(key, source, size, crc32)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        await asyncio.sleep(self.delay)
        return await super().put_bytes(key, data, content_type)

    async def delete_keys(self, keys: list[str]) -> None:
        await asyncio.sleep(self.delay)
        await super().delete_keys(keys)


async def test_a_long_prune_that_keeps_making_progress_is_not_cut_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deadline is one of no progress: a repack whose steps each take less than it,
    but which takes longer than it in all, finishes (cut short, it would start over at every
    prune and never end)."""
    monkeypatch.setattr(runtime_prune, "DEADLINE_SECONDS", 1.0)
    settings = rig_settings(tmp_path, SID, retention=KEEP_LAST_ONE)
    target = SlowWrites(tmp_path / "outbox")
    rig = await open_rig(settings, target, tmp_path / "state/state.db")
    try:
        big = bytearray(random.Random(1).randbytes(8 * MiB))
        for n in range(12):
            rig.write(f"small/{n:02}.json", random.Random(n).randbytes(3000))
        rig.write("big.bin", bytes(big))
        await rig.sync()
        big[4 * MiB :] = random.Random(2).randbytes(4 * MiB)  # half its pack dead
        rig.write("big.bin", bytes(big))
        await rig.sync()
        gate = prune_scheduler(settings, rig.state, target).gate
        steps: list[str] = []

        async def count(i: int, step: Any) -> None:
            steps.append(step.op)

        hooks = replace(runtime_prune.ledger_hooks(rig.state, target.name), on_step=count)
        target.delay = 0.4
        result = await asyncio.wait_for(
            runtime_prune.prune_target(
                settings, rig.state, target, gate, dry_run=False, hooks=hooks
            ),
            60,
        )
        assert result["ok"] is True, result
        assert result["packs_repacked"] >= 1, result
        assert len(steps) >= 4, steps  # 0.4 s each at least: longer than the deadline in all
        (kept,) = await rig.uploads()
        target.delay = 0.0
        assert await rig.restore(kept) == rig.on_disk()
    finally:
        await close_rig(rig)
