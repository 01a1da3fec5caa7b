"""A restore that runs out of disk says which file it could not write and that the
destination holds only part of the upload, in one line, exit 1 (before: a bare
``OSError`` line naming nothing)."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="procfs and sysfs")
def test_a_restore_into_a_place_that_takes_no_writes_says_so(tmp_path: Path) -> None:
    """Nothing was written and no space is missing: the line says --dest cannot be
    written and why, not "holds only part of the upload... free the space"."""
    config, env = daemon_config(tmp_path, "nowrite")
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    # real places no process may write, root included
    for dest, reason in [
        ("/sys/fs/akoshad-x", "Operation not permitted"),
        ("/proc/akoshad-x", "No such file or directory"),
    ]:
        proc = akoshad("restore", "--config", str(config), "--latest", "--dest", dest, env=env)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr == (
            f"akoshad: --dest {dest} cannot be written: {reason} "
            "(make it writable or choose another --dest)\n"
        )


def _file_size_limit(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE and EFBIG")
def test_a_real_write_error_names_the_file_it_stopped(tmp_path: Path) -> None:
    """A write that fails for lack of room carries no file name; the line still names the
    file of --dest that could not be written (before: "cannot write the restore: File too
    large; ..."). A file-size limit stands in for a full disk."""
    config, env = daemon_config(tmp_path, "bigfile", store=False)
    store = tmp_path / "store"
    store.mkdir()
    (store / "notes.json").write_text('{"a": 1}')
    (store / "big.bin").write_bytes(os.urandom(3 << 20))
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    dest = tmp_path / "back"
    restore = ["restore", "--config", str(config), "--latest", "--dest", str(dest)]
    proc = subprocess.run(
        [sys.executable, "-m", "akoshad", *restore],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        preexec_fn=lambda: _file_size_limit(1 << 20),
    )
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr
    assert f"cannot write the restore ({dest / 'big.bin'}): File too large" in proc.stderr
    assert "holds only part of the upload" in proc.stderr
    assert not (dest / "big.bin").exists()


def test_a_read_only_destination_is_not_a_partial_restore(tmp_path: Path) -> None:
    """A temporary file of ours is named by its directory, here --dest itself."""
    err = OSError(errno.EROFS, "Read-only file system", str(tmp_path / ".akoshad-restore-1-ab"))
    line = readback.partial_restore(tmp_path, err)
    assert line == (
        f"--dest {tmp_path} cannot be written: Read-only file system "
        "(make it writable or choose another --dest)"
    )


def test_a_dest_under_a_file_is_not_a_partial_restore(tmp_path: Path) -> None:
    """Nothing was written and no space is missing: one line saying --dest cannot be made
    and why (before: "... holds only part of the upload ...: free the space ...")."""
    config, env = daemon_config(tmp_path, "underfile")
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    (tmp_path / "afile").write_text("x")
    dest = tmp_path / "afile" / "back"
    proc = akoshad("restore", "--config", str(config), "--latest", "--dest", str(dest), env=env)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (
        f"akoshad: --dest {dest} cannot be made: Not a directory (choose another --dest)\n"
    )


def test_only_a_want_of_room_asks_to_free_the_space(tmp_path: Path) -> None:
    for code in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        line = readback.partial_restore(tmp_path, OSError(code, os.strerror(code), "x.db"))
        assert "holds only part of the upload" in line and "free the space" in line
    too_long = OSError(errno.ENAMETOOLONG, "File name too long", "x.db")
    line = readback.partial_restore(tmp_path, too_long)
    assert "holds only part of the upload" in line and "free the space" not in line
    assert "File name too long" in line
