"""``akoshad verify`` and ``akoshad restore`` run from the command line, beside a daemon that
may prune: a repack that moves the chunks of the upload they read (and deletes the old
pack) after they loaded its documents must not make them report damage that is not there.
They reload the upload's manifest and documents once and read the file again from where its
chunks are now; damage that is still there afterwards is reported as before."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from akoshad.errors import IntegrityError
from akoshad.restore.readback import restore_upload
from akoshad.restore.verify import verify_ledger, verify_upload
from akoshad.runtime.prune_scheduler import PruneScheduler
from akoshad.storage import format2
from akoshad.store.db import STATE_FILE, read_ledger
from tests.f2_rig import Rig, close_rig, open_rig, rig_settings
from tests.holding import KEEP_LAST_ONE, HoldingTarget, pack_ranges, prune_scheduler

SID = "readersprune"
MiB = 1024 * 1024
SMALL = 12


# what a reader waits on while the prune runs: every ranged read of a pack (a reader's,
# not the prune's whole reads), the first read of an index part (the reader's: the prune
# reads them after), the first ``head`` of a pack
HOLDS: dict[str, Callable[[HoldingTarget], None]] = {
    "/packs/": lambda t: setattr(t, "hold", pack_ranges),
    "/index/": lambda t: t.hold_once(lambda op, key: op == "read" and "/index/" in key),
    "head": lambda t: t.hold_once(lambda op, key: op == "head" and "/packs/" in key),
}


async def _two_uploads(tmp_path: Path) -> tuple[Rig, HoldingTarget, PruneScheduler]:
    """Two uploads of a large file whose second half changed, beside small files that did
    not: with ``keep_last: 1`` a prune drops the first and repacks the pack the kept upload
    shares with it (half of it dead), small files included."""
    settings = rig_settings(tmp_path, SID, retention=KEEP_LAST_ONE)
    target = HoldingTarget(tmp_path / "outbox")
    rig = await open_rig(settings, target, tmp_path / "state/state.db")
    big = bytearray(random.Random(1).randbytes(8 * MiB))
    rig.write("big.bin", bytes(big))
    for n in range(SMALL):
        rig.write(f"small/{n:02}.json", random.Random(n).randbytes(3000))
    await rig.sync()
    big[4 * MiB :] = random.Random(2).randbytes(4 * MiB)
    rig.write("big.bin", bytes(big))
    await rig.sync()
    prunes = prune_scheduler(settings, rig.state, target)
    return rig, target, prunes


async def _beside_prune(
    rig: Rig,
    prunes: PruneScheduler,
    read: Callable[[], Coroutine[Any, Any, Any]],
    held: str = "/packs/",
) -> Any:
    """``read`` with a whole prune run while its reads of ``held`` objects wait (packs: its
    documents loaded before the repack, its chunks read after; index parts: its manifest
    read before, its documents after); the small files' chunks moved."""
    target = rig.target
    assert isinstance(target, HoldingTarget)
    kept = (await rig.uploads())[-1]
    moved = (await rig.files(kept))["small/00.json"].chunks[0].key
    HOLDS[held](target)
    reader: asyncio.Task[Any] = asyncio.create_task(read())
    await asyncio.wait_for(target.held.wait(), 30)
    pruned = await asyncio.wait_for(prunes.prune_now(), 60)
    assert pruned["ok"] and pruned["packs_repacked"] >= 1, pruned
    assert await target.head(moved) is None, "the small files' pack was not repacked"
    target.go.set()
    return await asyncio.wait_for(reader, 60)


async def test_verify_beside_a_repack_reports_no_false_damage(tmp_path: Path) -> None:
    rig, target, prunes = await _two_uploads(tmp_path)
    try:
        kept = (await rig.uploads())[-1]
        report = await _beside_prune(rig, prunes, lambda: verify_upload(target, SID, kept))
        assert report.problems == [] and report.checked == 1 + SMALL
    finally:
        await close_rig(rig)


async def test_restore_beside_a_repack_restores_every_file(tmp_path: Path) -> None:
    rig, target, prunes = await _two_uploads(tmp_path)
    try:
        kept = (await rig.uploads())[-1]
        dest = tmp_path / "restored"
        count = await _beside_prune(rig, prunes, lambda: restore_upload(target, SID, kept, dest))
        assert count == 1 + SMALL
        restored = {p.relative_to(dest).as_posix(): p.read_bytes() for p in dest.rglob("*.*")}
        assert restored == rig.on_disk()
    finally:
        await close_rig(rig)


async def test_verify_whose_documents_a_repack_replaced_reads_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(format2, "INDEX_INLINE_MAX", 4)  # the entries go to index parts
    rig, target, prunes = await _two_uploads(tmp_path)
    try:
        kept = (await rig.uploads())[-1]
        verify = lambda: verify_upload(target, SID, kept)  # noqa: E731
        report = await _beside_prune(rig, prunes, verify, held="/index/")
        assert report.problems == [] and report.checked == 1 + SMALL
    finally:
        await close_rig(rig)


async def test_damage_that_a_reload_does_not_explain_is_still_named(tmp_path: Path) -> None:
    rig, target, _ = await _two_uploads(tmp_path)
    try:
        kept = (await rig.uploads())[-1]
        pack = (await rig.files(kept))["small/00.json"].chunks[0].key
        await target.delete_keys([pack])
        report = await verify_upload(target, SID, kept)
        assert report.checked == 0 and len(report.problems) == 1 + SMALL, report.problems
        assert all(f"{pack} at " in p and "is missing" in p for p in report.problems)
        dest = tmp_path / "restored"
        problems: list[str] = []
        try:
            await restore_upload(target, SID, kept, dest, problems=problems)
        except IntegrityError as exc:
            assert f"{dest} holds 0 of the {1 + SMALL} file(s)" in str(exc)
        else:
            raise AssertionError("a restore from a deleted pack succeeded")
        assert sorted(problems) == sorted(report.problems)
    finally:
        await close_rig(rig)


async def test_the_ledger_check_beside_a_repack_finds_every_object(tmp_path: Path) -> None:
    rig, target, prunes = await _two_uploads(tmp_path)
    try:
        ledger = read_ledger(rig.settings.state_dir / STATE_FILE, target.name)
        assert ledger is not None
        check = lambda: verify_ledger(target, SID, ledger)  # noqa: E731
        report = await _beside_prune(rig, prunes, check, held="head")
        assert report.problems == [] and report.checked == 1 + SMALL
    finally:
        await close_rig(rig)
