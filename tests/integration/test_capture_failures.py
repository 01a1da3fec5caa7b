"""A file whose capture fails (the staging disk full) and is tried again: logged, in the
status's ``capture_failures`` and warnings, ``status --check`` fails, and an upload that
does not hold it at all lists it in ``metadata.skipped`` with its reason; once it is
captured again all of that ends."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from akoshad.pipeline.capture.snapshot import Snapshotter
from akoshad.runtime.health import capture_problem, check_problems
from akoshad.targets.local import LocalTarget
from tests.f2_rig import close_rig, open_rig, rig_settings

SID = "capturefail"


async def test_a_capture_that_fails_is_said_everywhere_until_it_passes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = rig_settings(tmp_path, SID)
    rig = await open_rig(settings, LocalTarget(tmp_path / "outbox"), tmp_path / "state.db")
    real = Snapshotter._capture_stable
    full = {"main.bin"}

    def capture(self: Snapshotter, rel: str, *args: Any, **kwargs: Any) -> Any:
        if rel in full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, rel, *args, **kwargs)

    monkeypatch.setattr(Snapshotter, "_capture_stable", capture)
    try:
        rig.write("main.bin", b"m" * (3 * 1024 * 1024))  # not captured in memory
        rig.write("other.json", b"{}")
        (report,) = await rig.sync()
        # where it is full: the staging in state_dir, not the store's disk (the line said
        # only 'capture failed: No space left on device')
        staging = settings.state_dir / "staging"
        why = f"capture failed: no room to stage a copy in {staging}: No space left on device"
        assert report.retrying == {"main.bin": why}
        (upload,) = await rig.uploads()
        manifest = await rig.manifest(upload)
        assert [f["path"] for f in manifest["metadata"]["files"]] == ["other.json"]
        assert manifest["metadata"]["skipped"] == [{"path": "main.bin", "reason": why}]
        failures = rig.uploader.stats.capture_failures
        assert failures == {"main.bin": why}
        line = capture_problem(failures)
        assert line is not None and line.startswith("main.bin cannot be captured: capture")
        assert line in check_problems({"capture_failures": failures})
        full.clear()  # room again
        await rig.state.transaction(lambda c: c.execute("UPDATE queue SET next_attempt = 0"))
        (report,) = await rig.sync()
        assert report.retrying == {} and report.upload_id
        manifest = await rig.manifest(report.upload_id)
        assert {f["path"] for f in manifest["metadata"]["files"]} == {"main.bin", "other.json"}
        assert manifest["metadata"]["skipped"] == []
        assert rig.uploader.stats.capture_failures == {}
        assert check_problems({"capture_failures": {}}) == []
    finally:
        await close_rig(rig)
