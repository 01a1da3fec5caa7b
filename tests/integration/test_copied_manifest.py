"""A manifest found under another upload's folder (copied, or a folder renamed) is not that
upload: its ``metadata.upload_id`` names another. It was listed, verified and restored as
the newer upload, so ``restore --latest`` brought back an older snapshot as the latest."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta
from pathlib import Path

from tests.helpers import akoshad, daemon_config


def _just_after(upload_id: str) -> str:
    """An upload id one microsecond after ``upload_id`` (in the past: not skipped)."""
    stamp = datetime.strptime(upload_id[:21], "%Y%m%dT%H%M%S%f") + timedelta(microseconds=1)
    return stamp.strftime("%Y%m%dT%H%M%S%f") + "Z-c0ffee"


def test_a_copied_manifest_is_damaged_not_a_newer_upload(tmp_path: Path) -> None:
    config, env = daemon_config(tmp_path, "copied")
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    uploads = tmp_path / "outbox" / "systems" / "copied" / "uploads"
    (real,) = [p.name for p in uploads.iterdir()]
    later = _just_after(real)
    shutil.copytree(uploads / real, uploads / later)
    listed = akoshad("uploads", "--config", str(config), env=env)
    assert listed.returncode == 0, listed.stderr
    (row,) = [line for line in listed.stdout.splitlines() if line.startswith(later)]
    assert f"DAMAGED: it is the manifest of upload {real} (copied or moved)" in row
    dest = tmp_path / "back"
    proc = akoshad("restore", "--config", str(config), "--latest", "--dest", str(dest), env=env)
    assert proc.returncode == 1
    assert proc.stderr == (
        f"akoshad: manifest of upload {later} is invalid: it is the manifest of upload "
        f"{real} (copied or moved)\n"
    )
    args = ["--upload-id", real, "--dest", str(dest)]
    assert akoshad("restore", "--config", str(config), *args, env=env).returncode == 0
