"""A drill by hand stopped by Ctrl-C, SIGTERM or SIGHUP removes its restored copy of the
store from state_dir and says it was interrupted (exit 128 + the signal). Before: SIGTERM
and SIGHUP killed it where it stood, leaving ``state_dir/drill-*`` (a plaintext copy of
the store) until the next drill or start, without a word."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import akoshad, daemon_config

# the drill in a child: the signal comes once its directory is made, mid-restore
CHILD = """
import asyncio, os, signal, sys
from akoshad.restore import drill
restore_all = drill.restore_all
async def slow(*args, **kwargs):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    await asyncio.sleep(2)
    return await restore_all(*args, **kwargs)
drill.restore_all = slow
from akoshad.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_an_interrupted_drill_removes_its_copy_and_says_so(tmp_path: Path, name: str) -> None:
    config, env = daemon_config(tmp_path, "drillstop")
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, name, "drill", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 128 + getattr(signal, name), (proc.returncode, proc.stderr)
    assert sorted((tmp_path / "state").glob("drill-*")) == []
    said = "akoshad: drill interrupted: not recorded (nothing of it left in state_dir)\n"
    assert proc.stderr == said
    assert proc.stdout == ""


# Ctrl-C while the drill looks for a daemon (no socket: the look fails at once)
LOOKING = """
import asyncio, os, signal, sys
async def no_socket(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGINT)
    raise FileNotFoundError(2, "No such file or directory")
asyncio.open_unix_connection = no_socket
from akoshad.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_while_a_drill_looks_for_the_daemon_stops_it(tmp_path: Path) -> None:
    """Before: asyncio.wait_for swallowed the cancellation as the look failed, and the whole
    drill ran regardless, exit 0."""
    config, env = daemon_config(tmp_path, "drillstart")
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    proc = subprocess.run(
        [sys.executable, "-c", LOOKING, "drill", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 130, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    assert "drill interrupted" in proc.stderr
