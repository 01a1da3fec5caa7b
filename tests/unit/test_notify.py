"""sd_notify messages on a real datagram socket, and the watchdog policy table."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import pytest

from akoshad.notify import Notifier, WatchdogPolicy


@pytest.fixture
def dgram() -> socket.socket:
    path = Path(tempfile.mkdtemp(prefix="ak", dir="/tmp")) / "n.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(1)
    return s


def recv_all(s: socket.socket) -> list[str]:
    out = []
    s.settimeout(0.2)
    while True:
        try:
            out.append(s.recv(4096).decode())
        except TimeoutError:
            return out


def test_messages(dgram: socket.socket) -> None:
    n = Notifier({"NOTIFY_SOCKET": dgram.getsockname(), "WATCHDOG_USEC": "4000000"}, pid=1)
    assert n.watchdog_interval == 2.0
    n.ready()
    n.status("idle: 0 pending")
    n.status("idle:   0 pending")  # same line after whitespace folding: not sent again
    n.status("syncing\nsecond line")
    n.watchdog()
    n.reloading()
    n.stopping()
    got = recv_all(dgram)
    assert got[:4] == [
        "READY=1",
        "STATUS=idle: 0 pending",
        "STATUS=syncing second line",
        "WATCHDOG=1",
    ]
    assert got[4].startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert got[5] == "STOPPING=1"


def test_no_socket_is_a_no_op() -> None:
    n = Notifier({})
    n.ready()
    n.watchdog()
    assert not n.enabled and n.sent == [] and n.watchdog_interval is None


def test_vanished_socket_never_raises(dgram: socket.socket) -> None:
    addr = dgram.getsockname()
    n = Notifier({"NOTIFY_SOCKET": addr})
    dgram.close()
    Path(addr).unlink()
    n.ready()  # must not raise
    n.status("x")


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "1000000"}, 0.5),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, 0.5),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "2"}, None),  # meant for another pid
        ({"WATCHDOG_USEC": "nope"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/nonexistent", **env}, pid=1).watchdog_interval == interval


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_policy_idle_always_pings() -> None:
    c = Clock()
    p = WatchdogPolicy(10, clock=c)
    for _ in range(5):
        c.t += 100
        p.observe(0, busy=False)
        assert p.should_ping()
        p.pinged()


def test_policy_busy_with_progress_pings() -> None:
    c = Clock()
    p = WatchdogPolicy(10, clock=c)
    for seq in range(1, 6):
        c.t += 30  # far past the stall limit, but progress arrived each time
        p.observe(seq, busy=True)
        assert p.should_ping()
        p.pinged()


def test_policy_busy_without_progress_stops_after_stall() -> None:
    c = Clock()
    p = WatchdogPolicy(10, clock=c)
    p.observe(1, busy=True)
    assert p.should_ping()
    p.pinged()
    c.t = 5
    p.observe(1, busy=True)
    assert p.should_ping() and not p.wedged  # within the grace
    p.pinged()
    c.t = 10.5
    p.observe(1, busy=True)
    assert not p.should_ping() and p.wedged
    c.t = 11
    p.observe(2, busy=True)  # progress again
    assert p.should_ping() and not p.wedged
    p.pinged()
    c.t = 30
    p.observe(2, busy=False)  # nothing to do any more
    assert p.should_ping()
