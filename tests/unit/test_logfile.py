"""The log_file sink: rotation by size, mode 0600, and a disk that fills: one line, no
traceback per record."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from akoshad.errors import ConfigError
from akoshad.runtime import logfile
from akoshad.runtime.logfile import LogFile
from tests.helpers import akoshad, base_env, write_config

# a process whose files may not grow past 4 KiB (RLIMIT_FSIZE; Python ignores SIGXFSZ, so a
# write past it fails with EFBIG, as one on a full disk does with ENOSPC)
CHILD = """
import resource, sys
from loguru import logger
from akoshad.config import load_settings
from akoshad.runtime.logs import setup_logging
setup_logging(load_settings(environ={"HOME": sys.argv[2]}, overrides={"log_file": sys.argv[1]}),
              environ={})
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
for n in range(200):
    logger.info("record {} {}", n, "x" * 40)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
open(sys.argv[1], "w").close()  # room again (the file emptied)
logger.info("after")
"""


def test_a_full_file_system_is_one_line_not_a_traceback_per_record(tmp_path: Path) -> None:
    # loguru's file sink printed '--- Logging error in Loguru Handler #2 --- Traceback ...
    # OSError: [Errno 28] No space left on device' on stderr for every record
    path = tmp_path / "akoshad.log"
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0
    err = done.stderr
    assert "Traceback" not in err and "Logging error" not in err
    notices = [line for line in err.splitlines() if "cannot be written" in line]
    assert len(notices) == 1
    assert notices[0].endswith(
        f"WARNING log_file {path} cannot be written (File too large): its records are lost "
        "until it can; they still come here"
    )
    assert err.count(" record ") == 200  # every record still reaches standard error
    assert f"log_file {path} takes writes again" in err
    assert "after" in path.read_text()


def test_the_file_rotates_by_size_and_keeps_five(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    notes: list[str] = []
    sink = LogFile(path, notes.append, rotate_bytes=100)
    for n in range(40):
        sink.write(f"line {n:03d} " + "x" * 40 + "\n")  # two lines a file
    sink.stop()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["a.log", "a.log.1", "a.log.2", "a.log.3", "a.log.4", "a.log.5"]
    assert path.read_text().startswith("line 038") and "line 039" in path.read_text()
    assert (tmp_path / "a.log.5").read_text().startswith("line 028")
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tmp_path.iterdir())
    assert notes == [] and logfile.KEPT == 5


def test_a_log_directory_others_can_write_to_is_refused(tmp_path: Path) -> None:
    # another user's link as akoshad.log in a 0777 directory: every record was appended to
    # the file it pointed at, made 0600 (a file akoshad never created), and run said nothing
    logs = tmp_path / "logs"
    logs.mkdir()
    logs.chmod(0o777)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    (logs / "akoshad.log").symlink_to(victim)
    with pytest.raises(ConfigError) as info:
        LogFile(logs / "akoshad.log", print)
    assert info.value.exit_code == 78
    assert str(info.value).startswith(
        f"log_file {logs}/akoshad.log: log_file's directory {logs} (mode 0777) can be written "
        "by other users"
    )
    assert victim.read_text() == "precious\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_in_a_sticky_directory_only_a_file_of_ours_alone_is_written(tmp_path: Path) -> None:
    logs = tmp_path / "tmp"
    logs.mkdir()
    logs.chmod(0o1777)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    path = logs / "akoshad.log"
    for plant in (path.symlink_to, path.hardlink_to):
        plant(victim)
        with pytest.raises(OSError):
            LogFile(path, print)
        path.unlink()
    assert victim.read_text() == "precious\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644
    sink = LogFile(path, print)  # a new file: ours
    sink.write("line\n")
    sink.stop()
    assert path.read_text() == "line\n" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_config_check_refuses_the_log_directory_run_refuses(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    logs.chmod(0o777)
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(tmp_path / "s.sock"),
        log_file=str(logs / "akoshad.log"),
    )
    proc = akoshad("config", "check", "--config", str(cfg), env=base_env(tmp_path))
    assert proc.returncode == 78, proc.stdout  # it said "configuration ok"
    assert proc.stderr.startswith(f"akoshad: log_file {logs}/akoshad.log: log_file's directory")
    assert len(proc.stderr.splitlines()) == 1
