"""sd_notify from a running daemon to a datagram socket the test owns."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

from tests.helpers import daemon_config, start_daemon, wait_for
from tests.stalled_s3 import StalledServer, stalled_cloud
from tests.tmpdirs import short_dir


class NotifySocket:
    """Collects sd_notify datagrams with their arrival time."""

    def __init__(self) -> None:
        self.path = short_dir() / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self, prefix: str) -> list[tuple[float, str]]:
        return [(t, m) for t, m in self.messages if m.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _setup(tmp_path: Path, **extra: object) -> tuple[Path, dict[str, str], NotifySocket]:
    sock_dir = short_dir()
    cfg, env = daemon_config(tmp_path, "notify", socket_path=sock_dir / "a.sock", **extra)  # type: ignore[arg-type]
    notify = NotifySocket()
    env.update(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000")
    return cfg, env, notify


def test_ready_status_watchdog_reload_stopping(tmp_path: Path) -> None:
    cfg, env, notify = _setup(tmp_path)
    log = tmp_path / "d.log"
    proc = start_daemon(cfg, env, log)
    try:
        wait_for(lambda: notify.lines("READY=1"), 20)
        ready_at = notify.lines("READY=1")[0][0]
        assert "reconciled" in log.read_text()  # the first reconcile came before READY
        # a slow start (a large queue, a large store) is not killed at TimeoutStartSec
        extended = [t for t, m in notify.lines("EXTEND_TIMEOUT_USEC=80000000") if t < ready_at]
        assert extended, notify.messages
        wait_for(lambda: len(notify.lines("WATCHDOG=1")) >= 3, 10)
        assert all(t >= ready_at for t, _ in notify.lines("WATCHDOG=1"))
        wait_for(lambda: notify.lines("STATUS="), 10)
        assert all("\n" not in m for _, m in notify.lines("STATUS="))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: notify.lines("RELOADING=1"), 10)
        reload_at, msg = notify.lines("RELOADING=1")[0]
        assert "MONOTONIC_USEC=" in msg
        wait_for(lambda: [t for t, _ in notify.lines("READY=1") if t > reload_at], 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        # the manager waits drain_deadline_seconds (30) + 15 s whatever the unit says: one
        # raised after the unit was installed was cut short at its TimeoutStopSec before
        ((_, stopping),) = notify.lines("STOPPING=1")
        assert stopping == "STOPPING=1\nEXTEND_TIMEOUT_USEC=45000000"
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()


def test_no_watchdog_while_wedged(tmp_path: Path) -> None:
    stalled = StalledServer()
    cfg, env, notify = _setup(
        tmp_path,
        watchdog_stall_seconds=1.5,
        debounce_seconds=60,  # a change written below stays in the debouncer: no progress
        max_delay_seconds=120,
        cloud_sync=stalled_cloud(stalled, "notify", upload_timeout_seconds=30),
    )
    proc = start_daemon(cfg, env, tmp_path / "d.log")
    try:
        wait_for(lambda: notify.lines("READY=1"), 60)
        log = tmp_path / "d.log"
        wait_for(lambda: "watchdog withheld" in log.read_text(), 30)
        assert len(stalled.conns) >= 1  # the upload is hanging on the server
        quiet_from = time.monotonic()
        # each tick of the health loop decides on the watchdog, then sends STATUS= when the
        # line changed: a change held by the debouncer changes it (one more pending) without
        # any progress, so each STATUS= seen after quiet_from is a decision made while the
        # upload hangs
        for i in range(3):
            (tmp_path / "store" / f"pending-{i}.json").write_text("{}")

            def decided(seen: int = i + 1) -> bool:  # decisions seen so far, at least
                return len([t for t, _ in notify.lines("STATUS=") if t > quiet_from]) >= seen

            wait_for(decided, 15)
        late = [t for t, _ in notify.lines("WATCHDOG=1") if t > quiet_from]
        assert late == [], "the watchdog was fed while the pipeline was wedged"
    finally:
        proc.kill()
        proc.wait()
        notify.close()
        stalled.close()
