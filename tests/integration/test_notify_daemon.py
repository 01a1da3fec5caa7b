"""sd_notify from a running daemon to a datagram socket the test owns."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path

from tests.helpers import base_env, start_daemon, wait_for, write_config
from tests.storegen import make_store
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
    make_store(tmp_path / "store")
    sock_dir = short_dir()
    settings: dict[str, object] = {
        "data_dir": str(tmp_path / "store"),
        "state_dir": str(tmp_path / "state"),
        "local_target_dir": str(tmp_path / "outbox"),
        "socket_path": str(sock_dir / "a.sock"),
        "debounce_seconds": 0.2,
        "max_delay_seconds": 2,
        "cloud_sync": {"system_id": "notify"},
    }
    settings.update(extra)
    cfg = write_config(tmp_path / "c.yaml", **settings)
    notify = NotifySocket()
    env = base_env(tmp_path)
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
        assert notify.lines("STOPPING=1")
    finally:
        if proc.poll() is None:
            proc.kill()
        notify.close()


EMPTY_LISTING = (
    b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult '
    b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix></Prefix>'
    b"<KeyCount>0</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>false</IsTruncated>"
    b"</ListBucketResult>"
)


class StalledServer:
    """An S3 endpoint that hangs: it answers the bucket check (a ListObjectsV2, so akoshad
    goes on to write) with an empty listing and never answers anything else."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []  # connections left hanging
        self._stop = threading.Event()
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                if not (head.startswith(b"GET ") and b"list-type=2" in head.split(b"\r\n")[0]):
                    self.conns.append(conn)  # hang: never answered
                    return
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
                    + f"Content-Length: {len(EMPTY_LISTING)}\r\n\r\n".encode()
                    + EMPTY_LISTING
                )
        except OSError:
            return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


def test_no_watchdog_while_wedged(tmp_path: Path) -> None:
    stalled = StalledServer()
    cfg, env, notify = _setup(
        tmp_path,
        watchdog_stall_seconds=1.5,
        cloud_sync={
            "system_id": "notify",
            "cloud_bucket": "b",
            "cloud_endpoint": f"http://127.0.0.1:{stalled.port}",
            "access_key_id": "AKIAEXAMPLEKEY",
            "secret_access_key": "x" * 30,
            "upload_timeout_seconds": 30,
            "max_retries": 0,
        },
    )
    proc = start_daemon(cfg, env, tmp_path / "d.log")
    try:
        wait_for(lambda: notify.lines("READY=1"), 60)
        log = tmp_path / "d.log"
        wait_for(lambda: "watchdog withheld" in log.read_text(), 30)
        assert len(stalled.conns) >= 1  # the upload is hanging on the server
        quiet_from = time.monotonic()
        time.sleep(3)
        late = [t for t, _ in notify.lines("WATCHDOG=1") if t > quiet_from]
        assert late == [], "the watchdog was fed while the pipeline was wedged"
    finally:
        proc.kill()
        proc.wait()
        notify.close()
        stalled.close()
