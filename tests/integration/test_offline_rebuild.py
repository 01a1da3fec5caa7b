"""``akoshad prune`` without a daemon opens the state like a daemon does: a state database
found corrupt is kept aside and a new one started, and its ledger must then be rebuilt from
the target, as the daemon would (the next daemon opens a sound, empty database and no
longer knows it must rebuild: it would send the whole store again)."""

from __future__ import annotations

import random
from pathlib import Path

from akoshad.cli.prune import _prune_offline
from akoshad.store.db import StateDB
from akoshad.targets.local import LocalTarget
from tests.f2_rig import close_rig, open_rig, rig_settings

SID = "offlinerebuild"


def corrupt(db: Path) -> None:
    for side in ("-wal", "-shm"):
        Path(str(db) + side).unlink(missing_ok=True)
    db.write_bytes(b"garbage, not a database" * 1000)


async def test_an_offline_prune_that_sets_a_corrupt_state_aside_rebuilds_the_ledger(
    tmp_path: Path,
) -> None:
    settings = rig_settings(tmp_path, SID)
    db = tmp_path / "state" / "state.db"
    rig = await open_rig(settings, LocalTarget(tmp_path / "outbox"), db)
    try:
        rig.write("big.bin", random.Random(1).randbytes(3 * 1024 * 1024))
        rig.write("a.json", b"{}")
        (report,) = await rig.sync()
        assert report.upload_id
        before = set(await rig.state.ledger("local"))
    finally:
        await close_rig(rig)
    corrupt(db)
    for dry_run in (True, False):
        result = await _prune_offline(settings, dry_run)
        assert result["ok"], result
    assert list(db.parent.glob("state.db.corrupt-*"))
    state = StateDB(db)
    await state.open()
    try:
        assert set(await state.ledger("local")) == before == {"big.bin", "a.json"}
    finally:
        await state.close()


async def test_a_ledger_rebuilt_beside_a_lost_chunk_list_sends_that_file_again(
    tmp_path: Path,
) -> None:
    """The state lost and the newest upload's chunk list of big.bin lost too: the ledger is
    rebuilt from that upload without big.bin, which the next upload sends again with its
    list (before: the whole upload was passed over as unreadable, and every file was sent
    again); that upload restores whole."""
    from akoshad.pipeline.recovery import Discarder, Recovery

    settings = rig_settings(tmp_path, SID)
    db = tmp_path / "state" / "state.db"
    outbox = tmp_path / "outbox"
    rig = await open_rig(settings, LocalTarget(outbox), db)
    try:
        rig.write("big.bin", random.Random(1).randbytes(24 * 1024 * 1024))  # a chunk list
        rig.write("a.json", b"{}")
        await rig.sync()
    finally:
        await close_rig(rig)
    (listed,) = outbox.rglob("chunklists/*/*")
    listed.unlink()
    for lost in db.parent.glob("state.db*"):  # the state lost
        lost.unlink()
    state = StateDB(db)
    await state.open()
    target = LocalTarget(outbox)
    await target.start()
    try:
        assert await Recovery(state, SID, Discarder(SID)).rebuild_ledger(target) == 1
        assert set(await state.ledger("local")) == {"a.json"}
    finally:
        await target.close()
        await state.close()
    rig = await open_rig(settings, LocalTarget(outbox), db)
    try:
        (report,) = await rig.sync()
        assert report.files_uploaded == ["big.bin"], report
        newest = (await rig.uploads())[-1]
        assert await rig.restore(newest) == rig.on_disk()
    finally:
        await close_rig(rig)
