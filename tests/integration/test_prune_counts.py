"""A prune that stops part way keeps the counts of what it really deleted: one stopped by a
target error (or its deadline) reports them in its result and ``last_prune``; one killed
before it recorded its outcome leaves them in the state, and the next prune (or the
daemon's next start) records it as a prune that stopped part way, with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from akoshad.config import Settings
from tests.f2_rig import CountingTarget, Rig, close_rig, open_rig
from tests.integration.test_format2_writer import SID, MiB, local_settings, noise

POLICY = {"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}


class Killed(BaseException):
    """What a SIGKILL does to a prune, as far as the state can tell: it just stops."""


async def _two_uploads(tmp_path: Path) -> tuple[Settings, Rig]:
    settings = local_settings(tmp_path, retention=POLICY)
    rig = await open_rig(settings, CountingTarget(tmp_path / "outbox"), tmp_path / "state.db")
    big = bytearray(noise(9, 8 * MiB))
    rig.write("reflection.duckdb", bytes(big))
    await rig.sync()
    big[4 * MiB :] = noise(10, 4 * MiB)  # half its pack dead: a repack after the manifests
    rig.write("reflection.duckdb", bytes(big))
    await rig.sync()
    return settings, rig


async def test_a_prune_stopped_by_an_error_reports_what_it_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from akoshad.cli.prune import render_prune
    from akoshad.cli.status_view import prune_line
    from akoshad.errors import TransientError
    from akoshad.pipeline.ownership import OwnerGate
    from akoshad.pipeline.stats import Stats
    from akoshad.runtime.prune import prune_target
    from akoshad.runtime.prune_report import last_prune

    settings, rig = await _two_uploads(tmp_path)
    try:
        first = min(await rig.uploads())

        async def full(*_: object) -> int:
            raise TransientError("local target write failed: No space left on device")

        monkeypatch.setattr(rig.target, "put_object_file", full)
        gate = OwnerGate(settings.state_dir, SID, Stats())
        result = await prune_target(settings, rig.state, rig.target, gate, dry_run=False)
        assert not result["ok"] and result["stopped_part_way"]
        assert result["uploads_removed"] == [first]  # was [] (the counts were lost)
        assert result["objects_deleted"] >= 1 and result["bytes_freed"] > 0
        last = last_prune(result)
        assert last["uploads_removed"] == 1 and last["objects_deleted"] >= 1
        assert "removed 1 upload(s)" in render_prune(result)
        assert "1 upload(s) removed" in (prune_line(last, result["at"]) or "")
        assert await rig.state.get_kv("prune_progress") is None  # recorded: nothing to fold
    finally:
        await close_rig(rig)


async def test_a_killed_prune_is_recorded_with_its_counts_by_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from akoshad.cli.prune import render_prune
    from akoshad.pipeline.ownership import OwnerGate
    from akoshad.pipeline.stats import Stats
    from akoshad.runtime.prune import prune_target

    settings, rig = await _two_uploads(tmp_path)
    try:
        real_put = rig.target.put_object_file

        async def killed(*_: object) -> int:
            raise Killed

        monkeypatch.setattr(rig.target, "put_object_file", killed)
        gate = OwnerGate(settings.state_dir, SID, Stats())
        with pytest.raises(Killed):
            await prune_target(settings, rig.state, rig.target, gate, dry_run=False)
        saved = json.loads(await rig.state.get_kv("prune_progress") or "{}")
        assert len(saved["uploads_removed"]) == 1 and saved["objects_deleted"] >= 1

        monkeypatch.setattr(rig.target, "put_object_file", real_put)
        result = await prune_target(settings, rig.state, rig.target, gate, dry_run=False)
        assert result["ok"], result
        before = result["interrupted_prune"]
        assert before["uploads_removed"] == 1 and before["stopped_part_way"]
        assert before["objects_deleted"] == saved["objects_deleted"]
        assert "interrupted after it removed 1 upload(s)" in render_prune(result)
        assert await rig.state.get_kv("prune_progress") is None

    finally:
        await close_rig(rig)


async def test_a_killed_prune_is_recorded_with_its_counts_at_the_daemons_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from akoshad.cli.status_view import prune_line
    from akoshad.pipeline.ownership import OwnerGate
    from akoshad.pipeline.stats import Stats
    from akoshad.runtime.prune import prune_target
    from akoshad.runtime.prune_progress import fold_interrupted
    from akoshad.runtime.prune_report import KV_LAST, parse_last

    settings, rig = await _two_uploads(tmp_path)
    try:

        async def killed(*_: object) -> int:
            raise Killed

        monkeypatch.setattr(rig.target, "put_object_file", killed)
        gate = OwnerGate(settings.state_dir, SID, Stats())
        with pytest.raises(Killed):
            await prune_target(settings, rig.state, rig.target, gate, dry_run=False)
        folded = await fold_interrupted(rig.state)  # what PruneScheduler.run does first
        assert folded is not None and folded["uploads_removed"] == 1
        last = parse_last(await rig.state.get_kv(KV_LAST))
        assert last == folded and not last["ok"] and last["stopped_part_way"]
        assert "stopped part way: 1 upload(s) removed" in (prune_line(last, last["at"]) or "")
        assert await fold_interrupted(rig.state) is None
    finally:
        await close_rig(rig)


async def test_the_counts_of_a_killed_prune_go_with_a_target_forgotten(tmp_path: Path) -> None:
    """A killed prune's counts, then the primary target changed: they described the old
    target, and the next start recorded them as the new one's last prune."""
    from akoshad.runtime.prune_progress import KV_PROGRESS, fold_interrupted
    from akoshad.runtime.target_identity import _forget_in
    from akoshad.store.db import StateDB

    state = StateDB(tmp_path / "state.db")
    await state.open()
    try:
        await state.set_kv(KV_PROGRESS, '{"at": 1.0, "uploads_removed": ["x"]}')
        await state.transaction(lambda c: _forget_in(c, "local", True))
        assert await fold_interrupted(state) is None
    finally:
        await state.close()


async def test_a_killed_prune_a_later_prune_recorded_over_is_not_folded(tmp_path: Path) -> None:
    """A prune of this akoshad killed mid-way, then an older akoshad (a downgrade) pruned
    to its end and recorded last_prune ok, leaving the progress record it does not know;
    back on this version, the daemon's start folded that record over the good prune:
    status 'UNHEALTHY: the last prune failed: the prune was interrupted' until the next
    prune. A record older than last_prune is now dropped, the good prune kept."""
    import time

    from akoshad.runtime.prune_progress import KV_PROGRESS, fold_interrupted
    from akoshad.runtime.prune_report import KV_LAST, parse_last

    _settings, rig = await _two_uploads(tmp_path)
    try:
        began = time.time() - 60
        counts = {"uploads_removed": ["u1"], "objects_deleted": 3, "bytes_freed": 9, "at": began}
        await rig.state.set_kv(KV_PROGRESS, json.dumps(counts))
        good = {"at": began + 30, "ok": True, "uploads_removed": 2, "problems": []}
        await rig.state.set_kv(KV_LAST, json.dumps(good))
        assert await fold_interrupted(rig.state) is None
        assert parse_last(await rig.state.get_kv(KV_LAST)) == good
        assert await rig.state.get_kv(KV_PROGRESS) is None
        # one recorded before it began is the prune before the killed one: folded over
        await rig.state.set_kv(KV_PROGRESS, json.dumps(counts))
        await rig.state.set_kv(KV_LAST, json.dumps(good | {"at": began - 30}))
        folded = await fold_interrupted(rig.state)
        assert folded is not None and folded["ok"] is False and folded["uploads_removed"] == 1
    finally:
        await close_rig(rig)
