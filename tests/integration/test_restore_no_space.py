"""A restore that runs out of disk says which file it could not write and that the
destination holds only part of the upload, in one line, exit 1 (before: a bare
``OSError`` line naming nothing)."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from akoshad.cli.main import main
from akoshad.restore import readback
from tests.helpers import akoshad, daemon_config


def test_a_restore_without_room_names_the_file_and_the_partial_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config, env = daemon_config(tmp_path, "nospace")
    akoshad("run", "--once", "--config", str(config), env=env, check=True)

    async def full(*_: Any, **__: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "back/x.duckdb"))

    monkeypatch.setattr(readback, "restore_upload", full)
    for key in list(env):
        monkeypatch.setenv(key, env[key])
    dest = tmp_path / "back"
    code = main(["restore", "--config", str(config), "--latest", "--dest", str(dest)])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1, err
    assert "x.duckdb" in err and "No space left on device" in err
    assert "holds only part of the upload" in err and "--force" in err
