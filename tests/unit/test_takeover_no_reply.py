"""``akoshad takeover`` through a daemon that does not reply in time (its target does not
answer: the daemon keeps trying). Before, it said only "no reply from the daemon within
120 s", exit 1, and the daemon took the id over minutes later, the user told it failed."""

from __future__ import annotations

import argparse
import socket
import threading
from pathlib import Path

import pytest

from akoshad.cli import prune
from akoshad.errors import AkoshadError
from tests.f2_rig import rig_settings
from tests.tmpdirs import short_dir


def test_a_takeover_without_reply_says_the_daemon_goes_on_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = short_dir() / "a.sock"
    settings = rig_settings(tmp_path, "box", socket_path=str(sock))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock))
    server.listen(4)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:  # takes the request, answers nothing (a daemon still at it)
        server.settimeout(0.1)
        while not done.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setattr(prune, "TAKEOVER_WAIT", 0.5)
    try:
        with pytest.raises(AkoshadError) as failed:
            prune.cmd_takeover(argparse.Namespace(json=False), settings)
    finally:
        done.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
        sock.unlink()
    line = str(failed.value)
    assert line.startswith("no reply from the daemon within 0.5 s; the daemon goes on"), line
    assert "akoshad status" in line
