"""Prune executed on real targets: retention drops uploads, kept ones stay restorable byte
for byte, repacks rewrite manifests, and a kill -9 at a step boundary is finished next time."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from akoshad.manifest.layout import new_upload_id
from akoshad.storage import refs
from akoshad.storage.owner import Machine, NotOwner, Ownership, load_owner_id, owner_key
from akoshad.storage.prune_exec import run_prune
from akoshad.storage.prune_result import PruneHooks, PruneResult
from akoshad.targets.base import Target
from akoshad.targets.local import LocalTarget
from tests.prune_child import kill_at_marker, policy
from tests.prune_data import Builder, noise, private_dir, restore, text
from tests.s3server import WeedServer

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def ids(n: int) -> list[tuple[str, datetime]]:
    out: list[tuple[str, datetime]] = []
    for i in range(n):
        when = NOW - timedelta(hours=n - i)
        out.append((new_upload_id(when), when))
    return out


async def build_mixed(b: Builder, n1: int = 3, n2: int = 4) -> list[str]:
    """``n1`` format-1 uploads, then ``n2`` format-2 ones (the first pack holds a big file
    every later upload keeps, next to chunks the later uploads replace)."""
    made: list[str] = []
    for i, (upload_id, when) in enumerate(ids(n1 + n2)):
        files = {
            "reflection.duckdb": noise(1000 + (i if i < n1 else n1), 96 * 1024),
            "logs/session.txt": text(i, 40 * 1024),
            "mid.bin": noise(i, 48 * 1024),
        }
        if i < n1:
            files["stable.json"] = text(99, 3000)  # unchanged: later entries point at upload 1
            await b.format1(upload_id, files, when)
        else:
            await b.format2(upload_id, files, when, ("inline", "chunk_list", "index")[i % 3])
        made.append(upload_id)
    return made


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[Target]:
    target = LocalTarget(tmp_path / "outbox")
    await target.start()
    yield target
    await target.close()


async def check_restorable(target: Target, b: Builder, upload_ids: list[str]) -> None:
    for upload_id in upload_ids:
        assert await restore(target, b.system_id, upload_id) == b.expected[upload_id], upload_id


async def assert_nothing_left(target: Target, system_id: str, staging: Path) -> None:
    again = await run_prune(
        target, system_id, policy(3), staging_dir=staging, now=NOW, dry_run=True
    )
    assert again.uploads_removed == [] and again.objects_deleted == 0
    assert again.packs_repacked == 0, again.to_json()


async def test_format1_prune_removes_dropped_uploads_and_keeps_shared_objects(
    local: Target, tmp_path: Path
) -> None:
    b = Builder(local, "box", tmp_path / "work")
    made = []
    for i, (upload_id, when) in enumerate(ids(8)):
        await b.format1(upload_id, {"a.json": text(i, 2000), "b.db": noise(7, 5000)}, when)
        made.append(upload_id)
    owner = Ownership(local, "box", Machine(load_owner_id(tmp_path / "state"), "alpha"), settle=0)
    staging = private_dir(tmp_path / "staging")
    result = await run_prune(local, "box", policy(3), staging_dir=staging, now=NOW, ownership=owner)
    assert result.uploads_removed == made[:5] and result.uploads_kept == 3
    assert result.upload_id == made[-1]  # the newest kept: last_prune's upload_id
    assert result.objects_deleted == 5 + 5  # 5 manifests, 5 a.json; b.db of upload 1 stays
    assert result.bytes_freed > 0 and result.missing == []
    keys = [k async for k in local.list_keys("systems/box/")]
    assert owner_key("box") in keys
    assert f"systems/box/uploads/{made[0]}/b.db.gz" in keys
    assert not any(f"/{u}/a.json" in k for u in made[:5] for k in keys)
    await check_restorable(local, b, made[5:])
    await assert_nothing_left(local, "box", staging)


async def test_format2_prune_repacks_and_rewrites_kept_manifests(
    local: Target, tmp_path: Path
) -> None:
    b = Builder(local, "box", tmp_path / "work")
    made = await build_mixed(b)
    staging = private_dir(tmp_path / "staging")
    forgotten: list[str] = []
    recorded: list[refs.ChunkRef] = []

    async def forget(key: str) -> None:
        assert await local.head(key) is not None  # forgotten BEFORE it is deleted
        forgotten.append(key)

    async def record(moved: Mapping[str, refs.ChunkRef]) -> None:
        assert all(ident == r.sha256 for ident, r in moved.items())  # unencrypted: by sha256
        recorded.extend(moved.values())

    hooks = PruneHooks(forget_pack=forget, record_chunks=record)
    dry = await run_prune(local, "box", policy(3), staging_dir=staging, now=NOW, dry_run=True)
    result = await run_prune(local, "box", policy(3), staging_dir=staging, now=NOW, hooks=hooks)
    assert result.uploads_removed == made[:4] == dry.uploads_removed
    assert result.packs_repacked == 1 and result.packs_written == 1
    assert result.manifests_rewritten == 3
    # the dry run announced what the prune then did, the repacked pack's deletion included
    assert (dry.objects_deleted, dry.packs_repacked) == (
        result.objects_deleted,
        result.packs_repacked,
    ), (dry.to_json(), result.to_json())
    assert (dry.packs_written, dry.manifests_rewritten) == (1, 3)
    new_packs = {r.key for r in recorded}
    assert len(new_packs) == 1 and recorded
    listing = {k async for k in local.list_keys("systems/box/packs/")}
    assert new_packs <= listing and not set(forgotten) & listing
    assert result.bytes_stored_after <= 1.2 * result.bytes_referenced
    await check_restorable(local, b, made[4:])
    await assert_nothing_left(local, "box", staging)
    assert "prune" not in os.listdir(staging)  # a finished prune removes its own dir


@pytest.mark.parametrize(
    ("op", "nth"),
    [
        ("delete_manifest", 2),
        ("delete_object", 2),
        ("write_pack", 1),
        ("rewrite_manifest", 2),
        ("delete_replaced", 1),
        ("delete_replaced", 2),
    ],
)
async def test_kill_9_at_a_step_leaves_kept_uploads_restorable_and_next_prune_finishes(
    local: Target, tmp_path: Path, op: str, nth: int
) -> None:
    b = Builder(local, "box", tmp_path / "work")
    made = await build_mixed(b)
    staging = private_dir(tmp_path / "staging")
    args = [str(tmp_path / "outbox"), "box", NOW.isoformat(), "3", str(staging), op, str(nth)]
    line = await asyncio.to_thread(kill_at_marker, args)
    assert line.strip() == "AT-STEP", f"the prune never reached {op} #{nth}: {line!r}"
    await check_restorable(local, b, made[4:])
    if op == "rewrite_manifest":  # what a killed repack left in its staging dir is cleared
        (staging / "prune" / "pack-1-leftover.tmp").write_bytes(b"x")
    done: PruneResult = await run_prune(local, "box", policy(3), staging_dir=staging, now=NOW)
    assert set(done.uploads_removed) <= set(made[:4])
    await check_restorable(local, b, made[4:])
    await assert_nothing_left(local, "box", staging)
    assert "prune" not in os.listdir(staging)  # a finished prune removes its own dir


async def test_prune_on_seaweedfs(s3: WeedServer, system_id: str, tmp_path: Path) -> None:
    target = s3.s3_target(system_id, retry_backoff=0.1, max_retries=1)
    await target.start()
    try:
        b = Builder(target, system_id, tmp_path / "work")
        made = await build_mixed(b)
        owner = Ownership(target, system_id, Machine(load_owner_id(tmp_path / "s"), "a"), settle=0)
        staging = private_dir(tmp_path / "staging")
        result = await run_prune(
            target, system_id, policy(3), staging_dir=staging, now=NOW, ownership=owner
        )
        assert result.uploads_removed == made[:4] and result.packs_repacked == 1
        await check_restorable(target, b, made[4:])
        await assert_nothing_left(target, system_id, staging)
        assert owner_key(system_id) in s3.keys(f"systems/{system_id}/")
    finally:
        await target.close()


async def test_an_empty_target_prunes_to_nothing(local: Target, tmp_path: Path) -> None:
    staging = private_dir(tmp_path / "staging")
    result = await run_prune(local, "box", policy(3), staging_dir=staging, now=NOW)
    assert result.to_json()["objects_deleted"] == 0 and result.uploads_removed == []


async def test_a_non_owner_prunes_nothing(local: Target, tmp_path: Path) -> None:
    b = Builder(local, "box", tmp_path / "work")
    await build_mixed(b)
    alpha = Ownership(local, "box", Machine(load_owner_id(tmp_path / "a"), "alpha"), settle=0)
    beta = Ownership(local, "box", Machine(load_owner_id(tmp_path / "b"), "beta"), settle=0)
    await alpha.check()
    before = [k async for k in local.list_keys("systems/box/")]
    staging = private_dir(tmp_path / "staging")
    for dry_run in (True, False):
        with pytest.raises(NotOwner, match="'alpha'"):
            await run_prune(
                local,
                "box",
                policy(3),
                staging_dir=staging,
                now=NOW,
                ownership=beta,
                dry_run=dry_run,
            )
    assert [k async for k in local.list_keys("systems/box/")] == before


async def test_a_damaged_manifest_kept_is_worked_around_and_dropped_goes(
    local: Target, tmp_path: Path
) -> None:
    """A kept upload whose manifest is not JSON: the prune goes on around it (everything
    stored up to it stays, named in ``unreadable``); dropped by retention (dated by its id),
    a damaged manifest goes like any other, and so does one whose chunk list is gone."""
    b = Builder(local, "box", tmp_path / "work")
    made = await build_mixed(b)
    staging = private_dir(tmp_path / "staging")
    # a dropped format-2 upload whose chunk list is gone: it cannot block the prune
    dropped = f"systems/box/uploads/{made[3]}/manifest.json"
    await local.put_bytes(
        dropped,
        b'{"metadata": {"files": [{"chunk_list": {"key": '
        b'"systems/box/chunklists/zz/gone.json.gz", "compression": "gzip"}}]}, '
        b'"uploaded_at": "' + (NOW - timedelta(hours=4)).isoformat().encode() + b'"}',
        "application/json",
    )
    await local.put_bytes(f"systems/box/uploads/{made[2]}/manifest.json", b"[1, 2]", "x")
    kept = f"systems/box/uploads/{made[-1]}/manifest.json"
    good = b"".join([c async for c in local.read(kept)])
    await local.put_bytes(kept, b"{not json", "application/json")
    before = set([k async for k in local.list_keys("systems/box/")])
    result = await run_prune(local, "box", policy(3), staging_dir=staging, now=NOW)
    assert result.uploads_removed == made[:4]
    assert result.unreadable == [f"upload {made[-1]}: manifest {kept} is not valid JSON"]
    after = set([k async for k in local.list_keys("systems/box/")])
    # only the dropped manifests go: everything else was stored before the damaged one
    assert before - after == {f"systems/box/uploads/{u}/manifest.json" for u in made[:4]}
    await check_restorable(local, b, made[4:-1])
    await local.put_bytes(kept, good, "application/json")
    result = await run_prune(local, "box", policy(3), staging_dir=staging, now=NOW)
    assert result.unreadable == [] and result.objects_deleted > 0
    await check_restorable(local, b, made[4:])
    await assert_nothing_left(local, "box", staging)


async def test_the_newest_upload_stays_when_the_clock_went_backwards(
    local: Target, tmp_path: Path
) -> None:
    """The clock was set back between two uploads: the last one has the greatest id (the one
    ``restore --latest`` picks and the writer's ledger points at) but an earlier
    ``uploaded_at`` than the uploads before it. It is still the newest upload: kept."""
    b = Builder(local, "box", tmp_path / "work")
    made: list[str] = []
    for i, hours in enumerate((3, 2, 5)):  # the third was made after the clock went back
        when = NOW - timedelta(hours=hours)
        upload_id = new_upload_id(when, after=made[-1] if made else None)
        await b.format2(upload_id, {"a.json": text(i, 2000)}, when, "inline")
        made.append(upload_id)
    assert made == sorted(made)
    staging = private_dir(tmp_path / "staging")
    result = await run_prune(local, "box", policy(1), staging_dir=staging, now=NOW)
    assert made[2] not in result.uploads_removed, result.to_json()
    assert result.missing == []
    await check_restorable(local, b, [made[2]])


async def test_two_repacks_of_equal_shape_never_share_a_pack_key(
    local: Target, tmp_path: Path
) -> None:
    """Two prunes each repack a pack whose one live chunk sits at the same place with the
    same length but holds other bytes: the second new pack must not take the first one's
    key (it would overwrite the chunk a kept upload reads there)."""
    b = Builder(local, "box", tmp_path / "work")
    staging = private_dir(tmp_path / "staging")

    async def record(moved: Mapping[str, refs.ChunkRef]) -> None:  # the writer's table follows
        b._chunks.update(moved)

    keep1, keep2 = noise(1, 16 * 1024), noise(3, 16 * 1024)
    rounds = [  # per round: an upload, then one that drops 64 KiB of its pack
        ({"drop1": noise(2, 64 * 1024), "keep1": keep1}, {"keep1": keep1}),
        (
            {"drop2": noise(4, 64 * 1024), "keep1": keep1, "keep2": keep2},
            {"keep1": keep1, "keep2": keep2},
        ),
    ]
    hours = iter((5, 4, 3, 2))
    for uploads in rounds:
        for files in uploads:
            when = NOW - timedelta(hours=next(hours))
            upload_id = new_upload_id(when)
            await b.format2(upload_id, files, when, "inline")
        hooks = PruneHooks(record_chunks=record)
        result = await run_prune(local, "box", policy(1), staging_dir=staging, now=NOW, hooks=hooks)
        assert result.packs_repacked == 1 and result.packs_written == 1, result.to_json()
        await check_restorable(local, b, [upload_id])


class TakenOverWhileListed(LocalTarget):
    """The outbox; while the prune lists it, another machine takes the id over and its
    first upload has stored a pack (its manifest not yet)."""

    def __init__(self, root: Path, state: Path) -> None:
        super().__init__(root)
        self.state = state
        self.pack = "systems/box/packs/ab/" + "ab" * 32

    async def list_stored(self, prefix: str) -> AsyncIterator[tuple[str, int, float]]:
        beta = Ownership(self, "box", Machine(load_owner_id(self.state), "beta"), settle=0)
        await beta.takeover()
        await self.put_bytes(self.pack, b"the new owner's chunks", "application/octet-stream")
        async for found in super().list_stored(prefix):
            yield found


async def test_a_takeover_while_the_prune_lists_deletes_nothing(tmp_path: Path) -> None:
    """The owner check before the prune passed; another machine took the id over and stored
    a pack of its first upload before the listing. That pack is referenced by no manifest
    listed, so the sweep took it, and the new owner's upload committed after named a pack
    that was gone. The prune asks the owner record again after its listing: nothing goes."""
    target = TakenOverWhileListed(tmp_path / "outbox", tmp_path / "b")
    await target.start()
    b = Builder(target, "box", tmp_path / "work")
    await build_mixed(b)
    alpha = Ownership(target, "box", Machine(load_owner_id(tmp_path / "a"), "alpha"), settle=0)
    await alpha.check()
    before = [k async for k in target.list_keys("systems/box/")]
    staging = private_dir(tmp_path / "staging")
    with pytest.raises(NotOwner, match="'beta'"):
        await run_prune(target, "box", policy(3), staging_dir=staging, now=NOW, ownership=alpha)
    after = [k async for k in target.list_keys("systems/box/")]
    assert target.pack in after and set(before) <= set(after)
    await target.close()
