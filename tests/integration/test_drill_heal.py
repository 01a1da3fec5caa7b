"""A drill that finds stored objects missing or damaged has the files that used them sent
again: the next upload is whole, where before every later upload kept pointing at the lost
objects (nothing was sent again: the chunk table said they were stored)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from akoshad.cli.prune import render_prune
from akoshad.events import EventBus
from akoshad.restore.drill_restore import DrillResult
from akoshad.runtime.drills import FOLLOW_UP_SECONDS, DrillScheduler
from akoshad.runtime.prune_scheduler import PruneScheduler
from akoshad.targets.base import Target
from akoshad.targets.local import LocalTarget
from tests.f2_rig import CountingTarget, Rig, close_rig, open_rig, open_sealed_rig, rig_settings
from tests.holding import KEEP_LAST_ONE, prune_scheduler

SID = "drillheal"
MiB = 1024 * 1024


KEEP_TEN = {"keep_last": 10, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}


async def _open(tmp_path: Path, retention: dict[str, int]) -> tuple[Rig, CountingTarget]:
    """A rig over a counting local outbox, pruned with ``retention``."""
    settings = rig_settings(tmp_path, SID, retention=retention)
    target = CountingTarget(tmp_path / "outbox")
    return await open_rig(settings, target, tmp_path / "state/state.db"), target


def _prunes(rig: Rig, target: CountingTarget) -> tuple[PruneScheduler, asyncio.Event]:
    """The daemon's prune scheduler, and the event it wakes the drain with."""
    prunes = prune_scheduler(rig.settings, rig.state, target)
    woken = prunes.wake = asyncio.Event()
    return prunes, woken


def _drills(rig: Rig, target: Target | None = None) -> DrillScheduler:
    drills = DrillScheduler(
        rig.settings,
        state=rig.state,
        target=rig.target if target is None else target,
        events=EventBus(SID),
        stop_event=asyncio.Event(),
        pass_lock=asyncio.Lock(),
    )
    drills.wake = asyncio.Event()
    return drills


async def _drill(drills: DrillScheduler) -> DrillResult:
    result = await drills.drill_once()
    assert result is not None
    return result


def _lose(outbox: Path, key: str, how: str, offset: int = 0) -> None:
    pack = outbox / key
    if how == "missing":
        pack.unlink()
        return
    data = bytearray(pack.read_bytes())
    if how == "header":  # one letter of the sealed chunk at ``offset``'s X25519 share
        at = offset + len(b"age-encryption.org/v1\n-> X25519 ") + 5
        assert data[offset : at - 5].startswith(b"age-encryption.org/v1")
        data[at] = ord("B") if data[at] != ord("B") else ord("C")  # still base64
    else:  # damaged: one byte flipped in the middle, the size kept
        data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))


async def _lost_then_healed(rig: Rig, how: str) -> tuple[str, list[str]]:
    """Upload a store, lose the pack of one of big.bin's chunks, drill (it finds the loss
    and queues the files again), sync: the new upload drills clean and does not use the
    lost pack. Returns the lost key and the uploads."""
    rig.write("other.bin", random.Random(9).randbytes(2 * MiB))
    await rig.sync()  # its own packs: untouched by the loss below
    rig.write("big.bin", random.Random(1).randbytes(3 * MiB))
    rig.write("notes.json", b'{"kept": true}')
    await rig.sync()
    first = (await rig.uploads())[-1]
    files = await rig.files(first)
    lost = files["big.bin"].chunks[-1].key
    untouched = [c.key for c in files["other.bin"].chunks]
    assert lost not in untouched
    _lose(rig.settings.local_target_dir, lost, how, files["big.bin"].chunks[-1].offset)
    drills = _drills(rig)

    bad = await _drill(drills)
    assert not bad.ok and any(p.startswith("big.bin: chunk") for p in bad.problems), bad
    assert lost in bad.damaged_objects
    assert "damaged_objects" not in bad.as_dict()  # the last_drill object is as before
    assert drills.wake is not None and drills.wake.is_set()  # the drain has work
    assert "big.bin" in {i.path for i in await rig.state.queue_items()}
    # the next drill shows it healed in minutes, not a day later: until then status is unsafe
    assert 0 < await drills.due_in() <= FOLLOW_UP_SECONDS

    await rig.sync()
    uploads = await rig.uploads()
    assert len(uploads) == 3
    again = await _drill(drills)
    assert again.ok and again.upload_id == uploads[-1], again.problems
    assert await drills.due_in() > 23 * 3600  # the interval again
    healed = await rig.files(uploads[-1])
    assert lost not in {c.key for f in healed.values() for c in f.chunks}
    assert [c.key for c in healed["other.bin"].chunks] == untouched  # not sent again
    return lost, uploads


@pytest.mark.parametrize("how", ["missing", "damaged"])
async def test_a_lost_pack_found_by_a_drill_is_sent_again(tmp_path: Path, how: str) -> None:
    settings = rig_settings(tmp_path, SID)
    rig = await open_rig(settings, LocalTarget(tmp_path / "outbox"), tmp_path / "state/state.db")
    try:
        _, uploads = await _lost_then_healed(rig, how)
        assert await rig.restore(uploads[-1]) == rig.on_disk()
    finally:
        await close_rig(rig)


@pytest.mark.parametrize("how", ["missing", "damaged", "header"])
async def test_a_lost_sealed_pack_found_by_a_drill_is_sent_again(tmp_path: Path, how: str) -> None:
    """A sealed chunk whose age header is damaged (a letter of its key share changed:
    age then finds no matching key) is damage too, not data sealed to other keys: the
    upload's documents, sealed to the same recipients, opened with the identity."""
    rig = await open_sealed_rig(tmp_path, SID, with_identity=True)
    try:
        _, uploads = await _lost_then_healed(rig, how)
        assert await rig.restore(uploads[-1]) == rig.on_disk()
    finally:
        await close_rig(rig)


class GarblesOnce(LocalTarget):
    """A local target whose first read of ``key`` comes back with a byte changed (a read
    that went wrong on its way, the object itself intact)."""

    def __init__(self, root: Path, key: str) -> None:
        super().__init__(root)
        self.key, self.reads = key, 0

    def _garbled(self, key: str, data: bytes) -> bytes:
        if key != self.key:
            return data
        self.reads += 1
        return bytes([data[0] ^ 0xFF]) + data[1:] if self.reads == 1 else data

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        return self._garbled(key, await super().read_range(key, offset, length))


@pytest.mark.parametrize("file", ["big.bin", "notes.json"])
async def test_a_read_gone_wrong_once_is_read_again_and_sends_nothing(
    tmp_path: Path, file: str
) -> None:
    """A drill whose read of a pack came back damaged once reads the file again; intact
    the second time, nothing is lost (a note says what the first read found) and nothing
    is sent again. Before, the daemon sent every file of that pack again. Damage that is
    really there is still found by the second read (the tests above)."""
    settings = rig_settings(tmp_path, SID)
    rig = await open_rig(settings, LocalTarget(tmp_path / "outbox"), tmp_path / "state/state.db")
    try:
        rig.write("big.bin", random.Random(5).randbytes(3 * MiB))
        rig.write("notes.json", b'{"kept": true}')
        await rig.sync()
        (first,) = await rig.uploads()
        key = (await rig.files(first))[file].chunks[-1].key
        flaky = GarblesOnce(settings.local_target_dir, key)
        drills = _drills(rig, flaky)
        result = await _drill(drills)
        assert flaky.reads >= 2  # garbled once, then read intact
        assert result.ok and not result.problems and not result.damaged_objects, result
        assert len(result.notes) == 1 and "read again intact" in result.notes[0], result.notes
        assert key in result.notes[0]
        assert drills.wake is not None and not drills.wake.is_set()
        assert await rig.state.queue_items() == []
    finally:
        await close_rig(rig)


async def test_a_clean_drill_sends_nothing_again(tmp_path: Path) -> None:
    settings = rig_settings(tmp_path, SID)
    rig = await open_rig(settings, LocalTarget(tmp_path / "outbox"), tmp_path / "state/state.db")
    try:
        rig.write("big.bin", random.Random(2).randbytes(2 * MiB))
        await rig.sync()
        drills = _drills(rig)
        good = await _drill(drills)
        assert good.ok and not good.damaged_objects
        assert drills.wake is not None and not drills.wake.is_set()
        assert await rig.state.queue_items() == []
        assert "big.bin" in await rig.state.ledger(rig.target.name)
    finally:
        await close_rig(rig)


async def test_a_pack_a_prune_finds_missing_is_sent_again(tmp_path: Path) -> None:
    """A prune lists the target: an object that kept uploads reference and the target
    lacks is reported (``missing``) and the files that used it are queued again, the
    drain woken; the next upload is whole."""
    rig, target = await _open(tmp_path, KEEP_LAST_ONE)
    settings = rig.settings
    try:
        rig.write("big.bin", random.Random(3).randbytes(3 * MiB))
        rig.write("notes.json", b'{"kept": true}')
        await rig.sync()
        (first,) = await rig.uploads()
        lost = (await rig.files(first))["big.bin"].chunks[0].key
        _lose(settings.local_target_dir, lost, "missing")
        prunes, woken = _prunes(rig, target)
        result = await prunes.prune_now()
        assert result["missing"] == [lost] and not result["ok"], result
        assert woken.is_set()
        assert result["sent_again"] == 2  # big.bin, and notes.json in the same pack
        assert "2 file(s) that used the missing objects are sent again" in render_prune(result)
        assert "big.bin" in {i.path for i in await rig.state.queue_items()}
        await rig.sync()
        newest = (await rig.uploads())[-1]
        assert newest != first
        assert await rig.restore(newest) == rig.on_disk()
        again = await prunes.prune_now()
        assert again["ok"] and again["missing"] == [], again
    finally:
        await close_rig(rig)


async def test_a_dry_run_prune_sends_nothing_again(tmp_path: Path) -> None:
    rig, target = await _open(tmp_path, KEEP_LAST_ONE)
    settings = rig.settings
    try:
        rig.write("big.bin", random.Random(4).randbytes(2 * MiB))
        await rig.sync()
        (first,) = await rig.uploads()
        _lose(
            settings.local_target_dir, (await rig.files(first))["big.bin"].chunks[0].key, "missing"
        )
        result = await prune_scheduler(settings, rig.state, target).prune_now(dry_run=True)
        assert result["missing"], result
        assert await rig.state.queue_items() == []
        assert "sent_again" not in result and "sent again" not in render_prune(result)
        assert "big.bin" in await rig.state.ledger(rig.target.name)
    finally:
        await close_rig(rig)


def _index_parts(manifest: dict[str, object]) -> list[str]:
    metadata = manifest["metadata"]
    assert isinstance(metadata, dict)
    return [p["key"] for p in metadata["index"]["parts"]]


@pytest.mark.parametrize("how", ["missing", "damaged"])
async def test_a_lost_index_part_is_written_again_by_the_next_upload(
    tmp_path: Path, how: str
) -> None:
    """A drill that cannot read the upload's index (a part lost, or damaged but there) has
    the next upload PUT every shared document again, none taken as stored, and made with
    no file changed: the part, named by its content, is written again whole. A prune in
    between (it fails on that part, and forgets which documents are stored) does not undo
    the request. Before, every later upload went on pointing at the part."""
    rig, target = await _open(tmp_path, KEEP_LAST_ONE)
    settings = rig.settings
    try:
        for i in range(300):  # enough entries for an index in parts
            rig.write(f"d/f{i:04d}.json", b'{"n": %d}' % i)
        await rig.sync()
        (first,) = await rig.uploads()
        lost = _index_parts(await rig.manifest(first))[0]
        _lose(settings.local_target_dir, lost, how)
        drills = _drills(rig)
        bad = await _drill(drills)
        assert not bad.ok and bad.problems[0].startswith(f"manifest of {first}"), bad.problems
        assert bad.documents_unreadable and not bad.damaged_objects
        assert drills.wake is not None and drills.wake.is_set()
        assert len(await rig.state.queue_items()) == 1  # one small file: the upload is made
        pruned = await prune_scheduler(settings, rig.state, target).prune_now()
        assert not pruned["ok"], pruned  # it cannot read the kept upload's index
        await rig.sync()  # no file changed
        newest = (await rig.uploads())[-1]
        assert newest != first and lost in _index_parts(await rig.manifest(newest))
        again = await _drill(drills)
        assert again.ok and again.upload_id == newest, again.problems
        assert await rig.restore(newest) == rig.on_disk()
        assert not await rig.state.documents_rewrite_asked(rig.target.name)  # done
    finally:
        await close_rig(rig)


@pytest.mark.parametrize("how", ["missing", "damaged"])
async def test_a_lost_chunk_list_is_written_again_by_the_next_upload(
    tmp_path: Path, how: str
) -> None:
    """A large file's chunk list (shared by every upload that keeps the file unchanged)
    lost: the drill names that file, restores and checks every other one, and has the
    next upload, made with no file changed, PUT the list again. Before, the drill failed
    the whole upload, and each later upload kept pointing at the lost list."""
    rig, _ = await _open(tmp_path, KEEP_TEN)
    try:
        rig.write("big.bin", random.Random(3).randbytes(24 * MiB))  # past the inline limit
        rig.write("notes.json", b'{"kept": true}')
        await rig.sync()
        (first,) = await rig.uploads()
        entry = next(
            e for e in (await rig.manifest(first))["metadata"]["files"] if e["path"] == "big.bin"
        )
        lost = entry["chunk_list"]["key"]
        _lose(rig.settings.local_target_dir, lost, how)
        drills = _drills(rig)
        bad = await _drill(drills)
        assert not bad.ok and bad.files == 1, bad
        [problem] = bad.problems
        assert problem.startswith(f"'big.bin': chunk list {lost}"), problem
        assert bad.documents_unreadable and not bad.damaged_objects
        assert drills.wake is not None and drills.wake.is_set()
        await rig.sync()  # no file changed
        newest = (await rig.uploads())[-1]
        assert newest != first
        again = await _drill(drills)
        assert again.ok and again.upload_id == newest, again.problems
        assert await rig.restore(newest) == await rig.restore(first) == rig.on_disk()
    finally:
        await close_rig(rig)


@pytest.mark.parametrize("which", [0, 1])
async def test_a_sealed_index_part_with_a_damaged_header_is_written_again(
    tmp_path: Path, which: int
) -> None:
    """A sealed index part whose age header is damaged reads to age as sealed to other
    keys. It is damage when the upload's first part opened with the identity (part 1),
    or, for the first part itself, when the identity opens every name key record of the
    system: the drill has the documents written again (it does not say the daemon needs
    the identity), and the next upload is whole."""
    rig = await open_sealed_rig(tmp_path, SID, with_identity=True)
    try:
        for i in range(300):  # enough entries for an index in parts
            rig.write(f"d/f{i:04d}.json", b'{"n": %d}' % i)
        await rig.sync()
        (first,) = await rig.uploads()
        parts = _index_parts(await rig.manifest(first))
        assert len(parts) >= 2
        _lose(rig.settings.local_target_dir, parts[which], "header")
        drills = _drills(rig)
        bad = await _drill(drills)
        assert not bad.ok and not bad.needs_identity, bad
        assert bad.documents_unreadable and "damaged" in bad.problems[0], bad.problems
        await rig.sync()  # no file changed
        newest = (await rig.uploads())[-1]
        assert newest != first and parts[1] in _index_parts(await rig.manifest(newest))
        again = await _drill(drills)
        assert again.ok and again.upload_id == newest, again.problems
        assert await rig.restore(newest) == rig.on_disk()
    finally:
        await close_rig(rig)


async def test_a_first_index_part_that_does_not_open_is_not_called_damage_in_doubt(
    tmp_path: Path,
) -> None:
    """When the target also holds a name key record the identity cannot open (uploads
    sealed to other recipients may exist), a first index part that does not open is
    reported as needing another identity, as before: it cannot be told from damage (no
    rewrite asked for). The configured identity does not open the newest upload: the
    drill fails (a restore with it would too), it is not a drill that lacked one."""
    from akoshad.storage.crypto import Recipients, seal, write_new_identity
    from akoshad.storage.name_key import keys_prefix

    rig = await open_sealed_rig(tmp_path, SID, with_identity=True)
    try:
        for i in range(300):
            rig.write(f"d/f{i:04d}.json", b'{"n": %d}' % i)
        await rig.sync()
        (first,) = await rig.uploads()
        parts = _index_parts(await rig.manifest(first))
        _lose(rig.settings.local_target_dir, parts[0], "header")
        others = Recipients.parse([write_new_identity(tmp_path / "other.key")])
        record = rig.settings.local_target_dir / f"{keys_prefix(SID)}{'0' * 16}-other.age"
        record.write_bytes(seal(b"{}", others))
        bad = await _drill(_drills(rig))
        assert not bad.ok and not bad.needs_identity and not bad.documents_unreadable, bad
        assert "encrypted to other keys" in bad.problems[0], bad.problems
    finally:
        await close_rig(rig)


async def test_a_loss_an_older_kept_upload_still_shows_is_healed_once(tmp_path: Path) -> None:
    """Uploads kept by retention that used a lost pack report it at every prune until they
    expire; once the newest upload no longer uses it, a prune queues nothing, asks for no
    rewrite of the documents and does not wake the drain."""
    rig, target = await _open(tmp_path, KEEP_TEN)
    settings = rig.settings
    try:
        rig.write("big.bin", random.Random(5).randbytes(2 * MiB))
        await rig.sync()
        rig.write("notes.json", b'{"second": true}')
        await rig.sync()
        newest = (await rig.uploads())[-1]
        lost = (await rig.files(newest))["big.bin"].chunks[0].key
        _lose(settings.local_target_dir, lost, "missing")
        prunes, woken = _prunes(rig, target)
        first = await prunes.prune_now()
        assert first["missing"] == [lost] and woken.is_set()
        await rig.sync()
        assert len(await rig.uploads()) == 3
        woken.clear()
        second = await prunes.prune_now()
        assert second["missing"] == [lost], second  # the two older uploads still use it
        assert not woken.is_set()
        assert await rig.state.queue_items() == []
        assert not await rig.state.documents_rewrite_asked(rig.target.name)
    finally:
        await close_rig(rig)


async def test_a_loss_only_older_uploads_used_queues_nothing(tmp_path: Path) -> None:
    """A pack that only older kept uploads use (the file changed since) found missing by a
    prune: its chunks are forgotten (no later upload dedupes against them), but nothing is
    queued or rewritten: the newest upload is whole."""
    rig, target = await _open(tmp_path, KEEP_TEN)
    settings = rig.settings
    try:
        rig.write("big.bin", random.Random(6).randbytes(2 * MiB))
        await rig.sync()
        (first,) = await rig.uploads()
        old = (await rig.files(first))["big.bin"].chunks[0].key
        rig.write("big.bin", random.Random(7).randbytes(2 * MiB))  # every chunk new
        await rig.sync()
        assert old not in {
            c.key for c in (await rig.files((await rig.uploads())[-1]))["big.bin"].chunks
        }
        assert any(r.key == old for r in (await rig.state.chunks_of(rig.target.name)).values())
        _lose(settings.local_target_dir, old, "missing")
        prunes, woken = _prunes(rig, target)
        result = await prunes.prune_now()
        assert result["missing"] == [old], result
        assert not woken.is_set() and await rig.state.queue_items() == []
        assert not await rig.state.documents_rewrite_asked(rig.target.name)
        assert all(r.key != old for r in (await rig.state.chunks_of(rig.target.name)).values())
    finally:
        await close_rig(rig)
