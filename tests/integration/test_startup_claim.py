"""Daemon start: the claim of the system id (which settles for CLAIM_SETTLE on a first
claim) runs while the store is reconciled and the first pass captures, but a crash's upload
is settled only by the owner, after the claim, and nothing is sent before the claim is
answered (a claim lost during the settle sends nothing)."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from akoshad.config import load_settings
from akoshad.names import EXIT_FAIL, EXIT_OK
from akoshad.pipeline.drain import Drain
from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.recovery import Recovery
from akoshad.pipeline.upload import Uploader
from akoshad.runtime.daemon import Daemon
from akoshad.storage.owner import OwnerRecord, Ownership
from akoshad.store.db import StateDB
from akoshad.targets import Target
from tests.helpers import manifests


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
    real = OwnerGate._refusal
    seen: list[str] = []

    async def claim_after_reconcile(gate: OwnerGate, target: Target, *, force: bool) -> str | None:
        if force:  # the start's claim: still settling when the store is reconciled
            await asyncio.wait_for(daemon.feed.reconciled.wait(), 10)
            seen.append("reconciled before the claim ended")
        return await real(gate, target, force=force)

    monkeypatch.setattr(OwnerGate, "_refusal", claim_after_reconcile)
    async with AsyncExitStack() as stack:
        await daemon.startup(stack)
        assert seen == ["reconciled before the claim ended"]
        assert [i.path for i in await daemon.state.queue_items()] == ["a.json"]
        assert await daemon.parts.owners.refusal(daemon.parts.primary) is None
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
    real_claim, real_recover = OwnerGate._refusal, Recovery.recover

    async def claim(gate: OwnerGate, target: Target, *, force: bool) -> str | None:
        got = await real_claim(gate, target, force=force)
        order.append("claimed")
        return got

    async def recover(self: Recovery, targets: dict[str, Any]) -> None:
        order.append("recover")
        await real_recover(self, targets)

    monkeypatch.setattr(OwnerGate, "_refusal", claim)
    monkeypatch.setattr(Recovery, "recover", recover)
    async with AsyncExitStack() as stack:
        await daemon.startup(stack)
    assert order[:2] == ["claimed", "recover"]


def _timeline(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, events: list[tuple[str, bool]]
) -> None:
    """Record (event, whether the start's claim was answered by then): the captures and
    the first write of an upload."""
    real_claim, real_capture, real_upload = (
        OwnerGate._refusal,
        Drain.capture_all,
        Uploader.upload,
    )
    answered = asyncio.Event()

    async def claim(gate: OwnerGate, target: Target, *, force: bool) -> str | None:
        try:
            return await real_claim(gate, target, force=force)
        finally:
            answered.set()

    async def capture_all(drain: Drain, *args: Any, **kwargs: Any) -> Any:
        events.append(("capture", answered.is_set()))
        return await real_capture(drain, *args, **kwargs)

    async def upload(uploader: Uploader, *args: Any, **kwargs: Any) -> None:
        events.append(("upload", answered.is_set()))
        await real_upload(uploader, *args, **kwargs)

    monkeypatch.setattr(OwnerGate, "_refusal", claim)
    monkeypatch.setattr(Drain, "capture_all", capture_all)
    monkeypatch.setattr(Uploader, "upload", upload)


async def test_the_first_pass_captures_while_the_claim_settles_and_sends_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path)
    events: list[tuple[str, bool]] = []
    _timeline(daemon, monkeypatch, events)
    assert await daemon.run_once() == EXIT_OK
    assert events == [("capture", False), ("upload", True)]
    assert len(manifests(tmp_path / "outbox", "startup-test")) == 1


async def test_a_claim_lost_while_settling_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path)
    events: list[tuple[str, bool]] = []
    _timeline(daemon, monkeypatch, events)
    real_write = Ownership._write

    async def write(own: Ownership, how: Any, previous: OwnerRecord | None) -> OwnerRecord:
        async def other_host_claims() -> None:  # its write lands during our settle
            await own.settling.wait()
            other = OwnerRecord("f" * 32, "other-host", "2026-01-01T00:00:00+00:00", "x")
            await own.target.put_bytes(own.key, other.to_bytes(), "application/json")

        task = asyncio.create_task(other_host_claims())
        try:
            return await real_write(own, how, previous)
        finally:
            await task

    monkeypatch.setattr(Ownership, "_write", write)
    assert await daemon.run_once() == EXIT_FAIL
    assert events == [("capture", False)]  # captured while settling, never sent
    assert manifests(tmp_path / "outbox", "startup-test") == []
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    try:
        (item,) = await state.queue_items()
        assert item.path == "a.json" and "other-host" in (item.last_error or "")
    finally:
        await state.close()
