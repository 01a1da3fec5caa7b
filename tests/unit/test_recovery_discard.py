"""Removing a failed upload's objects never leaves its manifest naming deleted objects."""

from __future__ import annotations

from pathlib import Path

from akoshad.errors import TransientError
from akoshad.manifest.layout import manifest_key, upload_prefix
from akoshad.pipeline.recovery import Discarder
from akoshad.targets.local import LocalTarget

SID = "disc"
UPLOAD = "20261201T100000000000Z-abcdef"
PACK = f"systems/{SID}/packs/ab/{'ab' * 32}"


class DeletesAllButManifests(LocalTarget):
    """A target whose batch deletions fail half-way: every key goes but a manifest's."""

    async def delete_keys(self, keys: list[str]) -> None:
        await super().delete_keys([k for k in keys if not k.endswith("/manifest.json")])
        if len(keys) > 1 or keys[0].endswith("/manifest.json"):
            raise TransientError("DeleteObjects: some keys were not deleted")


async def _target(tmp_path: Path, cls: type[LocalTarget] = LocalTarget) -> LocalTarget:
    target = cls(tmp_path / "outbox")
    await target.start()
    for key in (
        manifest_key(SID, UPLOAD),
        upload_prefix(SID, UPLOAD) + "index-0.json.gz",
        PACK,
    ):
        await target.put_bytes(key, b"x", "application/octet-stream")
    return target


async def test_a_manifest_that_landed_after_all_goes_first(tmp_path: Path) -> None:
    target = await _target(tmp_path, DeletesAllButManifests)
    await Discarder(SID).discard(target, UPLOAD, [PACK])
    # the manifest could not be deleted: nothing it names was deleted either
    assert await target.head(manifest_key(SID, UPLOAD)) is not None
    assert await target.head(PACK) is not None
    assert await target.head(upload_prefix(SID, UPLOAD) + "index-0.json.gz") is not None


async def test_a_failed_upload_is_removed_whole(tmp_path: Path) -> None:
    target = await _target(tmp_path)
    await Discarder(SID).discard(target, UPLOAD, [PACK])
    assert [k async for k in target.list_keys(f"systems/{SID}/")] == []
