"""Daemon start: the check of who owns the system id runs while the store is reconciled;
no claim then (the first machine that uploads owns the id). The first pass's claim (which
settles for CLAIM_SETTLE on a first claim where the target cannot create the record only
when its key is free: an S3 server that ignores If-None-Match) runs while it captures, but
a crash's upload is settled only by the owner, after the claim, and nothing is sent
before the claim is answered (a claim lost during the settle sends nothing). The tests of
the settle make the local target answer as such a server does (``local_target_settles``)."""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest

from akoshad.config import load_settings
from akoshad.errors import TransientError
from akoshad.names import EXIT_FAIL, EXIT_OK
from akoshad.pipeline import packing
from akoshad.pipeline.drain import Drain
from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.packing import PackSender
from akoshad.pipeline.recovery import Recovery
from akoshad.runtime.daemon import Daemon
from akoshad.storage.owner import OWNER_NAME, OwnerRecord, Ownership
from akoshad.storage.packs import PackWriter
from akoshad.store.db import StateDB
from akoshad.targets import Target
from akoshad.targets.local import LocalTarget
from tests.helpers import manifests


@pytest.fixture
def local_target_settles(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local target as a target that cannot tell whether a key was free (what an S3
    server that ignores If-None-Match makes of it): a first claim settles."""

    async def unchecked(self: LocalTarget, key: str, data: bytes, content_type: str) -> str:
        await self.put_bytes(key, data, content_type)
        return "unchecked"

    monkeypatch.setattr(LocalTarget, "create_exclusive", unchecked)


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


async def test_the_start_claims_nothing_and_the_first_upload_claims_the_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first machine that uploads owns the id: a start only reads the record (while
    the store is reconciled), so a daemon with nothing to send takes no id."""
    daemon = _daemon(tmp_path)
    real = OwnerGate._refusal
    seen: list[str] = []

    async def check_after_reconcile(
        gate: OwnerGate, target: Target, *, force: bool, claim: bool = True
    ) -> str | None:
        if not claim:  # the start's check: still running when the store is reconciled
            await asyncio.wait_for(daemon.feed.reconciled.wait(), 10)
            seen.append("reconciled before the check ended")
        return await real(gate, target, force=force, claim=claim)

    monkeypatch.setattr(OwnerGate, "_refusal", check_after_reconcile)
    record = tmp_path / "outbox" / "systems" / "startup-test" / OWNER_NAME
    async with AsyncExitStack() as stack:
        await daemon.startup(stack)
        assert not record.exists()  # nothing claimed by the start
        assert daemon.parts.owners.lease(daemon.parts.primary.name) is None
        assert seen == ["reconciled before the check ended"]
        assert [i.path for i in await daemon.state.queue_items()] == ["a.json"]
        assert await daemon.parts.owners.refusal(daemon.parts.primary) is None  # an upload's
        owner = daemon.parts.owners.lease(daemon.parts.primary.name)
        assert owner is not None and owner.get("ours") is True and record.exists()


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

    async def claim(
        gate: OwnerGate, target: Target, *, force: bool, claim: bool = True
    ) -> str | None:
        got = await real_claim(gate, target, force=force, claim=claim)
        order.append("claimed" if claim else "checked")
        return got

    async def recover(self: Recovery, targets: dict[str, Any]) -> None:
        order.append("recover")
        await real_recover(self, targets)

    monkeypatch.setattr(OwnerGate, "_refusal", claim)
    monkeypatch.setattr(Recovery, "recover", recover)
    async with AsyncExitStack() as stack:
        await daemon.startup(stack)
    assert order[:3] == ["checked", "claimed", "recover"]


def _timeline(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch, events: list[tuple[str, bool]]
) -> None:
    """Record (event, whether the start's claim was answered by then): the captures, the
    packing of the files and each write to the target other than the owner record (a
    pack, a document, the manifest)."""
    real_claim, real_capture, real_chunk = (
        OwnerGate._refusal,
        Drain.capture_all,
        PackSender._chunk_files,
    )
    real_put_file, real_put_bytes = LocalTarget.put_object_file, LocalTarget.put_bytes
    answered = asyncio.Event()
    packing = threading.Event()

    async def claim(
        gate: OwnerGate, target: Target, *, force: bool, claim: bool = True
    ) -> str | None:
        if not claim:  # the start's check (no owner yet: the first pass claims)
            return await real_claim(gate, target, force=force, claim=False)
        try:
            got = await real_claim(gate, target, force=force)
            await asyncio.to_thread(packing.wait, 10)  # answered once the first pass packs
            return got
        finally:
            answered.set()

    async def capture_all(drain: Drain, *args: Any, **kwargs: Any) -> Any:
        events.append(("capture", answered.is_set()))
        return await real_capture(drain, *args, **kwargs)

    def chunk_files(sender: PackSender, *args: Any) -> Any:
        events.append(("pack", answered.is_set()))  # in a thread: read by the loop later
        packing.set()
        return real_chunk(sender, *args)

    async def put_object_file(target: LocalTarget, key: str, *args: Any) -> int:
        events.append(("write", answered.is_set()))
        return await real_put_file(target, key, *args)

    async def put_bytes(target: LocalTarget, key: str, data: bytes, content_type: str) -> int:
        if not key.endswith(f"/{OWNER_NAME}"):
            events.append(("write", answered.is_set()))
        return await real_put_bytes(target, key, data, content_type)

    monkeypatch.setattr(OwnerGate, "_refusal", claim)
    monkeypatch.setattr(Drain, "capture_all", capture_all)
    monkeypatch.setattr(PackSender, "_chunk_files", chunk_files)
    monkeypatch.setattr(LocalTarget, "put_object_file", put_object_file)
    monkeypatch.setattr(LocalTarget, "put_bytes", put_bytes)


async def _history(tmp_path: Path) -> list[Any]:
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    try:
        return await state.transaction(lambda c: c.execute("SELECT * FROM uploads").fetchall())
    finally:
        await state.close()


@pytest.mark.usefixtures("local_target_settles")
async def test_the_first_pass_captures_while_the_claim_settles_and_sends_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path)
    events: list[tuple[str, bool]] = []
    _timeline(daemon, monkeypatch, events)
    assert await daemon.run_once() == EXIT_OK
    # packed while the claim settled too; every write after the claim's answer
    assert events[:2] == [("capture", False), ("pack", False)]
    assert [e for e in events[2:] if e[0] != "write" or not e[1]] == []
    assert ("write", True) in events
    assert len(manifests(tmp_path / "outbox", "startup-test")) == 1


@pytest.mark.usefixtures("local_target_settles")
async def test_a_claim_lost_while_settling_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = _daemon(tmp_path)
    events: list[tuple[str, bool]] = []
    _timeline(daemon, monkeypatch, events)
    real_settle = Ownership._settle

    async def settle(own: Ownership) -> None:
        async def other_host_claims() -> None:  # its write lands during our settle
            await own.settling.wait()
            other = OwnerRecord("f" * 32, "other-host", "2026-01-01T00:00:00+00:00", "x")
            await own.target.put_bytes(own.key, other.to_bytes(), "application/json")

        task = asyncio.create_task(other_host_claims())
        try:
            await real_settle(own)
        finally:
            await task

    monkeypatch.setattr(Ownership, "_settle", settle)
    assert await daemon.run_once() == EXIT_FAIL
    # captured and packed while settling, never sent, no upload recorded
    assert events == [("capture", False), ("pack", False)]
    assert manifests(tmp_path / "outbox", "startup-test") == []
    assert await _history(tmp_path) == []
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    try:
        (item,) = await state.queue_items()
        assert item.path == "a.json" and "other-host" in (item.last_error or "")
    finally:
        await state.close()


@pytest.mark.usefixtures("local_target_settles")
async def test_an_upload_lost_before_the_claim_is_answered_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Packing fails while the claim settles: nothing was sent, so nothing is cleaned up
    in the target (no listing of an upload's folder) and no upload is recorded; the
    change waits for its retry."""
    daemon = _daemon(tmp_path)
    events: list[tuple[str, bool]] = []
    _timeline(daemon, monkeypatch, events)
    chunk = PackSender._chunk_files  # _timeline's, which records the packing

    def fails(sender: PackSender, *args: Any) -> Any:
        chunk(sender, *args)
        raise TransientError("a.json changed between its capture and its upload")

    listed: list[str] = []
    real_list = LocalTarget.list_keys

    def list_keys(target: LocalTarget, prefix: str) -> Any:
        listed.append(prefix)
        return real_list(target, prefix)

    monkeypatch.setattr(PackSender, "_chunk_files", fails)
    monkeypatch.setattr(LocalTarget, "list_keys", list_keys)
    assert await daemon.run_once() == EXIT_FAIL
    assert events == [("capture", False), ("pack", False)]
    assert [p for p in listed if p.startswith("systems/startup-test/uploads/2")] == []
    assert await _history(tmp_path) == []
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    try:
        (item,) = await state.queue_items()
        assert "changed between its capture" in (item.last_error or "")
    finally:
        await state.close()


@pytest.mark.usefixtures("local_target_settles")
async def test_packing_goes_on_while_the_claim_settles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small packs: a 6 MiB file makes some twenty; the claim is answered only once more
    # packs wait, staged, than the five that the sending keeps after the claim
    monkeypatch.setattr(packing, "PackWriter", functools.partial(PackWriter, target=256 * 1024))
    daemon = _daemon(tmp_path)
    (tmp_path / "data" / "big.bin").write_bytes(random.Random(7).randbytes(6 * 1024 * 1024))
    staged = tmp_path / "state" / "packs"
    real_claim = OwnerGate._refusal
    waiting: list[int] = []
    writes_before: list[str] = []

    def staged_packs() -> int:
        return len(list(staged.glob("**/*"))) if staged.exists() else 0

    def wait_for_packs() -> None:
        deadline = time.monotonic() + 10
        while staged_packs() < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        waiting.append(staged_packs())

    async def claim(
        gate: OwnerGate, target: Target, *, force: bool, claim: bool = True
    ) -> str | None:
        got = await real_claim(gate, target, force=force, claim=claim)
        if claim and not waiting:  # the first pass's claim (the start only checks)
            await asyncio.to_thread(wait_for_packs)
            writes_before.extend(p.name for p in (tmp_path / "outbox").rglob("*") if p.is_file())
        return got

    monkeypatch.setattr(OwnerGate, "_refusal", claim)
    assert await daemon.run_once() == EXIT_OK
    # twelve waiting for the answer, one handed over, one ready, one filling
    assert waiting and 8 <= waiting[0] <= packing.PACKS_BEFORE_GATE + 3, waiting
    assert writes_before == [OWNER_NAME]  # nothing but the claim before its answer
    assert len(manifests(tmp_path / "outbox", "startup-test")) == 1
    assert staged_packs() == 0
