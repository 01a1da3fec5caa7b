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
