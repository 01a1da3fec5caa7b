"""A daemon left running after an upgrade: a command it does not know is named as such
(restart it), not its bare "unknown command" reply."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from akoshad.runtime import control
from akoshad.runtime.control import ControlServer
from akoshad.runtime.control_client import OlderDaemon, request
from tests.helpers import base_env, write_config
from tests.tmpdirs import short_dir

# what a daemon before owner records knew (no prune, takeover or drill by request)
OLD_COMMANDS = frozenset({"status", "sync", "pause", "resume", "queue"})


async def old_daemon(req: dict[str, Any]) -> dict[str, Any]:
    return {"state": "idle", "version": "0.1.0", "pid": 4242, "uptime_seconds": 7300}


async def run_cli(config: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "akoshad",
        *args,
        "--config",
        str(config),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("command", ["prune", "takeover"])
async def test_a_command_an_older_running_daemon_does_not_know_says_restart_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setattr(control, "COMMANDS", OLD_COMMANDS)
    sock = short_dir() / "old.sock"
    config = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(sock),
    )
    async with ControlServer(sock, old_daemon, max_line=4096, idle_timeout=5):
        code, out, err = await run_cli(config, base_env(tmp_path), command)
    assert code == 1, (out, err)
    assert err == (
        "akoshad: the running daemon is older (version 0.1.0, pid 4242, up 2 h) and does "
        f"not know '{command}'; restart it (`systemctl --user restart akoshad`, or as it "
        "was started) and try again\n"
    )
    assert "unknown command" not in out + err


async def test_an_unknown_command_error_names_the_older_daemon_even_without_its_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A daemon whose status says nothing of itself still gets the restart line; the
    reply to a command it knows is left as it is."""
    monkeypatch.setattr(control, "COMMANDS", OLD_COMMANDS)

    async def bare(req: dict[str, Any]) -> dict[str, Any]:
        return {}

    sock = short_dir() / "bare.sock"
    async with ControlServer(sock, bare, max_line=4096, idle_timeout=5):
        with pytest.raises(OlderDaemon, match=r"is older \(version \?\) and does not know"):
            await request(sock, {"cmd": "drill"})
        assert await request(sock, {"cmd": "status"}) == {}
