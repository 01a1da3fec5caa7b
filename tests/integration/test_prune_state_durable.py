"""Power loss in a prune: the state database commits with ``synchronous = NORMAL``, so its
last commits may be lost to a power loss while the target's deletions stay done. A prune
forgets a pack's chunks in the state, then deletes the pack: had the forgetting been lost
and the deletion kept, the next upload deduplicated against chunks of a pack no longer
there, and its manifest named them (the newest upload, unrestorable, said nowhere). Every
deletion now waits until what the state committed before it is fsynced."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from akoshad.store.db import StateDB
from tests.f2_rig import CountingTarget, close_rig, open_rig
from tests.integration.test_format2_writer import SID, MiB, local_settings, noise


async def test_each_deletion_of_a_prune_follows_a_durable_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from akoshad.pipeline.ownership import OwnerGate
    from akoshad.pipeline.stats import Stats
    from akoshad.runtime.prune import prune_target

    policy = {"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}
    settings = local_settings(tmp_path, retention=policy)
    db = tmp_path / "state" / "state.db"
    rig = await open_rig(settings, CountingTarget(tmp_path / "outbox"), db)
    try:
        big = bytearray(noise(9, 8 * MiB))
        rig.write("reflection.duckdb", bytes(big))
        await rig.sync()
        big[4 * MiB :] = noise(10, 4 * MiB)  # half its pack dead: a repack and deletions
        rig.write("reflection.duckdb", bytes(big))
        await rig.sync()
        events: list[str] = []
        real_tx, real_fsync, real_delete = StateDB._tx, os.fsync, rig.target.delete_keys

        def tx(self: StateDB, fn: Callable[[sqlite3.Connection], object]) -> object:
            result = real_tx(self, fn)
            events.append("commit")
            return result

        def fsync(fd: int) -> None:
            real_fsync(fd)
            if os.readlink(f"/proc/self/fd/{fd}") in (f"{db}-wal", str(db)):
                events.append("state synced")

        async def delete_keys(keys: list[str]) -> None:
            events.append("delete")
            await real_delete(keys)

        monkeypatch.setattr(StateDB, "_tx", tx)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(rig.target, "delete_keys", delete_keys)
        gate = OwnerGate(settings.state_dir, SID, Stats())
        result = await prune_target(settings, rig.state, rig.target, gate, dry_run=False)
        assert result["ok"] and result["packs_repacked"] >= 1, result
        deletes = [i for i, e in enumerate(events) if e == "delete"]
        assert deletes
        for i in deletes:  # the last commit before it is synced before it
            before = events[:i]
            last_commit = max(j for j, e in enumerate(before) if e == "commit")
            assert "state synced" in before[last_commit:], events
    finally:
        await close_rig(rig)


async def test_a_prune_that_stops_after_deleting_does_not_say_it_removed_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full outbox during a repack (after the dropped uploads' manifests were deleted)
    printed `removed 0 upload(s), kept every upload (the prune read none); deleted 0
    object(s)`, though it had removed 1 upload."""
    from akoshad.cli.prune import render_prune
    from akoshad.errors import TransientError
    from akoshad.pipeline.ownership import OwnerGate
    from akoshad.pipeline.stats import Stats
    from akoshad.runtime.prune import prune_target
    from akoshad.runtime.prune_report import last_prune, result_line

    policy = {"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}
    settings = local_settings(tmp_path, retention=policy)
    rig = await open_rig(settings, CountingTarget(tmp_path / "outbox"), tmp_path / "state.db")
    try:
        big = bytearray(noise(9, 8 * MiB))
        rig.write("reflection.duckdb", bytes(big))
        await rig.sync()
        big[4 * MiB :] = noise(10, 4 * MiB)  # half its pack dead: a repack
        rig.write("reflection.duckdb", bytes(big))
        await rig.sync()

        async def full(*_: object) -> int:
            raise TransientError("local target write failed: No space left on device")

        monkeypatch.setattr(rig.target, "put_object_file", full)
        gate = OwnerGate(settings.state_dir, SID, Stats())
        result = await prune_target(settings, rig.state, rig.target, gate, dry_run=False)
        assert not result["ok"] and len(await rig.uploads()) == 1  # one upload removed
        assert result["stopped_part_way"] and last_prune(result)["stopped_part_way"]
        for text in (render_prune(result), result_line(result)):
            assert "removed 0 upload(s)" not in text and "the prune read none" not in text
            assert "stopped part way" in text and "No space left on device" in text
    finally:
        await close_rig(rig)
