"""The uploader writes bucket format 2 (real pipeline, real local target; the S3 cases run
the same on SeaweedFS): chunks in packs, read back by the storage engine; a small change to
a large file sends only its changed chunks; many small files are a few PUTs; the state
database knows the chunks, survives a crash and is rebuilt from a format-2 manifest."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import random
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from akoshad.config import Settings
from akoshad.errors import TransientError
from akoshad.fileio import LiveStat
from akoshad.manifest.layout import validate_manifest
from akoshad.pipeline import plan
from akoshad.pipeline.packing import PACKS_IN_FLIGHT
from akoshad.pipeline.recovery import Discarder, Recovery
from akoshad.storage.document_puts import DOCUMENTS_IN_FLIGHT
from akoshad.storage.errors import PackError
from akoshad.store.db import StateDB
from akoshad.targets import make_target
from akoshad.targets.base import Target
from tests.f2_rig import (
    CountingTarget,
    Rig,
    close_rig,
    in_progress_again,
    killed_before_the_commit,
    open_rig,
    rig_settings,
)
from tests.s3server import WeedServer

SID = "f2writer"
FORMAT1_DATA = Path(__file__).resolve().parents[1] / "data" / "format1"
MiB = 1024 * 1024


def noise(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def local_settings(tmp: Path, **overrides: Any) -> Settings:
    return rig_settings(tmp, SID, **overrides)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    settings = local_settings(tmp_path)
    r = await open_rig(settings, CountingTarget(tmp_path / "outbox"), tmp_path / "state/state.db")
    yield r
    await close_rig(r)


def keys_under(root: Path, sub: str) -> list[str]:
    base = root / "systems" / SID / sub
    return sorted(p.relative_to(root).as_posix() for p in base.rglob("*") if p.is_file())


async def first_upload_checks(rig: Rig) -> None:
    """A store of small files and a large one: one format-2 upload that restores."""
    for i in range(30):
        rig.write(f"sessions/s{i}/state.json", f'{{"session": {i}}}'.encode())
    rig.write("reflection.duckdb", noise(1, 3 * MiB))
    (report,) = await rig.sync()
    assert report.upload_id and report.error is None
    (upload,) = await rig.uploads()
    manifest = await rig.manifest(upload)
    assert manifest["metadata"]["format"] == 2
    assert manifest["files"] == []  # no object in the upload's folder (no memories.json)
    assert validate_manifest(manifest) == []  # Akosha's SystemMemoryUploadManifest
    files = await rig.files(upload)
    assert len(files) == 31
    assert all(f.whole is None for f in files.values())  # every file is chunks in packs
    assert len(files["reflection.duckdb"].chunks) > 3
    assert len(files["sessions/s0/state.json"].chunks) == 1
    assert await rig.restore(upload) == rig.on_disk()


async def test_first_upload_is_format_2_and_restores(rig: Rig, tmp_path: Path) -> None:
    await first_upload_checks(rig)
    packs = keys_under(tmp_path / "outbox", "packs")
    assert 1 <= len(packs) <= 2  # 3 MiB of noise and 30 notes: one pack, maybe two
    assert not (tmp_path / "state" / "packs").exists()  # staging cleaned after the pass


async def test_a_small_change_sends_only_the_changed_chunks(rig: Rig) -> None:
    big = bytearray(noise(2, 8 * MiB))
    rig.write("reflection.duckdb", bytes(big))
    rig.write("a.json", b"{}")
    (first,) = await rig.sync()
    assert first.bytes_sent > 8 * MiB
    big[4 * MiB : 4 * MiB + 100] = b"x" * 100  # a page rewritten in the middle
    rig.write("reflection.duckdb", bytes(big))
    (second,) = await rig.sync()
    assert second.files_uploaded == ["reflection.duckdb"] and second.deduplicated == 1
    assert second.bytes_sent < 2 * MiB  # one or two chunks of 256 KiB, not 8 MiB
    uploads = await rig.uploads()
    assert len(uploads) == 2
    assert await rig.restore(uploads[-1]) == rig.on_disk()
    first_files = await rig.files(uploads[0])
    assert (await rig.restore(uploads[0]))["reflection.duckdb"] == noise(2, 8 * MiB)
    shared = {c.sha256 for c in first_files["reflection.duckdb"].chunks}
    now = {c.sha256 for c in (await rig.files(uploads[1]))["reflection.duckdb"].chunks}
    assert len(now) > 10 and len(now - shared) <= 3  # the chunks around the change


async def test_an_unchanged_store_makes_no_upload(rig: Rig) -> None:
    rig.write("a.json", b'{"a": 1}')
    await rig.sync()
    assert len(await rig.uploads()) == 1
    rig.write("a.json", b'{"a": 1}')  # same bytes, new mtime: hashed, found unchanged
    reports = await rig.sync()
    assert all(r.upload_id is None for r in reports)
    assert len(await rig.uploads()) == 1


async def test_many_small_files_are_a_few_puts(rig: Rig) -> None:
    assert isinstance(rig.target, CountingTarget)
    for i in range(2000):
        rig.write(f"notes/n{i:04d}.json", f'{{"note": {i}, "text": "{"x" * (i % 300)}"}}'.encode())
    (report,) = await rig.sync()
    assert report.upload_id and len(report.files_uploaded) == 2000
    packs = [k for k in rig.target.puts if "/packs/" in k]
    index = [k for k in rig.target.puts if "/index/" in k]
    assert len(packs) == 1  # 2,000 small files packed together
    assert len(rig.target.puts) == len(packs) + len(index) + 1  # + the manifest
    assert len(rig.target.puts) < 60
    rig.target.puts.clear()
    rig.write("notes/n0007.json", b'{"changed": true}')
    (second,) = await rig.sync()
    assert second.files_uploaded == ["notes/n0007.json"]
    # one pack, the index part holding the changed entry, the manifest: other parts known
    assert len(rig.target.puts) <= 4, rig.target.puts
    assert await rig.restore((await rig.uploads())[-1]) == rig.on_disk()


class SlowDocuments(CountingTarget):
    """Each document PUT takes a little while; records how many were in flight at once
    and, for the manifest, how many documents had landed when its PUT began."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.in_flight = 0
        self.most = 0
        self.landed: list[str] = []
        self.manifest_after: list[int] = []

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        if key.endswith("/manifest.json"):
            self.manifest_after.append(len(self.landed))
            return await super().put_bytes(key, data, content_type)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            return await super().put_bytes(key, data, content_type)
        finally:
            self.in_flight -= 1
            self.landed.append(key)


async def test_index_parts_go_up_together_and_the_manifest_after_them(tmp_path: Path) -> None:
    target = SlowDocuments(tmp_path / "outbox")
    r = await open_rig(local_settings(tmp_path), target, tmp_path / "state/state.db")
    try:
        for i in range(3000):
            r.write(f"sessions/s{i:04d}/state.json", f'{{"n": {i}}}'.encode())
        (report,) = await r.sync()
        assert report.upload_id and report.error is None
        index = [k for k in target.landed if "/index/" in k]
        assert len(index) > 20
        assert 1 < target.most <= DOCUMENTS_IN_FLIGHT  # together, bounded
        assert target.manifest_after == [len(target.landed)]  # last, after every part
        assert await r.restore((await r.uploads())[-1]) == r.on_disk()
    finally:
        await close_rig(r)


async def test_the_ledger_rows_are_made_off_the_event_loop(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sent files' ledger rows (10,000 on a first sync of small files) are made in a
    thread while the documents go up; the commit writes every one."""
    real, threads = plan.ledger_row, []

    def ledger_row(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread() is threading.main_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(plan, "ledger_row", ledger_row)
    for i in range(300):
        rig.write(f"sessions/s{i:03d}/state.json", f'{{"n": {i}}}'.encode())
    (report,) = await rig.sync()
    assert report.upload_id and len(report.files_uploaded) == 300
    assert len(threads) == 300 and not any(threads)
    ledger = await rig.state.ledger(rig.target.name)
    assert len(ledger) == 300 and {e.upload_id for e in ledger.values()} == {report.upload_id}


class FailingPacks(CountingTarget):
    """Fails every pack PUT after the first ``allow``."""

    allow = 1

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        if "/packs/" in key:
            if self.allow <= 0:
                raise TransientError("the outbox is away")
            self.allow -= 1
        return await super().put_object_file(key, source, size, crc32)


async def test_a_failed_upload_leaves_no_pack_and_the_next_pass_sends_it(
    tmp_path: Path,
) -> None:
    settings = local_settings(tmp_path)
    target = FailingPacks(tmp_path / "outbox")
    rig = await open_rig(settings, target, tmp_path / "state/state.db")
    try:
        rig.write("a.bin", noise(3, 20 * MiB))  # two packs: the second one fails
        await rig.feed.reconcile()
        report = await rig.drain.run_pass()
        assert report is not None and report.error == "the outbox is away"
        assert len([k for k in target.puts if "/packs/" in k]) == 1
        assert keys_under(tmp_path / "outbox", "packs") == []  # its landed pack removed
        assert keys_under(tmp_path / "outbox", "uploads") == []
        assert await rig.state.chunks_of(target.name) == {}
        target.allow = 10
        await asyncio.sleep(0.05)
        await rig.drain.until_empty()
        (upload,) = await rig.uploads()
        assert await rig.restore(upload) == rig.on_disk()
    finally:
        await close_rig(rig)


class SlowPacks(CountingTarget):
    """Each pack PUT takes a while; records how many were in flight at once."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.in_flight = 0
        self.most = 0

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        if "/packs/" not in key:
            return await super().put_object_file(key, source, size, crc32)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(1.0)
            return await super().put_object_file(key, source, size, crc32)
        finally:
            self.in_flight -= 1


async def test_several_packs_go_up_at_once_and_no_more_than_the_limit(tmp_path: Path) -> None:
    settings = local_settings(tmp_path)
    target = SlowPacks(tmp_path / "outbox")
    rig = await open_rig(settings, target, tmp_path / "state/state.db")
    try:
        rig.write("a.bin", noise(6, 90 * MiB))  # six packs
        (report,) = await rig.sync()
        assert report.upload_id and report.error is None
        assert len([k for k in target.puts if "/packs/" in k]) >= 5
        assert 2 <= target.most <= PACKS_IN_FLIGHT
        (upload,) = await rig.uploads()
        assert await rig.restore(upload) == rig.on_disk()
        staged = tmp_path / "state" / "packs"
        assert not staged.exists() or not list(staged.iterdir())  # staging files removed
    finally:
        await close_rig(rig)


class StallingPacks(CountingTarget):
    """A pack PUT started after the first one landed never returns (the process is "killed"
    meanwhile); packs already in flight land."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.first_landed = asyncio.Event()

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        if "/packs/" in key and self.first_landed.is_set():
            await asyncio.Event().wait()
        sent = await super().put_object_file(key, source, size, crc32)
        if "/packs/" in key:
            self.first_landed.set()
        return sent


async def test_an_interrupted_upload_is_recovered_at_the_next_start(tmp_path: Path) -> None:
    settings = local_settings(tmp_path)
    target = StallingPacks(tmp_path / "outbox")
    rig = await open_rig(settings, target, tmp_path / "state/state.db")
    rig.write("a.bin", noise(4, 20 * MiB))
    await rig.feed.reconcile()
    task = asyncio.create_task(rig.drain.run_pass())
    await asyncio.wait_for(target.first_landed.wait(), 30)
    task.cancel()  # the pass dies with a pack landed and its upload in progress
    with pytest.raises(asyncio.CancelledError):
        await task
    assert keys_under(tmp_path / "outbox", "packs")  # packs landed (several go at once)
    assert [u for u, _, _ in await rig.state.in_progress_uploads()]
    await close_rig(rig)

    rig = await open_rig(settings, CountingTarget(tmp_path / "outbox"), tmp_path / "state/state.db")
    try:
        recovery = Recovery(rig.state, SID, Discarder(SID))
        await recovery.recover({rig.target.name: rig.target})
        assert keys_under(tmp_path / "outbox", "packs") == []  # nothing half-committed
        assert await rig.state.in_progress_uploads() == []
        await rig.drain.until_empty()
        (upload,) = await rig.uploads()
        assert await rig.restore(upload) == rig.on_disk()
    finally:
        await close_rig(rig)


async def test_an_upload_whose_manifest_landed_is_committed_from_it(rig: Rig) -> None:
    rig.write("a.bin", noise(5, 3 * MiB))
    rig.write("b.json", b"{}")
    (report,) = await rig.sync()
    assert report.upload_id
    name = rig.target.name
    # as if the process died between the manifest's PUT and the commit
    await rig.state.transaction(lambda c: killed_before_the_commit(c, rig.plans))
    await Recovery(rig.state, SID, Discarder(SID)).recover({name: rig.target})
    ledger = await rig.state.ledger(name)
    assert set(ledger) == {"a.bin", "b.json"}
    ids = ledger["a.bin"].chunk_ids
    assert ids is not None and len(ids) > 3
    table = await rig.state.chunks_of(name)
    assert {sha for sha, _ in ids} <= set(table)
    rig.write("c.json", b"[]")
    (second,) = await rig.sync()
    assert second.files_uploaded == ["c.json"]  # a.bin and b.json known again
    assert await rig.restore(second.upload_id or "") == rig.on_disk()


async def test_a_landed_upload_whose_chunk_list_is_lost_is_kept_and_the_file_sent_again(
    rig: Rig,
) -> None:
    """The process died between the manifest's PUT and the commit, and big.bin's chunk list
    is lost meanwhile: the upload is committed without big.bin, which the next upload sends
    again. Before, the whole upload was taken for unreadable and its manifest and packs
    were deleted: a completed upload removed by no retention."""
    rig.write("big.bin", noise(7, 24 * MiB))  # past the inline chunk limit: a chunk list
    rig.write("b.json", b"{}")
    (report,) = await rig.sync()
    assert report.upload_id
    name = rig.target.name
    outbox = rig.settings.local_target_dir
    (listed,) = outbox.rglob("chunklists/*/*")
    listed.unlink()
    await rig.state.transaction(lambda c: killed_before_the_commit(c, rig.plans))
    await Recovery(rig.state, SID, Discarder(SID)).recover({name: rig.target})
    assert await rig.uploads() == [report.upload_id]  # kept
    assert set(await rig.state.ledger(name)) == {"b.json"}
    (second,) = await rig.sync()
    assert second.files_uploaded == ["big.bin"]
    assert await rig.restore(second.upload_id or "") == rig.on_disk()


async def test_ledger_rebuilt_from_a_format_2_manifest(rig: Rig, tmp_path: Path) -> None:
    big = bytearray(noise(6, 6 * MiB))
    rig.write("reflection.duckdb", bytes(big))
    for i in range(250):  # past the inline limit: the entries are in index parts
        rig.write(f"n/{i:03d}.json", str(i).encode())
    await rig.sync()
    await rig.state.close()
    (tmp_path / "state" / "state.db").unlink()
    fresh = StateDB(tmp_path / "state" / "state.db")
    await fresh.open()
    rig.state = fresh
    rig.feed.state = fresh
    rig.drain.state = fresh
    rig.uploader.state = fresh
    n = await Recovery(fresh, SID, Discarder(SID)).rebuild_ledger(rig.target)
    assert n == 251
    ledger = await fresh.ledger(rig.target.name)
    assert ledger["reflection.duckdb"].chunks is not None
    assert len(await fresh.chunks_of(rig.target.name)) >= 251
    assert await fresh.known_documents(rig.target.name) is None
    big[100:200] = b"y" * 100
    rig.write("reflection.duckdb", bytes(big))
    assert isinstance(rig.target, CountingTarget)
    rig.target.puts.clear()
    reports = await rig.sync()
    # documents not known: asked for, and only the index part holding the change sent
    assert len([k for k in rig.target.puts if "/index/" in k]) == 1
    assert len(rig.target.puts) == 3  # + a pack and the manifest
    sent = [r for r in reports if r.upload_id]
    assert len(sent) == 1 and sent[0].files_uploaded == ["reflection.duckdb"]
    assert sent[0].bytes_sent < 2 * MiB  # deduplicated against the seeded chunk table
    assert await rig.restore((await rig.uploads())[-1]) == rig.on_disk()


async def test_state_of_the_previous_schema_is_migrated(tmp_path: Path) -> None:
    from akoshad.store.db import MIGRATIONS, SCHEMA_VERSION

    path = tmp_path / "state.db"
    con = sqlite3.connect(path)
    for script in MIGRATIONS[:4]:
        con.executescript(script)
    con.execute(
        "INSERT INTO ledger VALUES ('local', 'a', 'a', 1, 1, 1, 1, 1, ?, 'k', 'n', 1, 'none', "
        "'file', 'u1', NULL, 384)",
        ("a" * 64,),
    )
    con.execute("PRAGMA user_version = 4")
    con.commit()
    con.close()
    db = StateDB(path)
    await db.open()
    try:
        row = (await db.ledger("local"))["a"]
        assert row.chunks is None and row.chunk_ids is None and row.mode == 384
        assert await db.chunks_of("local") == {}
    finally:
        await db.close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


@pytest.mark.s3
async def test_s3_first_upload_and_small_change(
    s3: WeedServer, system_id: str, tmp_path: Path
) -> None:
    (tmp_path / "store").mkdir()
    settings = s3.settings(
        system_id,
        home=tmp_path,
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
    )
    target: Target = make_target("cloud", settings)
    rig = await open_rig(settings, target, tmp_path / "state/state.db")
    try:
        big = bytearray(noise(7, 6 * MiB))
        rig.write("reflection.duckdb", bytes(big))
        for i in range(40):
            rig.write(f"s/{i}.json", str(i).encode())
        (first,) = await rig.sync()
        assert first.upload_id and first.error is None
        manifest = await rig.manifest(first.upload_id)
        assert manifest["metadata"]["format"] == 2 and validate_manifest(manifest) == []
        packs = s3.keys(f"systems/{system_id}/packs/")
        assert len(packs) == 1
        assert await rig.restore(first.upload_id) == rig.on_disk()
        big[3 * MiB : 3 * MiB + 50] = b"z" * 50
        rig.write("reflection.duckdb", bytes(big))
        (second,) = await rig.sync()
        assert second.files_uploaded == ["reflection.duckdb"]
        assert second.bytes_sent < 2 * MiB
        assert await rig.restore(second.upload_id or "") == rig.on_disk()
        assert s3.multipart_uploads(f"systems/{system_id}/") == []
    finally:
        await close_rig(rig)


async def write_format1_upload(rig: Rig, outbox: Path) -> str:
    """An upload as the previous version wrote it (one gzip object per file, manifest
    format 1) of what is on disk, and the ledger rows it left (no chunks)."""
    from akoshad.manifest.layout import (
        FileEntry,
        build_manifest,
        encode_manifest,
        manifest_key,
        new_upload_id,
        upload_prefix,
    )
    from akoshad.store.db import LedgerEntry

    upload_id = new_upload_id()
    entries: list[FileEntry] = []
    rows: list[LedgerEntry] = []
    for rel, data in rig.on_disk().items():
        name = rel.replace("/", "__") + ".gz"
        key = upload_prefix(SID, upload_id) + name
        stored = gzip.compress(data)
        (outbox / key).parent.mkdir(parents=True, exist_ok=True)
        (outbox / key).write_bytes(stored)
        digest = hashlib.sha256(data).hexdigest()
        entries.append(FileEntry(rel, name, key, len(data), digest, len(stored), "gzip", "file"))
        st = (rig.store / rel).stat()
        rows.append(
            LedgerEntry(
                "local",
                rel,
                rel,
                len(data),
                LiveStat.of(st),
                digest,
                key,
                name,
                len(stored),
                "gzip",
                "file",
                upload_id,
            )
        )
    manifest = build_manifest(system_id=SID, upload_id=upload_id, entries=entries, skipped={})
    (outbox / manifest_key(SID, upload_id)).write_bytes(encode_manifest(manifest))

    def commit(c: sqlite3.Connection) -> None:
        StateDB.write_ledger(c, "local", rows, [])
        StateDB.finish_upload(c, upload_id=upload_id, outcome="completed")

    await rig.state.begin_upload(upload_id, "local", "local", {})
    await rig.state.transaction(commit)
    return upload_id


async def test_upgrade_from_format_1_references_the_old_whole_objects(
    rig: Rig, tmp_path: Path
) -> None:
    rig.write("a.json", b'{"a": 1}')
    rig.write("big.bin", noise(8, 2 * MiB))
    old = await write_format1_upload(rig, tmp_path / "outbox")
    assert await rig.sync() == []  # the ledger knows both files: nothing queued
    rig.write("a.json", b'{"a": 2}')
    (report,) = await rig.sync()
    assert report.files_uploaded == ["a.json"] and report.deduplicated == 1
    assert report.bytes_sent < 64 * 1024  # big.bin is not sent again
    files = await rig.files(report.upload_id or "")
    whole = files["big.bin"].whole
    assert whole is not None and whole.key.startswith(f"systems/{SID}/uploads/{old}/")
    assert files["a.json"].whole is None and len(files["a.json"].chunks) == 1
    manifest = await rig.manifest(report.upload_id or "")
    assert manifest["metadata"]["format"] == 2 and validate_manifest(manifest) == []
    assert await rig.restore(report.upload_id or "") == rig.on_disk()
    ledger = await rig.state.ledger("local")
    assert ledger["big.bin"].chunks is None and ledger["a.json"].chunks is not None


async def test_prune_repacks_and_the_chunk_table_follows(tmp_path: Path) -> None:
    from akoshad.pipeline.ownership import OwnerGate
    from akoshad.pipeline.plan import resolve_ledger
    from akoshad.pipeline.stats import Stats
    from akoshad.runtime.prune import prune_target

    policy = {"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}
    settings = local_settings(tmp_path, retention=policy)
    rig = await open_rig(settings, CountingTarget(tmp_path / "outbox"), tmp_path / "state/state.db")
    try:
        big = bytearray(noise(9, 8 * MiB))
        rig.write("reflection.duckdb", bytes(big))
        rig.write("a.json", b"{}")
        await rig.sync()
        big[4 * MiB :] = noise(10, 4 * MiB)  # half the file rewritten: half its pack dead
        rig.write("reflection.duckdb", bytes(big))
        await rig.sync()
        assert len(await rig.uploads()) == 2
        gate = OwnerGate(settings.state_dir, SID, Stats())
        result = await prune_target(settings, rig.state, rig.target, gate, dry_run=False)
        assert result["ok"], result
        assert result["uploads_removed"] and result["packs_repacked"] >= 1
        name = rig.target.name
        on_target = set(keys_under(tmp_path / "outbox", "packs"))
        table = await rig.state.chunks_of(name)
        assert table and {r.key for r in table.values()} <= on_target
        assert resolve_ledger(await rig.state.ledger(name), table)[1] == []
        (kept,) = await rig.uploads()
        assert await rig.restore(kept) == rig.on_disk()
        big[:100] = b"w" * 100
        rig.write("reflection.duckdb", bytes(big))
        rig.write("b.json", b"[]")
        (after,) = await rig.sync()
        assert after.upload_id and after.bytes_sent < 2 * MiB
        assert await rig.restore(after.upload_id) == rig.on_disk()
    finally:
        await close_rig(rig)


async def test_lost_chunks_are_sent_again_never_referenced(rig: Rig, tmp_path: Path) -> None:
    rig.write("a.bin", noise(11, 2 * MiB))
    rig.write("b.json", b"{}")
    await rig.sync()
    name = rig.target.name
    await rig.state.transaction(lambda c: c.execute("DELETE FROM chunks"))  # as if pruned
    for p in (tmp_path / "outbox" / "systems" / SID / "packs").rglob("*"):
        if p.is_file():
            p.unlink()
    rig.write("b.json", b'{"b": 1}')
    (refused,) = await rig.sync()  # a.bin was not captured: the pass stops, names it
    assert refused.upload_id is None and "a.bin" in (refused.error or "")
    assert "a.bin" not in await rig.state.ledger(name)
    (report,) = await rig.sync()  # queued again with b.json: both sent from fresh captures
    assert sorted(report.files_uploaded) == ["a.bin", "b.json"]
    assert await rig.restore((await rig.uploads())[-1]) == rig.on_disk()
    table = await rig.state.chunks_of(name)
    assert resolve_ledger_ok(await rig.state.ledger(name), table)


def resolve_ledger_ok(ledger: Any, table: Any) -> bool:
    from akoshad.pipeline.plan import resolve_ledger

    return resolve_ledger(ledger, table)[1] == []


def test_kill_9_mid_upload_leaves_nothing_half_committed(tmp_path: Path) -> None:
    """The daemon is killed once the first pack of a large upload landed; the next start
    removes that attempt's packs, and the upload made then is whole."""
    from akoshad.targets.local import LocalTarget
    from tests.helpers import start_daemon, wait_for
    from tests.integration.test_pipeline_local import SYSTEM, Setup

    setup = Setup(tmp_path)
    setup.store.mkdir()
    (setup.store / "big.bin").write_bytes(noise(12, 48 * MiB))  # three packs
    (setup.store / "a.json").write_text("{}")
    packs = setup.outbox / "systems" / SYSTEM / "packs"

    def landed() -> list[Path]:
        if not packs.is_dir():
            return []
        return [p for p in packs.rglob("*") if p.is_file() and ".akoshad-tmp-" not in p.name]

    proc = start_daemon(setup.config, setup.env, tmp_path / "d.log")
    try:
        wait_for(landed, 60, interval=0.01)
    finally:
        proc.kill()
        proc.wait()
    assert setup.manifests() == []  # killed before its manifest
    con = sqlite3.connect(setup.state / "state.db")
    try:  # the landed pack was recorded before its PUT
        recorded = {r[0] for r in con.execute("SELECT key FROM upload_packs")}
        assert recorded and {p.relative_to(setup.outbox).as_posix() for p in landed()} <= recorded
    finally:
        con.close()
    res = setup.once()  # recovery at start, then the upload
    assert res.returncode == 0, res.stderr
    (m,) = setup.manifests()
    con = sqlite3.connect(setup.state / "state.db")
    try:
        assert con.execute("SELECT COUNT(*) FROM upload_packs").fetchone()[0] == 0
        outcomes = [r[0] for r in con.execute("SELECT outcome FROM uploads ORDER BY upload_id")]
        assert outcomes == ["abandoned", "completed"]
    finally:
        con.close()

    async def restored() -> tuple[dict[str, bytes], set[str]]:
        from akoshad.storage.fetch import fetch_file
        from akoshad.storage.format2_read import read_entries

        target = LocalTarget(setup.outbox)
        out: dict[str, bytes] = {}
        keys: set[str] = set()
        for f in await read_entries(target, m, system_id=SYSTEM):
            pieces: list[bytes] = []
            await fetch_file(target, f, pieces.append)
            out[f.path] = b"".join(pieces)
            keys |= f.keys()
        return out, keys

    got, keys = asyncio.run(restored())
    assert got == {"big.bin": noise(12, 48 * MiB), "a.json": b"{}"}
    on_disk = {p.relative_to(setup.outbox).as_posix() for p in landed()}
    assert on_disk == keys  # no pack of the killed attempt is left


async def test_compression_and_deduplication_switches(tmp_path: Path) -> None:
    cs = {"system_id": SID, "enable_compression": False, "enable_deduplication": False}
    settings = local_settings(tmp_path, cloud_sync=cs)
    rig = await open_rig(settings, CountingTarget(tmp_path / "outbox"), tmp_path / "state/state.db")
    try:
        data = b'{"text": "' + b"compressible " * 5000 + b'"}'
        rig.write("a.json", data)
        (first,) = await rig.sync()
        files = await rig.files(first.upload_id or "")
        assert {c.compression for c in files["a.json"].chunks} == {"none"}
        assert first.bytes_sent > 65000  # stored as is
        rig.write("a.json", data)  # the same bytes, touched: captured again
        rig.write("b.json", b"{}")
        (second,) = await rig.sync()  # without deduplication every captured file is sent
        assert sorted(second.files_uploaded) == ["a.json", "b.json"]
        assert second.bytes_sent > 65000
        assert await rig.restore(second.upload_id or "") == rig.on_disk()
    finally:
        await close_rig(rig)


async def test_takeover_reseeds_the_chunk_table_from_the_target(rig: Rig) -> None:
    """Another owner may have pruned: what this machine knew of the chunks is forgotten and
    learnt again from the newest manifest."""
    from akoshad.runtime.ownership import reseed_ledger
    from akoshad.storage.refs import ChunkRef

    rig.write("a.bin", noise(13, 2 * MiB))
    await rig.sync()
    name = rig.target.name
    before = await rig.state.chunks_of(name)
    gone = ChunkRef("f" * 64, 10, f"systems/{SID}/packs/ff/" + "f" * 64, 0, 10, "none", "none")
    await rig.state.record_chunks(name, [gone])  # a chunk of a pack pruned elsewhere
    assert await reseed_ledger(rig.state, SID, rig.target) == 1
    assert await rig.state.chunks_of(name) == before
    assert await rig.state.known_documents(name) is None


async def test_first_pass_after_an_upgrade_over_the_committed_format_1_uploads(
    tmp_path: Path,
) -> None:
    """tests/data/format1 (made by the first release): a fresh state is seeded from its
    newest manifest, the store it holds is found unchanged, and the next upload (format 2)
    points at the format-1 objects for every file it does not send."""
    import json
    import shutil

    from akoshad.pipeline.recovery import Discarder, Recovery
    from akoshad.targets.local import LocalTarget

    data = FORMAT1_DATA
    expected = json.loads((data / "expected.json").read_text())
    sid, latest = expected["system_id"], expected["latest"]
    shutil.copytree(data / "outbox", tmp_path / "outbox")
    settings = local_settings(tmp_path, cloud_sync={"system_id": sid})
    rig = await open_rig(settings, LocalTarget(tmp_path / "outbox"), tmp_path / "state/state.db")
    try:
        for path, content in (await rig.restore(latest)).items():
            rig.write(path, content)  # the store as the latest format-1 upload holds it
        assert await Recovery(rig.state, sid, Discarder(sid)).rebuild_ledger(rig.target) == 8
        reports = await rig.sync()  # every file hashed: nothing but SQLite may differ
        sent = {p for r in reports for p in r.files_uploaded}
        assert sent <= {"activity.db", "natural_scheduler.db"}  # backup API header bytes
        rig.write("sessions/session-1/state.json", b'{"after": "upgrade"}')
        (report,) = await rig.sync()
        assert report.files_uploaded == ["sessions/session-1/state.json"]
        manifest = await rig.manifest(report.upload_id or "")
        assert manifest["metadata"]["format"] == 2 and validate_manifest(manifest) == []
        files = await rig.files(report.upload_id or "")
        old = [f for f in files.values() if f.whole is not None]
        assert {f.path for f in old} >= {"reflection.duckdb", "knowledge_graph.duckdb"}
        for f in old:
            assert f.sha256 == expected["uploads"][latest][f.path]
            assert f.whole is not None and f.whole.key.split("/")[3] in expected["uploads"]
        restored = await rig.restore(report.upload_id or "")
        on_disk = rig.on_disk()
        assert {p: restored[p] for p in on_disk if not p.endswith(".db")} == {
            p: b for p, b in on_disk.items() if not p.endswith(".db")
        }
        ledger = await rig.state.ledger(rig.target.name)
        assert ledger["reflection.duckdb"].chunks is None  # still the format-1 object
        assert ledger["sessions/session-1/state.json"].chunks is not None
    finally:
        await close_rig(rig)


class Killed(BaseException):
    """Stands for a kill -9: nothing after it runs (what was committed stays)."""


async def test_an_interrupted_prune_never_lets_the_next_upload_skip_a_swept_document(
    tmp_path: Path,
) -> None:
    """The last upload was committed by recovery (its manifest had landed before a crash),
    so the state still names the documents of the upload before it; a prune drops that
    upload, sweeps its index part and is killed before it finishes. A file then goes back
    to its old content: the next upload makes that old index part again and must store it,
    not take it for one the target holds."""
    from akoshad.pipeline.ownership import OwnerGate
    from akoshad.pipeline.stats import Stats
    from akoshad.runtime.prune import prune_target

    policy = {"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}
    settings = local_settings(tmp_path, retention=policy)
    rig = await open_rig(settings, CountingTarget(tmp_path / "outbox"), tmp_path / "state/state.db")
    try:
        for i in range(250):  # past the inline limit: the entries are in index parts
            rig.write(f"n/{i:03d}.json", str(i).encode())
        (first,) = await rig.sync()
        name = rig.target.name
        documents = await rig.state.get_kv(f"documents:{name}")
        rig.write("n/100.json", b"changed")
        (second,) = await rig.sync()
        assert first.upload_id and second.upload_id
        # as if the process died between the second upload's manifest and its commit
        await rig.state.transaction(
            lambda c: (
                in_progress_again(c, rig.plans, str(second.upload_id)),
                c.execute(
                    "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                    (f"documents:{name}", documents),
                ),
            )
        )
        await Recovery(rig.state, SID, Discarder(SID)).recover({name: rig.target})
        target = rig.target
        deleting = target.delete_keys

        async def delete_then_die(keys: list[str]) -> None:
            await deleting(keys)
            if any("/index/" in k for k in keys):
                raise Killed

        target.delete_keys = delete_then_die  # type: ignore[method-assign]
        gate = OwnerGate(settings.state_dir, SID, Stats())
        with pytest.raises(Killed):
            await prune_target(settings, rig.state, target, gate, dry_run=False)
        target.delete_keys = deleting  # type: ignore[method-assign]
        assert await rig.uploads() == [second.upload_id]
        rig.write("n/100.json", b"100")  # back to what the first upload held
        (third,) = await rig.sync()
        assert third.upload_id and third.error is None
        assert await rig.restore(third.upload_id) == rig.on_disk()
    finally:
        await close_rig(rig)


async def test_a_failed_upload_never_deletes_a_pack_an_earlier_upload_wrote(
    rig: Rig, tmp_path: Path
) -> None:
    """After a lost state the chunk table knows only the newest upload's chunks. A file
    goes back to content an earlier upload packed alone: the new pack has that pack's
    layout, so its key. The upload fails before its manifest: removing its packs must not
    remove the earlier upload's pack."""
    rig.write("g.json", b'{"g": 1}')
    await rig.sync()
    rig.write("f.bin", noise(21, 300 * 1024))
    (second,) = await rig.sync()
    rig.write("f.bin", noise(22, 300 * 1024))
    await rig.sync()
    assert second.upload_id
    await rig.state.transaction(  # a lost state, rebuilt from the newest manifest
        lambda c: (c.execute("DELETE FROM ledger"), c.execute("DELETE FROM chunks"))
    )
    assert await Recovery(rig.state, SID, Discarder(SID)).rebuild_ledger(rig.target) == 2
    target = rig.target
    putting = target.put_bytes

    async def no_manifest(key: str, data: bytes, content_type: str) -> int:
        if key.endswith("/manifest.json"):
            raise TransientError("the manifest PUT failed")
        return await putting(key, data, content_type)

    target.put_bytes = no_manifest  # type: ignore[method-assign]
    rig.write("f.bin", noise(21, 300 * 1024))  # back to the second upload's content
    await rig.feed.reconcile()
    (failed,) = [await rig.drain.run_pass()]
    target.put_bytes = putting  # type: ignore[method-assign]
    assert failed is not None and failed.error
    assert await rig.restore(second.upload_id) == {
        "g.json": b'{"g": 1}',
        "f.bin": noise(21, 300 * 1024),
    }


async def _disk_full(*args: Any, **kwargs: Any) -> None:
    """A state write that fails as on a full disk."""
    raise sqlite3.OperationalError("database or disk is full")


async def _a_pass_meets_a_full_disk(rig: Rig, method: str, path: str, data: bytes) -> None:
    """The state's ``method`` fails as on a full disk in the pass that sends ``path``: that
    pass raises the error, the row is pending again, and the next pass lands the file."""
    rig.write(path, data)
    await rig.feed.reconcile()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rig.state, method, _disk_full)
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            await rig.drain.run_pass()
    (row,) = await rig.state.queue_items()
    assert row.path == path and row.state == "pending"
    report = await rig.drain.drain_once(rig.target, now=row.next_attempt + 1)
    assert report is not None and report.upload_id and report.error is None
    assert await rig.restore(report.upload_id) == rig.on_disk()


async def test_a_pass_that_fails_unexpectedly_hands_its_rows_back(rig: Rig) -> None:
    """A pass that raises past the uploader (here the state refuses to record the attempt:
    a full disk) leaves no row claimed: the change goes up on a later pass of the same
    daemon, not only after a restart."""
    await _a_pass_meets_a_full_disk(rig, "begin_upload", "a.json", b'{"a": 1}')


async def test_a_pack_that_fails_unexpectedly_fails_its_upload_with_that_error(
    rig: Rig,
) -> None:
    """A pack's send that fails in an unforeseen way (the state refuses to record the pack:
    a full disk) fails the upload with that error: it is not dropped with the send's task
    (the upload then failed later, on a chunk it could not place, with a bare KeyError)."""
    await _a_pass_meets_a_full_disk(rig, "add_upload_pack", "f.bin", noise(31, 300 * 1024))


async def test_a_prune_meeting_a_damaged_pack_reports_it_as_its_outcome(tmp_path: Path) -> None:
    """A repack that meets a damaged pack (here cut short) ends the prune with that problem
    in its result (what ``last_prune`` and the log show), not with an exception the
    scheduler only logs while ``last_prune`` keeps the previous good outcome."""
    from akoshad.pipeline.ownership import OwnerGate
    from akoshad.pipeline.stats import Stats
    from akoshad.runtime.prune import prune_target

    policy = {"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}
    settings = local_settings(tmp_path, retention=policy)
    rig = await open_rig(settings, CountingTarget(tmp_path / "outbox"), tmp_path / "state/state.db")
    try:
        big = bytearray(noise(19, 8 * MiB))
        rig.write("reflection.duckdb", bytes(big))
        await rig.sync()
        big[4 * MiB :] = noise(20, 4 * MiB)  # half of the first pack dead: it is repacked
        rig.write("reflection.duckdb", bytes(big))
        await rig.sync()
        target = rig.target
        reading = target.read

        def damaged(key: str) -> AsyncIterator[bytes]:
            if "/packs/" in key:
                raise PackError(f"object {key} is damaged")
            return reading(key)

        target.read = damaged  # type: ignore[method-assign]
        gate = OwnerGate(settings.state_dir, SID, Stats())
        result = await prune_target(settings, rig.state, target, gate, dry_run=False)
        target.read = reading  # type: ignore[method-assign]
        assert result["ok"] is False and "is damaged" in result["problems"][0], result
        assert "at" in result
        assert len(await rig.uploads()) == 1  # the dropped upload went; the kept one stays
    finally:
        await close_rig(rig)


async def _the_retry_lands(rig: Rig) -> None:
    """The one row a failed pass left is retried when due: it lands, and restores."""
    (row,) = await rig.state.queue_items()
    report = await rig.drain.drain_once(rig.target, now=row.next_attempt + 1)
    assert report is not None and report.upload_id and report.error is None
    assert await rig.restore(report.upload_id) == rig.on_disk()


async def test_an_upload_failing_unexpectedly_leaves_no_attempt_behind(rig: Rig) -> None:
    """An upload that fails in an unforeseen way after a pack went out (the state refuses to
    record the next pack: a full disk) is settled as any failed upload before its error goes
    on: its attempt is failed in the history, its pack removed and its pack records dropped.
    Before, the attempt stayed 'in progress' while the daemon ran (months): its row and pack
    records were never pruned, its objects kept from prune as an upload in progress."""
    rig.write("big.bin", noise(41, 20 * MiB))  # two packs
    await rig.feed.reconcile()
    add = rig.state.add_upload_pack
    calls = 0

    async def second_fails(upload_id: str, key: str) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            await _disk_full()
        await add(upload_id, key)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rig.state, "add_upload_pack", second_fails)
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            await rig.drain.run_pass()
    history = await rig.state.transaction(
        lambda c: c.execute("SELECT outcome FROM uploads").fetchall()
    )
    assert history == [("failed",)]
    packs = await rig.state.transaction(
        lambda c: c.execute("SELECT COUNT(*) FROM upload_packs").fetchone()[0]
    )
    assert packs == 0
    assert keys_under(rig.store.parent / "outbox", "packs") == []
    await _the_retry_lands(rig)


async def test_a_failed_upload_s_packs_go_even_when_the_state_is_full_too(rig: Rig) -> None:
    """The target refuses a pack (a full outbox) and the state refuses to record the failed
    attempt (the same full disk): the packs the attempt sent are removed all the same, never
    left for prune to keep as an upload in progress while the disk stays full."""
    rig.write("big.bin", noise(41, 20 * MiB))  # two packs
    await rig.feed.reconcile()
    put = rig.target.put_object_file
    calls = 0

    async def second_refused(key: str, source: Path, size: int, crc32: int) -> int:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise TransientError("No space left on device")
        return await put(key, source, size, crc32)

    async def state_full(upload_id: str, error: str) -> None:
        await _disk_full()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rig.target, "put_object_file", second_refused)
        patch.setattr(rig.state, "fail_upload", state_full)
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            await rig.drain.run_pass()
    assert calls >= 2  # one pack went out before the refusal
    assert keys_under(rig.store.parent / "outbox", "packs") == []
    await _the_retry_lands(rig)


async def test_failed_uploads_do_not_grow_the_history_without_bound(rig: Rig) -> None:
    """The upload history keeps the newest HISTORY_KEEP uploads also while every attempt
    fails (a target that refuses writes for weeks: each retry is an attempt, with its
    planned manifest); before, it was trimmed only when an upload completed, so it grew
    with every retry for as long as the outage lasted."""
    from akoshad.store.db import HISTORY_KEEP

    rig.write("a.json", b'{"a": 1}')
    await rig.feed.reconcile()
    done = await rig.drain.run_pass()
    assert done is not None and done.upload_id and done.error is None
    first_id = done.upload_id

    def old(c: sqlite3.Connection) -> None:
        c.executemany(
            "INSERT INTO uploads (upload_id, target, method, started_at, finished_at, outcome, "
            "error) VALUES (?, 'local', 'local', 0, 0, 'failed', 'the outbox is away')",
            [(f"{first_id}{i:06d}",) for i in range(HISTORY_KEEP)],  # after it
        )

    await rig.state.transaction(old)
    rig.write("a.json", b'{"a": 2}')
    await rig.feed.reconcile()

    async def refused(*args: Any, **kwargs: Any) -> int:
        raise TransientError("the outbox is away")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rig.target, "put_object_file", refused)
        for _ in range(3):
            (row,) = await rig.state.queue_items()
            report = await rig.drain.drain_once(rig.target, now=row.next_attempt + 1)
            assert report is not None and report.error
    rows = await rig.state.transaction(
        lambda c: c.execute("SELECT COUNT(*), MAX(upload_id) FROM uploads").fetchone()
    )
    assert rows[0] == HISTORY_KEEP + 1 and rows[1] > first_id  # + the completed one:
    last = await rig.state.last_upload()  # what status reports after a restart
    assert last is not None and last.upload_id == first_id


async def test_an_upload_whose_manifest_landed_is_kept_when_an_error_follows(rig: Rig) -> None:
    """An unforeseen error after ``manifest.json`` landed (making the ledger rows fails)
    leaves the upload whole: the next start's recovery commits it from its manifest."""
    import akoshad.pipeline.upload as upload_module

    rig.write("a.json", b'{"a": 1}')
    await rig.feed.reconcile()

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a defect after the manifest")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(upload_module, "sent_rows", broken)
        with pytest.raises(RuntimeError, match="a defect after the manifest"):
            await rig.drain.run_pass()
    manifests = keys_under(rig.store.parent / "outbox", "uploads")
    assert len(manifests) == 1 and manifests[0].endswith("manifest.json")
    history = await rig.state.transaction(
        lambda c: c.execute("SELECT outcome FROM uploads").fetchall()
    )
    assert history == [("in_progress",)]
