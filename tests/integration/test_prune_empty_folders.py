"""The local outbox: a prune killed between an upload's manifest and its folder left the
folder, empty, for ever; the next prune or start removes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.f2_rig import CountingTarget, close_rig
from tests.integration.test_format2_writer import SID
from tests.integration.test_prune_counts import Killed, _two_uploads


async def test_a_prune_killed_between_a_manifest_and_its_folder_leaves_no_empty_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The killed prune unlinked an upload's manifest but not its folder: the folder stayed
    empty in the outbox for ever (the sweeps work on files). The next prune, or the next
    start, removes it; a folder holding a file (an upload being written) stays."""
    import os

    from akoshad.pipeline.ownership import OwnerGate
    from akoshad.pipeline.stats import Stats
    from akoshad.runtime.prune import prune_target

    settings, rig = await _two_uploads(tmp_path)
    try:
        assert isinstance(rig.target, CountingTarget)
        rig.target.own_prefix = f"systems/{SID}/"  # as targets.make_target sets it
        uploads = tmp_path / "outbox" / "systems" / SID / "uploads"
        first = min(await rig.uploads())
        real_rmdir = os.rmdir

        def killed(*_: object, **__: object) -> None:
            raise Killed

        monkeypatch.setattr(os, "rmdir", killed)
        gate = OwnerGate(settings.state_dir, SID, Stats())
        with pytest.raises(Killed):
            await prune_target(settings, rig.state, rig.target, gate, dry_run=False)
        monkeypatch.setattr(os, "rmdir", real_rmdir)
        assert (uploads / first).is_dir() and not any((uploads / first).iterdir())
        writing = uploads / "29991231T000000000000Z-abcdef"  # an upload being written
        writing.mkdir()
        (writing / "part").write_bytes(b"x")
        (uploads / "mine").mkdir()  # not akoshad's: no upload id
        result = await prune_target(settings, rig.state, rig.target, gate, dry_run=False)
        assert result["ok"], result
        assert not (uploads / first).exists()  # was left, empty, for ever
        assert (writing / "part").is_file() and (uploads / "mine").is_dir()

        (uploads / first).mkdir()  # as left by a kill; the next start removes it
        await rig.target.start()
        assert not (uploads / first).exists() and (writing / "part").is_file()
    finally:
        await close_rig(rig)
