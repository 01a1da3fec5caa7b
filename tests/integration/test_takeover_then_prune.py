"""A prune right after a takeover: the previous owner's upload that its last ownership
check (still fresh, at most a minute old) let through may be between its packs and its
manifest. A prune of the new owner then would sweep those packs, and the manifest landing
after it would be an upload, the newest, that cannot be restored. So for
``TAKEOVER_QUIET`` after its takeover the new owner's prune deletes nothing and says until
when; a dry run still answers."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.stats import Stats
from akoshad.runtime.prune import prune_target
from akoshad.storage.owner_takeover import TAKEOVER_QUIET, TakeoverSettling
from akoshad.store.db import StateDB
from tests.f2_rig import HeldPuts, close_rig, open_rig, rig_settings
from tests.helpers import akoshad, base_env, manifests, write_config
from tests.storegen import make_store

SID = "handover"


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _age_takeover(outbox: Path, system_id: str, seconds: float) -> None:
    """Date the owner record's takeover ``seconds`` back, as if made that long ago."""
    record = outbox / "systems" / system_id / "owner.json"
    doc = json.loads(record.read_text())
    assert doc["lease"]["how"] == "takeover"
    since = datetime.now(UTC) - timedelta(seconds=seconds)
    doc["since"] = since.isoformat(timespec="seconds")
    record.write_text(json.dumps(doc))


async def test_the_previous_owners_upload_in_flight_survives_the_new_owners_prune(
    tmp_path: Path,
) -> None:
    target = HeldPuts(tmp_path / "outbox", lambda key: key.endswith("/manifest.json"))
    rig = await open_rig(rig_settings(tmp_path, SID), target, tmp_path / "state" / "state.db")
    rig.drain.owners = OwnerGate(tmp_path / "state", SID, rig.drain.stats, settle=0.01)
    (tmp_path / "b").mkdir()
    other = rig_settings(tmp_path / "b", SID, local_target_dir=str(tmp_path / "outbox"))
    state_b = StateDB(tmp_path / "b" / "state.db")
    await state_b.open()
    try:
        rig.write("a.json", b'{"a": 1}')
        (first,) = await rig.sync()
        assert first.upload_id
        rig.write("a.json", b'{"a": 2}')
        target.hold = True
        syncing = asyncio.create_task(rig.sync())
        await asyncio.wait_for(target.holding.wait(), 30)  # its packs sent, manifest held
        gate_b = OwnerGate(other.state_dir, SID, Stats(), settle=0.01)
        await gate_b.takeover(target)
        before = _files(tmp_path / "outbox")
        with pytest.raises(TakeoverSettling, match="deletes nothing until"):
            await prune_target(other, state_b, target, gate_b, dry_run=False)
        assert _files(tmp_path / "outbox") == before
        dry = await prune_target(other, state_b, target, gate_b, dry_run=True)
        assert dry["ok"] and dry["dry_run"], dry
        target.go.set()
        (late,) = await asyncio.wait_for(syncing, 30)
        assert late.upload_id  # its cached check was fresh: it committed
        for upload_id in await rig.uploads():
            await rig.restore(upload_id)  # every upload whole (raises on a missing pack)
        # once the quiet time has passed, the new owner prunes as usual
        _age_takeover(tmp_path / "outbox", SID, TAKEOVER_QUIET + 5)
        result = await prune_target(other, state_b, target, gate_b, dry_run=False)
        assert result["ok"], result
        assert await rig.restore(late.upload_id) == rig.on_disk()
    finally:
        await state_b.close()
        await close_rig(rig)


def test_prune_by_hand_right_after_takeover_deletes_nothing_and_says_until_when(
    tmp_path: Path,
) -> None:
    make_store(tmp_path / "store")
    outbox = tmp_path / "outbox"
    env = base_env(tmp_path / "home")
    configs = {}
    for name in ("a", "b"):
        configs[name] = write_config(
            tmp_path / f"{name}.yaml",
            data_dir=str(tmp_path / "store"),
            state_dir=str(tmp_path / f"state-{name}"),
            local_target_dir=str(outbox),
            socket_path=str(tmp_path / f"{name}.sock"),
            drill_interval_hours=0,
            retention={"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0},
            cloud_sync={"system_id": SID},
        )

    def cli(name: str, *args: str) -> tuple[int, str, str]:
        res = akoshad(*args, "--config", str(configs[name]), env=env)
        return res.returncode, res.stdout, res.stderr

    assert cli("a", "run", "--once")[0] == 0
    (tmp_path / "store" / "akosha_sync_state.json").write_text('{"last_sync": 1}')
    assert cli("a", "run", "--once")[0] == 0
    assert len(manifests(outbox, SID)) == 2
    assert cli("b", "takeover")[0] == 0
    before = _files(outbox)
    code, out, err = cli("b", "prune")
    assert code == 1 and out == "", (out, err)
    (line,) = err.strip().splitlines()
    assert "took system_id 'handover' over at" in line and "deletes nothing until" in line
    assert "Traceback" not in err
    assert _files(outbox) == before
    code, out, _ = cli("b", "prune", "--json")
    assert code == 1 and "deletes nothing until" in json.loads(out)["problems"][0]
    code, out, _ = cli("b", "prune", "--dry-run")
    assert code == 0 and "would remove 1 upload(s)" in out, out
    assert _files(outbox) == before
    _age_takeover(outbox, SID, TAKEOVER_QUIET + 5)
    code, out, err = cli("b", "prune")
    assert code == 0 and "removed 1 upload(s)" in out, (out, err)
