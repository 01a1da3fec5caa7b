"""A daemon started after a crash, while its S3 server is down or hangs: the upload the
crash interrupted cannot be settled then. The daemon still starts (its control socket
answers, it stays up) instead of exiting 1 (server down: systemd restarted it in a loop)
or waiting minutes with its socket closed and a SIGTERM unheeded (server hung); once the
server is back, the interrupted upload is settled and the store uploaded."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from akoshad.runtime.settle import START_TIMEOUT
from tests.helpers import akoshad, base_env, start_daemon, stop_daemon, wait_for, write_config
from tests.s3server import WeedServer
from tests.storegen import make_store

pytestmark = pytest.mark.s3
MiB = 1024 * 1024


def _in_progress(state: Path) -> list[str]:
    try:
        con = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True, timeout=0.1)
        try:
            rows = con.execute("SELECT upload_id FROM uploads WHERE outcome = 'in_progress'")
            return [str(r[0]) for r in rows.fetchall()]
        finally:
            con.close()
    except sqlite3.Error:
        return []


def _interrupted_upload(tmp_path: Path, s3: WeedServer, system_id: str) -> tuple[Path, Path]:
    """A config, and its state holding an upload ``kill -9`` interrupted."""
    store, state = tmp_path / "store", tmp_path / "state"
    make_store(store, conversations=5)
    with (store / "huge.bin").open("wb") as fh:  # keeps the upload busy for a while
        for _ in range(40):
            fh.write(os.urandom(4 * MiB))
    config = write_config(
        tmp_path / "c.yaml",
        data_dir=str(store),
        state_dir=str(state),
        socket_path=str(tmp_path / "s.sock"),
        min_upload_interval_seconds=0,
        cloud_sync=s3.cloud_sync(system_id, upload_timeout_seconds=30),
    )
    env = base_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "akoshad", "run", "--once", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: _in_progress(state), 60, interval=0.01)
    finally:
        proc.kill()
        proc.wait()
    assert _in_progress(state)
    return config, state


def _answers(config: Path, env: dict[str, str]) -> bool:
    res = akoshad("status", "--json", "--config", str(config), env=env, timeout=30)
    return res.returncode == 0 and bool(json.loads(res.stdout))


@pytest.mark.parametrize("outage", ["down", "hung"])
def test_a_start_after_a_crash_while_the_server_is_out_starts_and_settles_later(
    tmp_path: Path, s3: WeedServer, system_id: str, outage: str
) -> None:
    config, state = _interrupted_upload(tmp_path, s3, system_id)
    env = base_env(tmp_path)
    assert s3.proc is not None
    if outage == "down":
        s3.stop()
    else:
        os.killpg(s3.proc.pid, signal.SIGSTOP)
    log = tmp_path / "daemon.log"
    daemon = start_daemon(config, env, log=log)
    try:
        started = time.monotonic()
        assert wait_for(lambda: _answers(config, env) or daemon.poll() is not None, 90, 0.5)
        assert daemon.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() - started < START_TIMEOUT + 30, log.read_text()[-3000:]
        time.sleep(2)
        assert daemon.poll() is None and _in_progress(state), log.read_text()[-3000:]
        res = akoshad("status", "--json", "--config", str(config), env=env, timeout=30)
        warnings = json.loads(res.stdout)["warnings"]
        assert any("an interrupted upload is not settled yet" in w for w in warnings), warnings
        if outage == "down":
            s3.start()
        else:
            os.killpg(s3.proc.pid, signal.SIGCONT)

        def landed() -> bool:
            keys = s3.keys(f"systems/{system_id}/uploads/")
            return not _in_progress(state) and any(k.endswith("/manifest.json") for k in keys)

        assert wait_for(landed, 180, 1.0), log.read_text()[-3000:]
        assert "not settled yet" in log.read_text()
        res = akoshad("status", "--json", "--config", str(config), env=env, timeout=30)
        assert not any("not settled" in w for w in json.loads(res.stdout)["warnings"])
    finally:
        if outage == "hung":
            os.killpg(s3.proc.pid, signal.SIGCONT)
        elif s3.proc is None or s3.proc.poll() is not None:
            s3.start()
        code = stop_daemon(daemon)
    assert code == 0, log.read_text()[-3000:]
