"""systemd notifications (sd_notify) and the watchdog policy.

Without ``NOTIFY_SOCKET`` every call is a no-op; a notifier never raises and never blocks
(the datagram socket is non-blocking: a message the manager cannot take now is dropped).
sd_notify is one ``sendto`` of a datagram, done here: the ``sdnotify`` package reads the
address from ``os.environ``, connects once at start (a re-executed manager that re-created
its socket is never reached again), sends on a blocking socket, encodes Latin-1 (a STATUS
with other characters is dropped without a word) and does not say whether a message left.
The watchdog is fed only while the pipeline makes progress or has nothing to do: a wedged
pipeline stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from akoshad.redaction import redact

Clock = Callable[[], float]
# a stop may take drain_deadline_seconds and this (the unit's TimeoutStopSec is made alike)
STOP_MARGIN = 15.0
SENT_KEPT = 64  # the last messages sent, for tests and debugging (bounded: runs for months)
# while starting (a large queue recovered, a large store reconciled, a crash's upload
# settled), the start timeout is extended by START_EXTEND each START_EVERY seconds, for at
# most START_LIMIT: a start that takes longer is wedged, and the unit's timeout applies
START_EXTEND = 60.0
START_EVERY = 20.0
START_LIMIT = 1800.0


class Notifier:
    """READY / STATUS / WATCHDOG / RELOADING / STOPPING to the service manager.

    ``environ`` is the process environment as handed down by the caller (this module never
    reads ``os.environ``); ``NOTIFY_SOCKET`` (a path or ``@abstract``) enables it,
    ``WATCHDOG_USEC`` (with ``WATCHDOG_PID``, when set, naming ``pid``) sets
    ``watchdog_interval`` to half the timeout.
    """

    def __init__(self, environ: Mapping[str, str], pid: int | None = None) -> None:
        address = environ.get("NOTIFY_SOCKET") or ""
        self._notifier = _SocketNotifier(address) if address.startswith(("/", "@")) else None
        self.enabled = self._notifier is not None
        self._last_status: str | None = None
        self._watchdog_interval = _watchdog_interval(environ, os.getpid() if pid is None else pid)
        self.sent: deque[str] = deque(maxlen=SENT_KEPT)
        self.failures = 0  # messages the manager did not take
        self._stopping = False  # STOPPING=1 sent: no READY=1 after it

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None."""
        return self._watchdog_interval

    def _send(self, message: str) -> bool:
        if self._notifier is None:
            return False
        if self._notifier.send(message):
            self.sent.append(message)
            return True
        self.failures += 1
        return False

    def ready(self) -> None:
        """``READY=1``: startup (or a reload) is complete. Not after ``stopping``: a reload
        that shutdown cancelled said READY=1 after STOPPING=1 (running again, to the
        manager)."""
        if not self._stopping:
            self._send("READY=1")

    def status(self, line: str) -> None:
        """``STATUS=`` with one line (whitespace folded, secrets redacted: ``systemctl
        status`` shows it), sent only when it changed."""
        line = " ".join(redact(line).split())
        if line != self._last_status:
            # a line the manager did not take is sent again with the next call
            self._last_status = line if self._send(f"STATUS={line}") else None

    def reloading(self) -> None:
        """``RELOADING=1`` with the ``MONOTONIC_USEC`` systemd >= 253 expects with it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self, within: float | None = None) -> None:
        """``STOPPING=1``: shutdown has begun; with ``within`` (seconds), also
        ``EXTEND_TIMEOUT_USEC``: the manager waits that long at least (never less than its
        own stop timeout), whatever the unit said when it was installed."""
        self._stopping = True
        extend = "" if within is None else f"\nEXTEND_TIMEOUT_USEC={int(within * 1_000_000)}"
        self._send(f"STOPPING=1{extend}")

    def watchdog(self) -> None:
        """``WATCHDOG=1``: the caller decided (``WatchdogPolicy``) that we are healthy."""
        self._send("WATCHDOG=1")

    def starting(self, within: float) -> None:
        """``EXTEND_TIMEOUT_USEC`` while starting: the manager waits ``within`` seconds
        more (for this or the next message), past the unit's ``TimeoutStartSec``."""
        self._send(f"EXTEND_TIMEOUT_USEC={int(within * 1_000_000)}")

    async def _extend_start(self, every: float, limit: float) -> None:
        end = time.monotonic() + limit
        self.status("starting: recovering the queue and reconciling the store")
        while time.monotonic() < end:
            self.starting(every + START_EXTEND)
            await asyncio.sleep(every)

    @asynccontextmanager
    async def extending_start(
        self, every: float = START_EVERY, limit: float = START_LIMIT
    ) -> AsyncIterator[None]:
        """Keep the start timeout extended while the body runs (a no-op without
        ``NOTIFY_SOCKET``): a slow start is not killed as a hung one, while a stuck
        event loop sends nothing and still is."""
        if self._notifier is None:
            yield
            return
        task = asyncio.create_task(self._extend_start(every, limit), name="start-timeout")
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class _SocketNotifier:
    """Datagrams to the manager's socket (a path, or ``@abstract``), UTF-8, with ``sendto``
    on a non-blocking socket: a re-executed manager that re-created its socket is still
    reached, and a full queue never blocks the loop."""

    def __init__(self, address: str) -> None:
        self.address = "\0" + address[1:] if address.startswith("@") else address
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            self.socket: socket.socket | None = sock
        except OSError:
            self.socket = None

    def send(self, state: str) -> bool:
        """True when the datagram left; never raises."""
        if self.socket is None:
            return False
        try:
            self.socket.sendto(state.encode("utf-8", "replace"), self.address)
        except OSError:
            return False
        return True


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
    """Decides whether to send ``WATCHDOG=1`` (pure; the clock is injected).

    The daemon calls ``observe(progress_seq, busy)`` every tick, where ``progress_seq`` is a
    counter bumped whenever the pipeline moves something forward and ``busy`` says that a
    pass is running or files are in flight. ``should_ping()`` is True when

    - the pipeline is idle (nothing to do is healthy), or
    - ``progress_seq`` moved since the last ``pinged()``, or
    - it is busy and made progress (or became busy) less than ``stall_seconds`` ago: one
      slow request (up to ``upload_timeout_seconds``) is not a wedge.

    Busy with no progress for ``stall_seconds`` or more is ``wedged``: no pings, and systemd
    restarts the service ``WatchdogSec`` later.
    """

    def __init__(self, stall_seconds: float, clock: Clock = time.monotonic) -> None:
        self.stall_seconds = stall_seconds
        self.clock = clock
        self._seq = -1
        self._pinged_seq = -1
        self._busy = False
        self._last_progress = clock()

    def observe(self, progress_seq: int, busy: bool, now: float | None = None) -> None:
        """Record the pipeline's progress counter and whether it has work in hand."""
        now = self.clock() if now is None else now
        if progress_seq != self._seq:
            self._seq = progress_seq
            self._last_progress = now
        elif busy and not self._busy:
            self._last_progress = now  # work just began: the stall clock starts now
        self._busy = busy

    def should_ping(self, now: float | None = None) -> bool:
        """True when ``WATCHDOG=1`` may be sent now."""
        if not self._busy:
            return True
        if self._seq != self._pinged_seq:
            return True
        return (self.clock() if now is None else now) - self._last_progress < self.stall_seconds

    def pinged(self) -> None:
        """The ping was sent."""
        self._pinged_seq = self._seq

    @property
    def wedged(self) -> bool:
        """Busy without progress for ``stall_seconds`` or more."""
        return self._busy and self.clock() - self._last_progress >= self.stall_seconds
