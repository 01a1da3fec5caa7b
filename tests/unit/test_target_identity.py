"""A target's identity in the state, and what is forgotten when it changes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

from akoshad.runtime.target_identity import forget_changed_targets, seed_ledger, target_identity
from akoshad.store.db import StateDB
from tests.f2_rig import rig_settings

SID = "ident"
BUCKET = {"cloud_bucket": "backups", "cloud_endpoint": "http://127.0.0.1:9000"}


def _cloud(tmp_path: Path, **cloud: str) -> str:
    settings = rig_settings(tmp_path, SID, cloud_sync={"system_id": SID, **BUCKET, **cloud})
    return target_identity(settings, "cloud")


def test_an_identity_changes_with_the_place_and_the_system_id_only(tmp_path: Path) -> None:
    base = _cloud(tmp_path)
    assert _cloud(tmp_path, cloud_bucket="other") != base
    assert _cloud(tmp_path, cloud_endpoint="http://127.0.0.1:9001") != base
    assert _cloud(tmp_path, system_id="another") != base
    # the same place written another way
    assert _cloud(tmp_path, cloud_endpoint="http://127.0.0.1:9000/") == base
    assert _cloud(tmp_path, cloud_region="eu-west-1") == base
    local = rig_settings(tmp_path, SID)
    moved = rig_settings(tmp_path, SID, local_target_dir=str(tmp_path / "elsewhere"))
    assert target_identity(local, "local") != target_identity(moved, "local")


def test_the_identity_holds_no_credentials_or_names(tmp_path: Path) -> None:
    identity = _cloud(tmp_path, cloud_endpoint="http://127.0.0.1:9000")
    assert "127.0.0.1" not in identity and "backups" not in identity and len(identity) == 64


async def test_a_changed_target_is_forgotten_and_an_unchanged_one_kept(tmp_path: Path) -> None:
    old = rig_settings(tmp_path, SID, cloud_sync={"system_id": SID, **BUCKET})
    new = rig_settings(
        tmp_path, SID, cloud_sync={"system_id": SID, **BUCKET, "cloud_bucket": "moved"}
    )
    state = StateDB(tmp_path / "state.db")
    await state.open()
    try:
        # a fresh state adopts what it is given
        assert await forget_changed_targets(state, old, ["local", "cloud"], "cloud") == []
        for upload_id, target in (("u1", "cloud"), ("u2", "local"), ("u3", "cloud")):
            await state.begin_upload(upload_id, target, "cloud", {})

        def commit(c: object) -> None:
            StateDB.finish_upload(c, upload_id="u1", outcome="completed")  # type: ignore[arg-type]
            StateDB.finish_upload(c, upload_id="u2", outcome="completed")  # type: ignore[arg-type]

        await state.transaction(commit)  # u3 stays in progress
        await state.mark_memories_uploaded(["m1"], "u1")
        await state.transaction(
            lambda c: c.execute("INSERT INTO kv (key, value) VALUES ('last_drill', '{}')")
        )
        assert await forget_changed_targets(state, new, ["local", "cloud"], "cloud") == ["cloud"]
        assert await state.uploaded_memory_ids(["m1"]) == set()
        assert [u for u, _t, _m in await state.in_progress_uploads()] == []
        assert (await state.last_success_by_target()).keys() == {"local"}
        assert await state.get_kv("last_drill") is None
        # the next start, same settings: nothing more is forgotten
        assert await forget_changed_targets(state, new, ["local", "cloud"], "cloud") == []
    finally:
        await state.close()


class _SlowRecovery:
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.calls = 0

    async def rebuild_lost_ledger(self, target: object) -> int:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return 1


async def test_a_ledger_is_seeded_only_from_a_target_that_answers_in_time() -> None:
    """A target that failed to start is not read (the start would hang on it); one that
    does not answer in time is given up: the ledger stays empty, the next upload sends
    every file (before: the start blocked until the server answered, signals unheard)."""
    target = SimpleNamespace(name="cloud")
    down = _SlowRecovery(0)
    await seed_ledger(down, target, False)  # type: ignore[arg-type]
    assert down.calls == 0
    hung = _SlowRecovery(60)
    started = time.monotonic()
    await seed_ledger(hung, target, True, within=0.2)  # type: ignore[arg-type]
    assert hung.calls == 1 and time.monotonic() - started < 5
    quick = _SlowRecovery(0)
    await seed_ledger(quick, target, True)  # type: ignore[arg-type]
    assert quick.calls == 1
