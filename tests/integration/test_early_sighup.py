"""A SIGHUP while ``akoshad run`` starts (``pkill -HUP akoshad``, ``systemctl reload`` right
after a start): before the loop's reload handler, SIGHUP's default action ended the
daemon (exit 129, no line). It is now noted from the process's first moment and becomes
one reload once the daemon runs."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from akoshad.entry import _command
from akoshad.runtime.control_client import request_sync
from tests.helpers import daemon_config, start_daemon, stop_daemon, wait_for
from tests.tmpdirs import short_dir


def _writer(fifo: Path, proc_alive: Callable[[], bool]) -> int:
    """The FIFO's write end, once the daemon has opened it to read its configuration."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        assert proc_alive(), "the daemon ended before reading"
        time.sleep(0.005)
    raise AssertionError("the daemon never opened its configuration")


def test_a_sighup_before_the_configuration_is_read_does_not_end_the_daemon(
    tmp_path: Path,
) -> None:
    sock = short_dir() / "s.sock"
    config, env = daemon_config(tmp_path, "early-hup", socket_path=sock)
    text = config.read_bytes()
    fifo = tmp_path / "fifo.yaml"  # the daemon blocks reading it: still starting, surely
    os.mkfifo(fifo, 0o600)
    log = tmp_path / "daemon.log"
    proc = start_daemon(fifo, env, log)
    try:
        fd = _writer(fifo, lambda: proc.poll() is None)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        assert proc.poll() is None, f"ended by the SIGHUP: exit {proc.returncode}"
        os.set_blocking(fd, True)
        os.write(fd, text)
        os.close(fd)
        os.replace(config, fifo)  # read again (the reload) as a plain file
        status = wait_for(lambda: _status(sock), 60)
        assert status["pid"] == proc.pid
        # the SIGHUP noted became one reload once the daemon ran
        wait_for(lambda: "configuration reloaded" in log.read_text(), 30)
    finally:
        code = stop_daemon(proc)
    assert code == 0, log.read_text()


def _status(sock: Path) -> dict[str, object] | None:
    with contextlib.suppress(Exception):
        return request_sync(sock, {"cmd": "status"}, 2.0)
    return None


def test_only_run_holds_sighup_from_its_start() -> None:
    """The command word, past ``--config FILE`` (a file named ``run`` is no command)."""
    assert _command(["run", "--once"]) == "run"
    assert _command(["--config", "run", "status"]) == "status"
    assert _command(["--config=x.yaml", "run"]) == "run"
    assert _command(["--debug"]) is None
