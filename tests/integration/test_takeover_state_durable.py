"""Power loss in a takeover: the old ledger is forgotten before the owner record is
written (the previous owner may have pruned what it points at), but the state commits with
``synchronous = NORMAL``: a power loss could keep the record (fsynced in the target) and
undo the forgetting, and this machine's next upload deduplicated against packs the
previous owner had pruned. The forgetting is now fsynced before the record is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.stats import Stats
from akoshad.runtime.ownership import _takeover
from akoshad.store.db import StateDB
from akoshad.targets.local import LocalTarget
from tests.f2_rig import rig_settings

SID = "handover"


async def test_the_forgotten_ledger_is_durable_before_the_owner_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = LocalTarget(tmp_path / "outbox")
    await target.start()
    (tmp_path / "a").mkdir()
    first = rig_settings(tmp_path / "a", SID, local_target_dir=str(target.root))
    await OwnerGate(first.state_dir, SID, Stats()).takeover(target)  # another machine's
    db = tmp_path / "b" / "state.db"
    state = StateDB(db)
    await state.open()
    events: list[str] = []
    real_fsync, real_takeover = os.fsync, OwnerGate.takeover

    def fsync(fd: int) -> None:
        real_fsync(fd)
        if os.readlink(f"/proc/self/fd/{fd}") in (f"{db}-wal", str(db)):
            events.append("state synced")

    async def takeover(self: OwnerGate, t: LocalTarget) -> object:
        events.append("record")
        return await real_takeover(self, t)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(OwnerGate, "takeover", takeover)
    try:
        gate = OwnerGate(tmp_path / "b", SID, Stats())
        result = await _takeover(state, gate, target)
        assert result["ledger_entries"] is not None
        assert events[:2] == ["state synced", "record"], events
    finally:
        await state.close()
