"""Daemon start: the claim of the system id (which settles for CLAIM_SETTLE on a first
claim) runs while the store is reconciled, but a crash's upload is settled only by the
owner, after the claim."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from akoshad.config import load_settings
from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.recovery import Recovery
from akoshad.runtime.daemon import Daemon
from akoshad.store.db import StateDB
from akoshad.targets import Target


def _daemon(tmp_path: Path) -> Daemon:
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.json").write_text('{"a": 1}')
    settings = load_settings(
        environ={"HOME": str(tmp_path)},
        overrides={
            "data_dir": str(data),
            "state_dir": str(tmp_path / "state"),
            "local_target_dir": str(tmp_path / "outbox"),
            "socket_path": str(tmp_path / "akoshad.sock"),
            "cloud_sync": {"system_id": "startup-test"},
        },
    )
    return Daemon(settings)


async def test_the_store_is_reconciled_while_the_claim_settles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path)
    real = OwnerGate.refusal
    seen: list[str] = []

    async def claim_after_reconcile(
        gate: OwnerGate, target: Target, *, force: bool = False
    ) -> str | None:
        if force:  # the start's claim: still settling when the store is reconciled
            await asyncio.wait_for(daemon.feed.reconciled.wait(), 10)
            seen.append("reconciled before the claim ended")
        return await real(gate, target, force=force)

    monkeypatch.setattr(OwnerGate, "refusal", claim_after_reconcile)
    async with AsyncExitStack() as stack:
        await daemon.startup(stack)
        assert seen == ["reconciled before the claim ended"]
        assert [i.path for i in await daemon.state.queue_items()] == ["a.json"]
        owner = daemon.parts.owners.lease(daemon.parts.primary.name)
        assert owner is not None and owner.get("ours") is True


async def test_a_crashed_upload_is_settled_after_the_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path)
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    await state.begin_upload("20260101T000000000000Z-aaaaaa", "local", "local", {})
    await state.close()
    order: list[str] = []
    real_claim, real_recover = OwnerGate.refusal, Recovery.recover

    async def claim(gate: OwnerGate, target: Target, *, force: bool = False) -> str | None:
        got = await real_claim(gate, target, force=force)
        order.append("claimed")
        return got

    async def recover(self: Recovery, targets: dict[str, Any]) -> None:
        order.append("recover")
        await real_recover(self, targets)

    monkeypatch.setattr(OwnerGate, "refusal", claim)
    monkeypatch.setattr(Recovery, "recover", recover)
    async with AsyncExitStack() as stack:
        await daemon.startup(stack)
    assert order[:2] == ["claimed", "recover"]
