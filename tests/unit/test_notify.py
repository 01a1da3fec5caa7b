"""sd_notify messages on a real datagram socket, and every transition of the watchdog policy."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from akoshad.runtime.notify import Notifier, WatchdogPolicy
from tests.tmpdirs import short_dir


@pytest.fixture
def dgram() -> Iterator[socket.socket]:
    path = short_dir() / "n.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    yield s
    s.close()
    path.unlink(missing_ok=True)


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
    assert n.enabled and n.watchdog_interval == 2.0
    n.ready()
    n.status("idle: 0 pending")
    n.status("idle:   0 pending")  # same line after whitespace folding: not sent again
    n.status("syncing\nsecond line")
    n.watchdog()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    n.stopping()
    n.stopping(within=115)  # drain_deadline_seconds 100, raised since the unit's install
    got = recv_all(dgram)
    assert got[:4] == [
        "READY=1",
        "STATUS=idle: 0 pending",
        "STATUS=syncing second line",
        "WATCHDOG=1",
    ]
    first, second = got[4].split("\n")
    assert first == "RELOADING=1"
    key, usec = second.split("=")
    assert key == "MONOTONIC_USEC" and before <= int(usec) <= after
    assert got[5:] == ["STOPPING=1", "STOPPING=1\nEXTEND_TIMEOUT_USEC=115000000"]
    assert list(n.sent) == got and n.failures == 0


def test_abstract_socket_address() -> None:
    name = f"akoshad-test-{os.getpid()}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)
    try:
        Notifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert recv_all(s) == ["READY=1"]
    finally:
        s.close()


def test_no_socket_is_a_no_op() -> None:
    n = Notifier({"WATCHDOG_USEC": "1000000"})
    n.ready()
    n.status("x")
    n.reloading()
    n.watchdog()
    n.stopping()
    assert not n.enabled and list(n.sent) == [] and n.watchdog_interval is None


def test_vanished_socket_never_raises_and_status_is_retried(dgram: socket.socket) -> None:
    addr = dgram.getsockname()
    n = Notifier({"NOTIFY_SOCKET": addr})
    dgram.close()
    Path(addr).unlink()
    n.ready()  # must not raise
    n.status("x")
    n.watchdog()
    assert n.failures == 3 and list(n.sent) == []
    # the manager comes back (re-executed, socket re-created): the same STATUS is sent now
    again = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    again.bind(addr)
    try:
        n.status("x")
        assert recv_all(again) == ["STATUS=x"]
    finally:
        again.close()


def test_sent_history_is_bounded(dgram: socket.socket) -> None:
    n = Notifier({"NOTIFY_SOCKET": dgram.getsockname()})
    for _ in range(1000):
        n.watchdog()
        recv_all_nowait(dgram)
    assert 0 < len(n.sent) <= 100


def recv_all_nowait(s: socket.socket) -> None:
    s.setblocking(False)
    try:
        while True:
            s.recv(4096)
    except BlockingIOError:
        pass


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "1000000"}, 0.5),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, 0.5),
        ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "2"}, None),  # meant for another pid
        ({"WATCHDOG_USEC": "nope"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/nonexistent", **env}, pid=1).watchdog_interval == interval


def test_watchdog_pid_defaults_to_this_process() -> None:
    env = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "2000000"}
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_interval == 1.0
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog_interval is None


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_policy_idle_always_pings() -> None:
    p = WatchdogPolicy(10, clock=Clock())
    for i in range(5):
        p.observe(0, busy=False, now=100.0 * i)
        assert p.should_ping(now=100.0 * i) and not p.wedged
        p.pinged()


def test_policy_busy_with_progress_pings() -> None:
    p = WatchdogPolicy(10, clock=Clock())
    for seq in range(1, 6):
        now = 30.0 * seq  # far past the stall limit each time, but progress arrived
        p.observe(seq, busy=True, now=now)
        assert p.should_ping(now=now)
        p.pinged()


def test_policy_busy_without_progress_stops_after_stall() -> None:
    c = Clock()
    p = WatchdogPolicy(10, clock=c)
    p.observe(1, busy=True)
    assert p.should_ping()
    p.pinged()
    c.t = 5
    p.observe(1, busy=True)
    assert p.should_ping() and not p.wedged  # within the grace: one slow request
    p.pinged()
    c.t = 10.5
    p.observe(1, busy=True)
    assert not p.should_ping() and p.wedged
    c.t = 500
    p.observe(1, busy=True)
    assert not p.should_ping() and p.wedged  # stays withheld while nothing moves
    c.t = 501
    p.observe(2, busy=True)  # progress again
    assert p.should_ping() and not p.wedged
    p.pinged()
    c.t = 600
    p.observe(2, busy=False)  # nothing to do any more
    assert p.should_ping() and not p.wedged


def test_policy_progress_is_pinged_once_then_the_stall_clock_runs() -> None:
    c = Clock()
    p = WatchdogPolicy(10, clock=c)
    p.observe(7, busy=True)
    c.t = 50  # asked late: the unacknowledged progress still earns one ping
    assert p.should_ping()
    p.pinged()
    assert not p.should_ping()  # ... but only one: the stall is measured from t=0


def test_policy_idle_to_busy_starts_the_stall_clock() -> None:
    c = Clock()
    p = WatchdogPolicy(10, clock=c)
    p.observe(3, busy=False)
    p.pinged()
    c.t = 3600  # idle for an hour, then work arrives without progress yet
    p.observe(3, busy=True)
    assert p.should_ping() and not p.wedged
    c.t = 3609
    p.observe(3, busy=True)
    assert p.should_ping()
    c.t = 3611
    p.observe(3, busy=True)
    assert not p.should_ping() and p.wedged


def test_policy_busy_to_idle_while_wedged_recovers() -> None:
    c = Clock()
    p = WatchdogPolicy(10, clock=c)
    p.observe(1, busy=True)
    p.pinged()
    c.t = 20
    p.observe(1, busy=True)
    assert p.wedged
    p.observe(1, busy=False)  # the stuck work was dropped or finished without a bump
    assert p.should_ping() and not p.wedged


def test_policy_now_argument_overrides_the_clock() -> None:
    p = WatchdogPolicy(10, clock=lambda: 0.0)
    p.observe(1, busy=True, now=0.0)
    p.pinged()
    assert p.should_ping(now=9.9)
    assert not p.should_ping(now=10.0)


def test_status_line_shows_no_secret(dgram: socket.socket) -> None:
    """STATUS= is read by anyone who runs ``systemctl status``: a target's error that names
    akosha_url's credentials (or any registered secret) goes out redacted, as in status."""
    from akoshad.redaction import register_secret, register_url

    register_url("http://ops:Notify-Pass-83@akosha.example:8682/mcp")
    register_secret("S3-notify-secret-0042")
    n = Notifier({"NOTIFY_SOCKET": dgram.getsockname()}, pid=1)
    n.status(
        "degraded: 2 pending; http: cannot connect to Akosha at "
        "ops:Notify-Pass-83@akosha.example:8682: Connection refused; "
        "cloud: rejected S3-notify-secret-0042"
    )
    (got,) = recv_all(dgram)
    assert got.startswith("STATUS=degraded: 2 pending; http: cannot connect to Akosha at ")
    assert "Notify-Pass-83" not in got and "S3-notify-secret-0042" not in got, got


def test_the_start_timeout_is_extended_while_starting_and_only_then(dgram: socket.socket) -> None:
    """A daemon whose start outlasts TimeoutStartSec (100,000 queued files: 11 s; a huge
    store) was killed by systemd as a hung start; it now extends the timeout as it goes."""
    n = Notifier({"NOTIFY_SOCKET": dgram.getsockname()})

    async def start() -> None:
        async with n.extending_start(every=0.05, limit=60):
            await asyncio.sleep(0.22)
        await asyncio.sleep(0.15)  # started: no extension any more

    asyncio.run(start())
    got = recv_all(dgram)
    assert got[0] == "STATUS=starting: recovering the queue and reconciling the store"
    extends = got[1:]
    assert 4 <= len(extends) <= 6, got
    assert set(extends) == {"EXTEND_TIMEOUT_USEC=60050000"}  # the next one's time, and 60 s


def test_a_start_extended_no_longer_than_its_limit(dgram: socket.socket) -> None:
    n = Notifier({"NOTIFY_SOCKET": dgram.getsockname()})

    async def start() -> None:
        async with n.extending_start(every=0.05, limit=0.12):
            await asyncio.sleep(0.4)  # wedged: the unit's own timeout then applies

    asyncio.run(start())
    assert len([m for m in recv_all(dgram) if m.startswith("EXTEND")]) <= 3


def test_no_socket_extends_nothing() -> None:
    n = Notifier({})

    async def start() -> None:
        async with n.extending_start(every=0.01):
            await asyncio.sleep(0.05)

    asyncio.run(start())
    assert not n.sent


def test_no_ready_after_stopping(dgram: socket.socket) -> None:
    """A reload in progress when shutdown cancelled it sent READY=1 (its ``finally``) after
    STOPPING=1: the manager took the stopping daemon for running again."""
    n = Notifier({"NOTIFY_SOCKET": dgram.getsockname()}, pid=1)
    n.ready()
    n.reloading()
    n.stopping(within=65)
    n.ready()  # the reload's finally, after the stop began
    got = recv_all(dgram)
    assert got[0] == "READY=1" and got[-1].startswith("STOPPING=1")
    assert got.count("READY=1") == 1
