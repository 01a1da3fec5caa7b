"""A running daemon whose state directory stops taking writes (a full disk, met through a
real file size limit on the daemon's process): what it says, and that nothing is lost."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from akoshad.cli.mcp import sync_result
from tests.helpers import akoshad, daemon_config, manifests, stop_daemon, wait_for

SYSTEM = "fullstate"


@contextmanager
def _daemon(cfg: Path, env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[bytes], list[str]]]:
    """The daemon, its log read through a pipe (a pipe is not held to the file size limit
    its files are): the process and the log lines so far."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "akoshad", "run", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.append(raw.decode(errors="replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        yield proc, lines
    finally:
        assert stop_daemon(proc) == 0
        reader.join(10)
        assert "Traceback" not in "".join(lines)


def _file_size_limit(pid: int, soft: int) -> None:
    """Writes past ``soft`` bytes into any regular file fail (EFBIG) in process ``pid``."""
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))


def test_sync_wait_fails_while_the_changes_cannot_be_recorded(tmp_path: Path) -> None:
    """``sync --wait`` while the state's disk refuses every write: the change seen cannot
    go on the queue, so the sync has not uploaded it and must not say it is done."""
    # a short retry base: each pass that fails while the disk refuses writes doubles the
    # wait before the next (capped at 5 minutes); with the default 2 s, a slow run that
    # failed six passes waited over a minute after the disk was back
    cfg, env = daemon_config(tmp_path, SYSTEM, cloud_sync={"retry_backoff_seconds": 0.1})
    outbox = tmp_path / "outbox"
    with _daemon(cfg, env) as (proc, log):
        wait_for(lambda: manifests(outbox, SYSTEM), 30)
        _file_size_limit(proc.pid, 1)
        (tmp_path / "store" / "late.json").write_text('{"late": true}')
        wait_for(lambda: any("could not be recorded" in line for line in log), 20)
        res = akoshad("sync", "--wait", "--json", "--config", str(cfg), env=env)
        assert res.returncode == 1, res.stdout + res.stderr
        result = json.loads(res.stdout)
        assert result["ok_drain"] is False and result["pending"] >= 1
        assert "could not be recorded" in result["error"]
        tool = sync_result(result, 1.0)  # what the MCP tool sync_to_akosha answers
        assert tool["success"] is False and "could not be recorded" in tool["message"]
        text = akoshad("sync", "--wait", "--config", str(cfg), env=env)
        assert text.returncode == 1 and "could not be recorded" in text.stdout
        status = akoshad("status", "--json", "--config", str(cfg), env=env)
        assert any("could not be recorded" in w for w in json.loads(status.stdout)["warnings"])
        check = akoshad("status", "--check", "--config", str(cfg), env=env)
        assert check.returncode != 0 and "could not be recorded" in check.stdout + check.stderr

        _file_size_limit(proc.pid, resource.RLIM_INFINITY)

        def drained() -> bool:
            # passes that failed while the disk refused writes wait out their backoff:
            # each sync succeeds, and the queue is empty once they are due and landed
            done = akoshad("sync", "--wait", "--json", "--config", str(cfg), env=env)
            assert done.returncode == 0, done.stdout + done.stderr
            return bool(json.loads(done.stdout)["pending"] == 0)

        wait_for(drained, 60)
        healthy = akoshad("status", "--json", "--config", str(cfg), env=env)
        assert json.loads(healthy.stdout)["warnings"] == []
        newest = manifests(outbox, SYSTEM)[-1]["metadata"]["upload_id"]
    dest = tmp_path / "restored"
    akoshad("restore", "--upload-id", newest, "--dest", str(dest), "--config", str(cfg), env=env)
    assert (dest / "late.json").read_text() == '{"late": true}'


def test_a_queue_that_cannot_be_written_is_logged_once_a_minute(tmp_path: Path) -> None:
    """A store that goes on changing while the state's disk is full: each batch of changes
    fails again every 2 s; the log says so once (then once a minute, with a count), not
    once per batch and retry (hundreds of lines a minute), and says when it is over."""
    cfg, env = daemon_config(tmp_path, SYSTEM)
    outbox = tmp_path / "outbox"
    with _daemon(cfg, env) as (proc, log):
        wait_for(lambda: manifests(outbox, SYSTEM), 30)
        _file_size_limit(proc.pid, 1)
        for i in range(8):  # released one by one: eight batches, each retried every 2 s
            (tmp_path / "store" / f"late-{i}.json").write_text(f'{{"late": {i}}}')
            time.sleep(0.6)
        time.sleep(4)
        said = [line for line in log if "could not be recorded" in line]
        assert len(said) == 1, said
        _file_size_limit(proc.pid, resource.RLIM_INFINITY)
        wait_for(lambda: any("recorded on the queue again" in line for line in log), 30)
        wait_for(lambda: "late-7.json" in str(manifests(outbox, SYSTEM)[-1]), 30)
