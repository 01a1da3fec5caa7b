"""A kept upload whose index part is lost: the prune goes on around it, keeps everything the
upload may use (all that was stored up to its manifest), and once the part is back the
upload restores byte for byte. On the local target (stored times set as a writer over three
days would leave them) and on a real S3 server (times as they come)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from akoshad.manifest.layout import new_upload_id
from akoshad.storage.prune_documents import PruneError
from akoshad.storage.prune_exec import run_prune
from akoshad.storage.prune_load import DatedLister
from akoshad.storage.retention import Retention
from akoshad.targets.base import Target
from akoshad.targets.local import LocalTarget
from tests.prune_data import Builder, Undated, noise, private_dir, restore, text
from tests.s3server import WeedServer

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
# the newest upload of each of the last two days that have one: the oldest upload (three
# days ago) and the newest of today; today's four others go
DAILY = Retention(keep_last=0, keep_hourly=0, keep_daily=2, keep_weekly=0)


async def keys(target: Target) -> set[str]:
    return {k async for k in target.list_keys("systems/box/")}


async def build(b: Builder, outbox: Path | None) -> tuple[list[str], dict[str, set[str]]]:
    """Six uploads: the first three days ago (its entries in two index parts; its one pack
    holds ``a.bin``, which every later upload keeps, and ``c.bin``, which they replace),
    then five today, an hour apart. With ``outbox`` (a local target), each upload's new
    objects get its time as their stored time. Returns the ids and each one's new keys."""
    made: list[str] = []
    new: dict[str, set[str]] = {}
    when = NOW - timedelta(days=3)
    for i in range(6):
        if i:
            when = NOW - timedelta(hours=6 - i)
        upload_id = new_upload_id(when)
        before = await keys(b.target)
        files = {"a.bin": noise(1, 96 * 1024), "b.txt": text(1, 40 * 1024)}
        files["c.bin"] = noise(10 + i, 160 * 1024)
        await b.format2(upload_id, files, when, "index" if i == 0 else "inline")
        new[upload_id] = await keys(b.target) - before
        if outbox is not None:
            for key in new[upload_id]:
                os.utime(outbox / key, (when.timestamp(), when.timestamp()))
        made.append(upload_id)
    return made, new


def lose_a_part(made: list[str], new: dict[str, set[str]]) -> str:
    parts = sorted(k for k in new[made[0]] if "/index/" in k)
    assert len(parts) == 2
    return parts[1]  # b.txt and c.bin's entries


@pytest.fixture
async def local(tmp_path: Path) -> AsyncIterator[LocalTarget]:
    target = LocalTarget(tmp_path / "outbox")
    await target.start()
    yield target
    await target.close()


async def test_a_lost_index_part_of_a_kept_upload_no_longer_stops_the_prune(
    local: LocalTarget, tmp_path: Path
) -> None:
    b = Builder(local, "box", tmp_path / "work")
    made, new = await build(b, local.root)
    lost = lose_a_part(made, new)
    data = b"".join([c async for c in local.read(lost)])
    await local.delete_keys([lost])
    staging = private_dir(tmp_path / "staging")
    result = await run_prune(local, "box", DAILY, staging_dir=staging, now=NOW)
    assert result.uploads_removed == made[1:5]
    assert result.unreadable == [f"upload {made[0]}: index part {lost} is missing"]
    left = await keys(local)
    # the oldest upload's objects all stay: its pack is used by the newest upload only in
    # part (a.bin), and would have been repacked without c.bin
    assert new[made[0]] - {lost} <= left and result.packs_repacked == 0
    # what the four dropped uploads stored (manifest and pack each) is gone
    for upload_id in made[1:5]:
        assert not new[upload_id] & left, upload_id
    assert result.bytes_freed > 4 * 160 * 1024
    assert await restore(local, "box", made[5]) == b.expected[made[5]]
    again = await run_prune(local, "box", DAILY, staging_dir=staging, now=NOW, dry_run=True)
    assert again.objects_deleted == 0 and again.unreadable == result.unreadable
    # the part comes back (a drill's rewrite, a copy from elsewhere): the upload is whole
    await local.put_bytes(lost, data, "application/json")
    assert await restore(local, "box", made[0]) == b.expected[made[0]]
    healed = await run_prune(local, "box", DAILY, staging_dir=staging, now=NOW)
    assert healed.unreadable == [] and healed.packs_repacked == 0  # a.bin and c.bin live
    for upload_id in (made[0], made[5]):
        assert await restore(local, "box", upload_id) == b.expected[upload_id]


async def test_times_a_copy_made_are_not_trusted(local: LocalTarget, tmp_path: Path) -> None:
    """The outbox was copied without its times (``cp -r``): the manifests first, the rest
    over the next two hours. The newest upload then uses a pack stored after its manifest,
    so the times were not made by the writes: the prune keeps every object (only the
    dropped manifests go), where trusting them would have repacked the oldest upload's pack
    without its ``c.bin``."""
    b = Builder(local, "box", tmp_path / "work")
    made, new = await build(b, None)
    copied = time.time() - 3 * 3600
    for key in await keys(local):
        late = 0 if key.endswith("/manifest.json") else 2 * 3600
        os.utime(local.root / key, (copied + late, copied + late))
    lost = lose_a_part(made, new)
    data = b"".join([c async for c in local.read(lost)])
    await local.delete_keys([lost])
    before = await keys(local)
    staging = private_dir(tmp_path / "staging")
    result = await run_prune(local, "box", DAILY, staging_dir=staging, now=NOW)
    assert result.uploads_removed == made[1:5] and result.packs_repacked == 0
    assert result.unreadable == [f"upload {made[0]}: index part {lost} is missing"]
    assert before - await keys(local) == {
        f"systems/box/uploads/{u}/manifest.json" for u in made[1:5]
    }
    await local.put_bytes(lost, data, "application/json")
    for upload_id in (made[0], made[5]):
        assert await restore(local, "box", upload_id) == b.expected[upload_id]


async def test_without_stored_times_a_lost_index_part_still_stops_the_prune(
    local: LocalTarget, tmp_path: Path
) -> None:
    """Nothing could be kept by time: the prune stops before deleting anything, naming the
    part (sizes come from a HEAD per key)."""
    b = Builder(local, "box", tmp_path / "work")
    made, new = await build(b, None)
    lost = lose_a_part(made, new)
    await local.delete_keys([lost])
    before = await keys(local)
    staging = private_dir(tmp_path / "staging")
    undated: Any = Undated(local)
    assert not isinstance(undated, DatedLister)
    with pytest.raises(PruneError, match=f"index part {lost} is missing.*nothing deleted"):
        await run_prune(undated, "box", DAILY, staging_dir=staging, now=NOW)
    assert await keys(local) == before
    oldest = f"systems/box/uploads/{made[0]}/manifest.json"  # a damaged manifest, kept
    await local.put_bytes(oldest, b"{not json", "application/json")
    with pytest.raises(PruneError, match=f"manifest {oldest} is not valid JSON.*nothing deleted"):
        await run_prune(undated, "box", DAILY, staging_dir=staging, now=NOW)
    assert await keys(local) == before


@pytest.mark.s3
async def test_on_s3_the_lost_part_keeps_all_stored_before_it(
    s3: WeedServer, tmp_path: Path, system_id: str
) -> None:
    """On a real server, with the times it gives: everything stored up to the oldest
    upload's manifest (plus the margin: here, all of it) stays, the dropped manifests go."""
    target = s3.s3_target("box", retry_backoff=0.1, max_retries=1)
    await target.start()
    try:
        b = Builder(target, "box", tmp_path / "work")
        made, new = await build(b, None)
        lost = lose_a_part(made, new)
        await target.delete_keys([lost])
        started = time.time()
        staging = private_dir(tmp_path / "staging")
        result = await run_prune(target, "box", DAILY, staging_dir=staging, now=NOW)
        assert time.time() - started < 30
        assert result.uploads_removed == made[1:5]
        assert result.unreadable == [f"upload {made[0]}: index part {lost} is missing"]
        assert result.objects_deleted == 4 and result.packs_repacked == 0  # the manifests
        left = await keys(target)
        for upload_id in made[1:5]:
            assert new[upload_id] - left == {f"systems/box/uploads/{upload_id}/manifest.json"}
        assert await restore(target, "box", made[5]) == b.expected[made[5]]
    finally:
        await target.close()
