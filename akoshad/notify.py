"""systemd notifications (sd_notify) and the watchdog policy.

Without ``NOTIFY_SOCKET`` every call is a no-op; a notifier never raises. The watchdog is
fed only while the pipeline makes progress or has nothing to do: a wedged pipeline stops
the pings and systemd restarts the service.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

import sdnotify

Clock = Callable[[], float]


class Notifier:
    """READY / STATUS / WATCHDOG / RELOADING / STOPPING to the service manager."""

    def __init__(self, environ: Mapping[str, str], pid: int | None = None) -> None:
        address = environ.get("NOTIFY_SOCKET") or ""
        self.enabled = bool(address)
        self._notifier = _SocketNotifier(address) if address else None
        self._last_status: str | None = None
        self.watchdog_interval = _watchdog_interval(environ, os.getpid() if pid is None else pid)
        self.sent: list[str] = []  # what was sent, for status and tests

    def _send(self, message: str) -> None:
        if self._notifier is None:
            return
        try:
            self._notifier.notify(message)
            self.sent.append(message)
        except Exception:
            pass

    def ready(self) -> None:
        self._send("READY=1")

    def status(self, line: str) -> None:
        """``STATUS=`` with one line, sent only when it changed."""
        line = " ".join(line.split())
        if line != self._last_status:
            self._last_status = line
            self._send(f"STATUS={line}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")


class _SocketNotifier(sdnotify.SystemdNotifier):  # type: ignore[misc]
    """sdnotify's notifier on an address given to it (not read from os.environ)."""

    def __init__(self, address: str) -> None:
        self.debug = False
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.connect("\0" + address[1:] if address.startswith("@") else address)
            self.socket: socket.socket | None = sock
        except OSError:
            self.socket = None


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when no watchdog is asked."""
    raw = environ.get("WATCHDOG_USEC")
    if not raw or not environ.get("NOTIFY_SOCKET"):
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner and owner.isdigit() and int(owner) != pid:
        return None
    try:
        usec = int(raw)
    except ValueError:
        return None
    return usec / 1e6 / 2 if usec > 0 else None


class WatchdogPolicy:
    """Decides whether to ping: only after progress, or while there is nothing to do.

    The daemon reports ``observe(progress_seq, busy)`` each tick; ``should_ping`` is True
    when ``progress_seq`` moved since the last ping, or the pipeline is idle. While busy
    without progress for longer than ``stall_seconds`` it stays False.
    """

    def __init__(self, stall_seconds: float, clock: Clock = time.monotonic) -> None:
        self.stall_seconds = stall_seconds
        self.clock = clock
        self._seq = -1
        self._pinged_seq = -1
        self._busy = False
        self._last_progress = clock()

    def observe(self, progress_seq: int, busy: bool) -> None:
        if progress_seq != self._seq:
            self._seq = progress_seq
            self._last_progress = self.clock()
        self._busy = busy

    def should_ping(self) -> bool:
        if not self._busy:
            return True
        if self._seq != self._pinged_seq:
            return True
        return self.clock() - self._last_progress < self.stall_seconds

    def pinged(self) -> None:
        self._pinged_seq = self._seq

    @property
    def wedged(self) -> bool:
        return self._busy and self.clock() - self._last_progress >= self.stall_seconds
