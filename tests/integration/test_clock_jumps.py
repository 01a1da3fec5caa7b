"""A wall clock that jumps (a wrong clock set right, NTP, a VM restored from a snapshot):
the real pipeline, uploader, state database and local target, with the clock of the upload
ids shifted for a while as a machine whose clock was wrong would have dated them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from loguru import logger

from akoshad.errors import TransientError
from akoshad.manifest import layout
from akoshad.manifest.layout import in_future
from akoshad.manifest.read import latest_upload
from akoshad.restore.drill import pick_upload
from akoshad.restore.select import pick_at
from akoshad.restore.verify import compare_ledger
from akoshad.store.db import read_ledger
from akoshad.targets.base import Compression, StoredObject
from akoshad.targets.local import LocalTarget
from tests.f2_rig import Rig, close_rig, open_rig, rig_settings
from tests.helpers import akoshad, base_env, write_config

SID = "clockbox"


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings = rig_settings(tmp_path, SID)
    r = await open_rig(settings, LocalTarget(tmp_path / "outbox"), tmp_path / "state/state.db")
    yield r
    await close_rig(r)


def clock_ahead(monkeypatch: pytest.MonkeyPatch, by: timedelta) -> None:
    """Upload ids and manifests are dated by a clock ``by`` ahead of the real one."""

    class Ahead(datetime):
        @classmethod
        def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
            return datetime.now(UTC) + by

    monkeypatch.setattr(layout, "datetime", Ahead)


async def test_uploads_made_once_a_clock_that_ran_ahead_is_set_right_are_the_latest(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The clock ran a year ahead for a while (uploads dated then), then was set right:
    the uploads made after that are what ``restore --latest``, ``--at now`` and the drills
    find, not the data from before the clock went wrong."""
    rig.write("notes.json", b'{"v": 1}')
    await rig.sync()
    (before,) = await rig.uploads()
    with monkeypatch.context() as m:
        clock_ahead(m, timedelta(days=365))
        rig.write("notes.json", b'{"v": 2}')
        await rig.sync()
    ahead = (await rig.uploads())[-1]
    assert ahead != before and in_future(ahead)

    rig.write("notes.json", b'{"v": 3}')
    await rig.sync()
    newest = next(u for u in await rig.uploads() if u not in (before, ahead))
    assert not in_future(newest), newest
    uploads = await rig.uploads()
    assert latest_upload(uploads) == newest
    assert await pick_upload(rig.target, SID) == newest
    picked, _ = await pick_at(uploads, datetime.now(UTC), rig.manifest, "test")
    assert picked == newest
    assert (await rig.restore(newest))["notes.json"] == b'{"v": 3}'
    last = await rig.state.last_upload()  # what status shows
    assert last is not None and last.upload_id == newest
    # and what verify compares the ledger with: the upload the ledger was committed with
    view = read_ledger(tmp_path / "state/state.db", rig.target.name)
    assert view is not None and view.last_upload == newest
    assert compare_ledger(view, list((await rig.files(newest)).values())) == []


async def test_an_upload_dated_before_the_one_made_before_it_is_logged_and_in_status(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock set back a day: the next upload sorts before the one made before it, so
    `restore --latest` anywhere takes that older store. A `run --once` said nothing about
    it (found with faketime); the upload now logs a warning, and status names both."""
    rig.write("notes.json", b'{"v": 1}')
    await rig.sync()
    (before,) = await rig.uploads()
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING")
    try:
        with monkeypatch.context() as m:
            clock_ahead(m, timedelta(days=-1))
            rig.write("notes.json", b'{"v": 2}')
            await rig.sync()
    finally:
        logger.remove(sink)
    back = next(u for u in await rig.uploads() if u != before)
    assert back < before and latest_upload(await rig.uploads()) == before
    assert any(f"upload {back} sorts before {before}, made earlier" in line for line in lines)
    assert await rig.state.sorts_after_last() == (back, before)


class FlakyTarget(LocalTarget):
    """The local target, refusing every write while ``down``."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise TransientError("connection refused")

    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        self._check()
        return await super().put_file(key, source, compression)

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        self._check()
        return await super().put_object_file(key, source, size, crc32)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        self._check()
        return await super().put_bytes(key, data, content_type)


async def test_a_retry_set_by_a_clock_that_ran_ahead_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload failed while the clock ran two hours ahead (a real-time clock kept in local
    time, before NTP set it right): once the clock is right and the target answers, the
    change is due at once, not two hours later."""
    target = FlakyTarget(tmp_path / "outbox")
    settings = rig_settings(tmp_path, SID)
    rig = await open_rig(settings, target, tmp_path / "state/state.db")
    try:
        rig.write("notes.json", b'{"v": 1}')
        real = time.time
        with monkeypatch.context() as m:
            m.setattr(time, "time", lambda: real() + 2 * 3600)
            target.down = True
            (failed,) = await rig.sync()
            assert failed.error and await rig.uploads() == []
        target.down = False
        due = await rig.state.next_due()
        assert due is not None and due <= time.time() + 900, due
        ok, reports = await rig.drain.until_empty()
        assert ok and [r.upload_id for r in reports if r.upload_id]
        (upload,) = await rig.uploads()
        assert (await rig.restore(upload))["notes.json"] == b'{"v": 1}'
    finally:
        await close_rig(rig)


async def test_restore_latest_says_which_uploads_dated_in_the_future_it_skipped(
    rig: Rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``restore --latest`` on a machine whose clock is behind (a rescue system reading a
    real-time clock kept in local time): the newest uploads look dated in the future and are
    skipped, as documented, but not silently: one line names the newest of them. ``--at`` a
    time after now takes such an upload, and says so."""
    rig.write("notes.json", b'{"v": 1}')
    await rig.sync()
    with monkeypatch.context() as m:
        clock_ahead(m, timedelta(hours=5))  # as a clock 5 h behind sees the newest upload
        rig.write("notes.json", b'{"v": 2}')
        await rig.sync()
    older, newer = await rig.uploads()
    config = write_config(
        tmp_path / "restore.yaml",
        data_dir=str(tmp_path / "elsewhere"),
        state_dir=str(tmp_path / "restore-state"),
        local_target_dir=str(tmp_path / "outbox"),
        cloud_sync={"system_id": SID},
    )
    dest = tmp_path / "restored"
    env = base_env(tmp_path / "home")
    res = akoshad("restore", "--latest", "--dest", str(dest), "--config", str(config), env=env)
    assert res.returncode == 0, res.stderr
    assert f"of upload {older}" in res.stdout
    assert "dated in the future" in res.stderr and newer in res.stderr, res.stderr
    assert f"--upload-id {newer}" in res.stderr
    # --at a TIME after now takes the upload dated in the future, which --latest skips:
    # it said nothing; a warning names it and what --latest takes
    at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    res = akoshad(
        "restore", "--at", at, "--dest", str(dest) + "2", "--config", str(config), env=env
    )
    assert res.returncode == 0, res.stderr
    assert f"of upload {newer}" in res.stdout
    assert f"upload {newer} is dated in the future" in res.stderr, res.stderr
    assert f"--latest takes {older}" in res.stderr


async def test_a_prune_keeps_the_last_upload_made_though_one_dated_ahead_sorts_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock ran a day ahead for one upload, then was set right: the next upload holds
    the store as it is, but sorts before the one dated ahead. A prune keeping one upload
    keeps both (the greatest id, ``restore --latest``'s, and this machine's last one); it
    removed the last one made, leaving only older content."""
    from akoshad.pipeline.ownership import OwnerGate
    from akoshad.pipeline.stats import Stats
    from akoshad.runtime.prune import prune_target
    from akoshad.storage import prune_exec

    policy = {"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}
    settings = rig_settings(tmp_path, SID, retention=policy)
    r = await open_rig(settings, LocalTarget(tmp_path / "outbox"), tmp_path / "state/state.db")
    try:
        r.write("notes.json", b'{"v": 1}')
        await r.sync()
        with monkeypatch.context() as m:
            clock_ahead(m, timedelta(days=1))
            r.write("notes.json", b'{"v": 2}')
            await r.sync()
        ahead = max(await r.uploads())
        r.write("notes.json", b'{"v": 3}')
        (report,) = await r.sync()
        last = report.upload_id
        assert last and last < ahead
        gate = OwnerGate(settings.state_dir, SID, Stats(), settle=0.01)
        with monkeypatch.context() as m:  # the prune runs two days on: no upload is recent
            later = timedelta(days=2)

            class Later(datetime):
                @classmethod
                def now(cls, tz: object = None) -> datetime:  # type: ignore[override]
                    return datetime.now(UTC) + later

            m.setattr(prune_exec, "datetime", Later)
            result = await prune_target(settings, r.state, r.target, gate, dry_run=False)
        assert result["ok"], result
        assert sorted(await r.uploads()) == sorted({last, ahead})
        assert (await r.restore(last))["notes.json"] == b'{"v": 3}'
    finally:
        await close_rig(r)
