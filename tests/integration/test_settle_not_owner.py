"""A machine that crashed mid-upload and lost the system id to another machine meanwhile
(``akoshad takeover`` there) settles its interrupted upload only once it owns the id
again: before, its start deleted that upload's objects and packs in the target although
only the owner may delete there (the owner's prune sweeps what no upload uses). Real
subprocesses; the crash is the state a kill -9 between a pack and the manifest leaves."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from akoshad.store.db import StateDB
from tests.helpers import (
    akoshad,
    base_env,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)

SID = "crashed-box"
LOST = "20260101T000000000000Z-aaaaaa"  # the upload the crash interrupted


def _lose_an_upload(state_db: Path, outbox: Path) -> list[Path]:
    """The state a crash of this machine's upload ``LOST`` left: on record as in progress
    with one pack sent, and that pack and an object in its folder in the target."""
    pack = f"systems/{SID}/packs/ab/ab{'0' * 62}"

    async def record() -> None:
        state = StateDB(state_db)
        await state.open()
        try:
            await state.begin_upload(LOST, "local", "local", {})
            await state.add_upload_pack(LOST, pack)
        finally:
            await state.close()

    state_db.parent.mkdir(parents=True)
    asyncio.run(record())
    left = [outbox / "systems" / SID / "uploads" / LOST / "memories.json", outbox / pack]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"[]")
    return left


def test_a_crashed_upload_is_settled_by_the_owner_only(tmp_path: Path) -> None:
    store, outbox = tmp_path / "store", tmp_path / "outbox"
    store.mkdir()
    (store / "a.json").write_text('{"a": 1}')
    env = base_env(tmp_path / "home")
    configs = {
        name: write_config(
            tmp_path / f"{name}.yaml",
            data_dir=str(store),
            state_dir=str(tmp_path / f"state-{name}"),
            local_target_dir=str(outbox),
            socket_path=str(tmp_path / f"{name}.sock"),
            drill_interval_hours=0,
            cloud_sync={"system_id": SID},
        )
        for name in ("a", "b")
    }

    def cli(name: str, *args: str) -> tuple[int, str]:
        res = akoshad(*args, "--config", str(configs[name]), env=env)
        assert "Traceback" not in res.stderr, res.stderr
        return res.returncode, res.stdout if "--json" in args else res.stderr

    assert cli("a", "run", "--once")[0] == 0  # a owns the id
    left = _lose_an_upload(tmp_path / "state-b" / "state.db", outbox)
    before = sorted(p for p in outbox.rglob("*") if p.is_file())

    code, err = cli("b", "run", "--once")  # b is not the owner: it settles nothing
    assert code == 1 and "is owned by another akoshad state" in err, err
    assert sorted(p for p in outbox.rglob("*") if p.is_file()) == before  # nothing deleted
    assert "not settled" in err, err
    assert cli("a", "verify")[0] == 0

    proc = start_daemon(configs["b"], env, tmp_path / "b.log")
    try:  # the daemon too: it waits, degraded, and counts no failure for it
        wait_for((tmp_path / "b.sock").exists, 30)

        def status() -> dict[str, Any]:
            return dict(json.loads(cli("b", "status", "--json")[1] or "{}"))

        wait_for(lambda: status().get("state") == "degraded", 30)
        assert cli("b", "sync", "--wait")[0] == 1
        assert status()["counters"]["failures"] == 0
        assert all(p.is_file() for p in left)
        assert cli("b", "takeover")[0] == 0  # the owner now: its crash is settled
        wait_for(lambda: not any(p.exists() for p in left), 30)  # its objects are gone
        assert cli("b", "sync", "--wait")[0] == 0
    finally:
        assert stop_daemon(proc) == 0
    assert cli("b", "verify", "--all")[0] == 0
    assert "Traceback" not in (tmp_path / "b.log").read_text()
