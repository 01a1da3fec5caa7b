"""A takeover by another machine while this one's upload is on the wire: an upload that
outlasts the ownership check's interval asks again before its manifest, so the previous
owner does not commit an upload under a system id it no longer owns (whose packs the new
owner's prune may already have swept)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from akoshad.errors import TransientError
from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.report import PassReport
from akoshad.pipeline.stats import Stats
from akoshad.storage.owner import owner_key
from tests.f2_rig import HeldPuts, Rig, close_rig, open_rig, rig_settings

SID = "handover"
INTERVAL = 0.5  # the ownership check's interval (a minute in the daemon)


class HeldPacks(HeldPuts):
    """The local outbox; once ``hold`` is armed, a pack's PUT waits for ``go``."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, lambda key: "/packs/" in key)


async def _open(tmp_path: Path, target: HeldPacks) -> Rig:
    """A rig over ``target`` whose ownership check is read anew every INTERVAL."""
    rig = await open_rig(rig_settings(tmp_path, SID), target, tmp_path / "state" / "state.db")
    rig.drain.owners = OwnerGate(
        tmp_path / "state", SID, rig.drain.stats, interval=INTERVAL, settle=0.01
    )
    return rig


async def _second_upload_outlasting(
    rig: Rig, target: HeldPacks, meanwhile: Callable[[], Awaitable[object]]
) -> tuple[str, PassReport]:
    """One upload, then a second whose pack is held on the wire while ``meanwhile`` runs
    and the ownership check's interval passes: the first's id and the second's report."""
    rig.write("a.json", b'{"a": 1}')
    (first,) = await rig.sync()
    assert first.upload_id and not first.error
    rig.write("a.json", b'{"a": 2}')
    target.hold = True
    syncing = asyncio.create_task(rig.sync())
    await asyncio.wait_for(target.holding.wait(), 30)  # the pack is on the wire
    await meanwhile()
    await asyncio.sleep(INTERVAL * 1.5)  # the upload outlasts the check's interval
    target.go.set()
    (late,) = await asyncio.wait_for(syncing, 30)
    return first.upload_id, late


async def test_an_upload_that_outlasts_a_takeover_commits_nothing(tmp_path: Path) -> None:
    target = HeldPacks(tmp_path / "outbox")
    rig = await _open(tmp_path, target)
    try:
        other = OwnerGate(tmp_path / "other-state", SID, Stats(), settle=0.01)
        # another machine owns the system id from then on
        first_id, late = await _second_upload_outlasting(
            rig, target, lambda: other.takeover(target)
        )
        assert await rig.uploads() == [first_id]  # no manifest of the old owner
        assert late.error is not None and "owned by" in late.error, late
        assert not late.upload_id
        assert late.waiting and rig.drain.stats.counters.failures == 0  # a wait, no failure
        assert await rig.state.queue_depth() == 1  # the change waits, not lost
        outbox = tmp_path / "outbox"
        packs = {
            p.relative_to(outbox).as_posix() for p in outbox.rglob("packs/**/*") if p.is_file()
        }
        kept = {part.key for f in (await rig.files(first_id)).values() for part in f.parts}
        assert kept and packs == kept  # what the refused attempt sent is gone
    finally:
        await close_rig(rig)


class UnreadableOwnerAfterPacks(HeldPacks):
    """As HeldPacks; once ``owner_down`` is set, reading the owner record fails."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.owner_down = False
        self.owner_reads_failed = 0

    async def read(self, key: str) -> AsyncIterator[bytes]:
        if self.owner_down and key.endswith("/owner.json"):
            self.owner_reads_failed += 1
            raise TransientError("the owner record could not be read just now")
        async for piece in super().read(key):
            yield piece


async def test_an_owner_record_unreadable_before_the_manifest_commits_nothing(
    tmp_path: Path,
) -> None:
    """The check before the manifest cannot read the owner record: whether another machine
    took the id over (and its prune swept this upload's packs, which live outside the
    upload's folder) is unknown, so the upload commits nothing, removes what it sent, and
    its change waits for the next pass, which lands once the record can be read."""
    target = UnreadableOwnerAfterPacks(tmp_path / "outbox")
    rig = await _open(tmp_path, target)
    try:

        async def owner_down() -> None:
            target.owner_down = True

        first_id, late = await _second_upload_outlasting(rig, target, owner_down)
        assert target.owner_reads_failed >= 1  # the check before the manifest met it
        assert late.error is not None and not late.upload_id, late
        assert await rig.uploads() == [first_id]
        assert await rig.state.queue_depth() == 1  # the change waits, not lost
        # the target did not answer: a failed pass (counted, a failure event, the breaker
        # hears of it), not one that waits for another owner
        assert not late.waiting and rig.drain.stats.counters.failures == 1
        # the next pass meets the unreadable record at its start: failed too
        await asyncio.sleep(INTERVAL * 1.5)
        await rig.state.transaction(lambda c: c.execute("UPDATE queue SET next_attempt = 0"))
        refused = await rig.drain.run_pass()
        assert refused is not None and refused.error and not refused.waiting, refused
        assert "cannot check the owner" in refused.error
        assert rig.drain.stats.counters.failures == 2
        target.owner_down, target.hold = False, False
        (row,) = await rig.state.queue_items()
        again = await rig.drain.drain_once(rig.target, now=row.next_attempt + 1)
        assert again is not None and again.upload_id and again.error is None, again
        assert await rig.restore(again.upload_id) == rig.on_disk()
    finally:
        await close_rig(rig)


class OwnerUnreadableOnceWritten(HeldPacks):
    """As HeldPacks; once ``armed``, the owner record cannot be read after it is written."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.armed = False
        self.written = False

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        self.written = self.written or (self.armed and key.endswith("/owner.json"))
        return await super().put_bytes(key, data, content_type)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        if self.written and key.endswith("/owner.json"):
            raise TransientError("the owner record could not be read just now")
        async for piece in super().read(key):
            yield piece


async def test_a_takeover_whose_read_back_fails_leaves_no_stale_ledger(tmp_path: Path) -> None:
    """A takeover whose record landed but could not be read back failed ("takeover failed")
    with the record this machine's and its ledger kept as it was when another machine took
    the id: the next check found this machine the owner and its next upload pointed at what
    the other owner may have pruned or repacked since. The ledger is now forgotten before
    the record is written: the next upload sends every file."""
    from akoshad.runtime.ownership import _takeover

    target = OwnerUnreadableOnceWritten(tmp_path / "outbox")
    rig = await _open(tmp_path, target)
    try:
        rig.write("a.json", b'{"a": 1}')
        (first,) = await rig.sync()
        assert first.upload_id and await rig.state.ledger(target.name)
        other = OwnerGate(tmp_path / "other-state", SID, Stats(), settle=0.01)
        await other.takeover(target)  # another machine owns the id (and may prune) now
        gate = rig.drain.owners
        assert gate is not None
        target.armed = True
        with pytest.raises(TransientError):
            await _takeover(rig.state, gate, target)
        mine = await gate.machine()
        assert (
            f'"owner_id": "{mine.owner_id}"' in (tmp_path / "outbox" / owner_key(SID)).read_text()
        )
        assert await rig.state.ledger(target.name) == {}  # nothing stale to dedupe against
    finally:
        await close_rig(rig)
