"""A restore stopped by Ctrl-C, SIGTERM or SIGHUP leaves no temporary file in --dest and
says in one line that --dest holds only part of the upload (exit 128 + the signal).

Before: Ctrl-C ended it with exit 130 and no word, and a file whose temporary name was
being made when the signal came stayed behind (the worker was cancelled twice: once with
the restore, once more by the fetch's own clean-up, and the second cut the first's
clean-up short); SIGTERM and SIGHUP killed it where it stood."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from akoshad.restore.marker import MARKER
from tests.helpers import akoshad, daemon_config

# the restore in a child: the signal comes while the temporary file of big.bin is being
# made in a worker thread, which then takes a while to hand it back
CHILD = """
import os, signal, sys, time
from akoshad.restore import landing
made = landing.Committer.sink
def sink(self, f):
    got = made(self, f)
    if f.path == "big.bin":
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
        time.sleep(0.5)
    return got
landing.Committer.sink = sink
from akoshad.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_an_interrupted_restore_cleans_up_and_says_what_dest_holds(
    tmp_path: Path, name: str
) -> None:
    config, env = daemon_config(tmp_path, "stopped", store=False)
    store = tmp_path / "store"
    (store / "sub").mkdir(parents=True)
    for i in range(12):
        (store / "sub" / f"n{i}.json").write_text(f'{{"n": {i}}}')
    (store / "big.bin").write_bytes(os.urandom(6 << 20))
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    dest = tmp_path / "back"
    restore = ["restore", "--config", str(config), "--latest", "--dest", str(dest)]
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, name, *restore],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    signum = getattr(signal, name)
    assert proc.returncode == 128 + signum, (proc.returncode, proc.stderr)
    left = [p for p in dest.rglob("*") if p.name.startswith(".akoshad-") and p.name != MARKER]
    assert left == [], left
    assert not (dest / "big.bin").exists()
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("akoshad: restore of upload "), lines
    assert " interrupted: " in lines[0]
    if any(dest.iterdir()):
        assert f"{dest} holds only part of it" in lines[0] and "--force" in lines[0]
        assert (dest / MARKER).is_file()  # --dest itself tells it holds only part
    else:
        assert f"nothing was restored into {dest}" in lines[0]
    # the next restore into it completes it
    again = akoshad(*restore, "--force", env=env)
    assert again.returncode == 0, again.stderr
    assert (dest / "big.bin").read_bytes() == (store / "big.bin").read_bytes()
