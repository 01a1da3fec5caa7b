"""Power loss: a file fsynced inside a directory made just before is not enough for that
directory to be there after the crash; its name must be fsynced into its parent too. The
outbox made its directories (``uploads/ID/``, ``packs/xx/``) without that, and the state
then recorded an upload as done whose folder a power loss could take away."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from akoshad.targets.local import LocalTarget


def fsynced_dirs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The directories fsynced from now on (by path)."""
    seen: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if os.path.isdir(path):
            seen.append(path)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_every_directory_the_outbox_makes_is_fsynced_into_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "disk" / "outbox"
    target = LocalTarget(root)
    seen = fsynced_dirs(monkeypatch)
    asyncio.run(target.start())
    key = "systems/box/uploads/20261205T000000000000Z-abcdef/manifest.json"
    asyncio.run(target.put_bytes(key, b"{}", "application/json"))
    made = [root, *(root / "/".join(key.split("/")[:i]) for i in range(1, 5))]
    for directory in made:
        assert str(directory.parent) in seen, directory.parent
    seen.clear()
    asyncio.run(target.put_bytes("systems/box/packs/ab/p1", b"x", "application/octet-stream"))
    assert str(root / "systems" / "box" / "packs") in seen  # packs/ab/ is new


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_delete_is_made_durable_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune deletes the manifests first, then the packs no kept upload names: without
    an fsync between, a power loss could keep the removal of a pack and lose that of the
    manifest naming it (an upload listed that cannot be restored)."""
    root = tmp_path / "outbox"
    target = LocalTarget(root)
    asyncio.run(target.start())
    uploads = "systems/box/uploads"
    for key in (f"{uploads}/u1/manifest.json", f"{uploads}/u2/manifest.json", "systems/box/p"):
        asyncio.run(target.put_bytes(key, b"{}", "application/json"))
    seen = fsynced_dirs(monkeypatch)
    asyncio.run(target.delete_keys([f"{uploads}/u1/manifest.json", "systems/box/p"]))
    assert not (root / uploads / "u1").exists()
    assert sorted(seen) == [str(root / "systems" / "box"), str(root / uploads)]


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_restore_dest_it_makes_is_fsynced_into_its_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore fsyncs every file and every directory inside --dest before it reports
    success, but --dest itself (and the parents it made) was never fsynced into its parent:
    after a power loss the whole restored copy could be gone."""
    from akoshad.restore.destdir import open_dest

    dest = tmp_path / "new" / "dest"
    seen = fsynced_dirs(monkeypatch)
    os.close(open_dest(dest))
    assert str(tmp_path) in seen and str(tmp_path / "new") in seen
    seen.clear()
    os.close(open_dest(dest))  # there already: nothing made, nothing to fsync
    assert seen == []
