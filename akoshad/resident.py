"""A long-lived Python child that answers many requests, one at a time, over its pipes.

The one-shot :func:`akoshad.pyworker.run_json` pays an interpreter start and the child's
imports on every call. :class:`ResidentWorker` starts ``MODULE.main(["--serve"])`` once, on
the first call, and sends it each request as a frame (:mod:`akoshad.pyworker`); the child
answers with a frame. The parent stays as safe as with one-shot children:

* a crash (the child exits, is killed, or answers garbage) is :class:`WorkerFailed` for that
  request; the next call starts a new child;
* a hang: past the request's ``timeout`` the child is killed (and reaped), the request fails
  with ``retry``, the next call starts a new child;
* idle: ``idle_seconds`` after its last answer the child is stopped (its memory goes back to
  the system while the store is quiet);
* recycled after ``max_requests`` answers, or when its resident memory passed ``max_rss``;
* :meth:`close` stops it (killing a request in flight) and refuses later calls.

Blocking: call :meth:`ResidentWorker.call` from a worker thread. One request at a time: a
second caller waits for the first. A stopped child is always waited for: never a zombie.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from akoshad.pyworker import (
    FRAME,
    WorkerFailed,
    checked_answer,
    child_argv,
    crashed,
    stop_child,
    write_frame,
)

SERVE_ARG = "--serve"  # the argument that makes a worker module's main serve frames
STOP_GRACE = 5.0  # seconds a child told to stop (stdin closed) may take to exit
MAX_ANSWER = 1 << 30  # bytes: a longer frame is garbage
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_of(pid: int) -> int | None:
    """Resident memory of process ``pid`` in bytes (None when unknown)."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


class ResidentWorker:
    """``module``'s long-lived child (see the module docstring)."""

    def __init__(
        self,
        module: str,
        *,
        idle_seconds: float = 60.0,
        max_requests: int = 500,
        max_rss: int = 256 << 20,
    ) -> None:
        self.module = module
        self.idle_seconds = idle_seconds
        self.max_requests = max_requests
        self.max_rss = max_rss
        self._lock = threading.Lock()  # one request at a time; guards the fields below
        self._proc: subprocess.Popen[bytes] | None = None
        self._served = 0  # answers of the current child
        self._timer: threading.Timer | None = None
        self._closed = False
        self.started = 0  # children started so far (a restart shows here)

    @property
    def pid(self) -> int | None:
        """The running child's pid, None when there is none."""
        proc = self._proc
        return None if proc is None or proc.poll() is not None else proc.pid

    def rss(self) -> int | None:
        """The running child's resident memory in bytes, None when there is none."""
        pid = self.pid
        return None if pid is None else rss_of(pid)

    # ---- a request -------------------------------------------------------------------
    def call(self, args: Sequence[str], request: Any, *, timeout: float) -> dict[str, Any]:
        """Blocking: ``request`` to the child (started if needed), its answer. Raises
        WorkerFailed (crash, timeout: killed, garbage, closed) or WorkerError (what its
        handler raised)."""
        payload = json.dumps({"args": list(args), "request": request}).encode()
        with self._lock:
            if self._closed:
                raise WorkerFailed("its worker is stopped (shutting down)", retry=True)
            self._cancel_timer()
            if self._proc is not None and self._proc.poll() is not None:
                self._reap(self._proc)  # it died idle (killed, out of memory): a new one
            proc = self._proc if self._proc is not None else self._start()
            try:
                answer = self._exchange(proc, payload, timeout)
            except BaseException:  # the pipes may hold half a frame: this child is done
                self._reap(proc, kill=True)
                raise
            finally:
                self._settle()
        return checked_answer(answer)

    def _start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            child_argv(self.module, SERVE_ARG),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._proc, self._served = proc, 0
        self.started += 1
        return proc

    def _exchange(self, proc: subprocess.Popen[bytes], payload: bytes, timeout: float) -> Any:
        """Send one frame, read one frame back within ``timeout`` seconds."""
        assert proc.stdin is not None and proc.stdout is not None
        deadline = time.monotonic() + timeout
        try:
            write_frame(proc.stdin, payload)
        except (BrokenPipeError, ConnectionResetError):
            raise self._died(proc) from None
        head = _read(proc.stdout, FRAME.size, deadline)
        if head is None:
            raise self._died(proc)
        if isinstance(head, float):
            raise WorkerFailed(f"its worker was stopped after {timeout:g}s", retry=True)
        size = FRAME.unpack(head)[0]
        if size > MAX_ANSWER:
            raise WorkerFailed("its worker answered garbage")
        body = _read(proc.stdout, size, deadline)
        if body is None:
            raise self._died(proc)
        if isinstance(body, float):
            raise WorkerFailed(f"its worker was stopped after {timeout:g}s", retry=True)
        try:
            return json.loads(body)
        except ValueError:
            raise WorkerFailed("its worker answered garbage") from None

    def _died(self, proc: subprocess.Popen[bytes]) -> WorkerFailed:
        """The child closed its stdout: how it ended (waited for, killed if it lingers)."""
        try:
            code = proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self._reap(proc, kill=True)
            return WorkerFailed("its worker answered garbage")
        return crashed(code)

    def _settle(self) -> None:
        """After a request: recycle a worn child, else stop it after ``idle_seconds``."""
        proc = self._proc
        if proc is None:
            return
        self._served += 1
        rss = rss_of(proc.pid)
        if self._served >= self.max_requests or (rss is not None and rss > self.max_rss):
            self._reap(proc)
            return
        timer = threading.Timer(self.idle_seconds, self._idle_stop, args=(proc,))
        timer.daemon = True
        timer.name = f"{self.module} idle stop"
        self._timer = timer
        timer.start()

    # ---- stopping ----------------------------------------------------------------------
    def _idle_stop(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            if self._proc is proc and self._timer is not None:
                self._timer = None
                self._reap(proc)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _reap(self, proc: subprocess.Popen[bytes], *, kill: bool = False) -> None:
        """Stop ``proc`` (close its stdin: it exits; killed if it does not, or at once with
        ``kill``) and wait for it."""
        if self._proc is proc:
            self._proc = None
        stop_child(proc, kill=kill, grace=STOP_GRACE)

    def close(self) -> None:
        """Stop the child (a request in flight is killed: it fails) and refuse later calls.
        Blocking; idempotent."""
        self._closed = True
        proc = self._proc
        if not self._lock.acquire(blocking=False):
            if proc is not None:  # a request in flight: it ends now, as a failure
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            self._lock.acquire()
        try:
            self._cancel_timer()
            if self._proc is not None:
                self._reap(self._proc)
        finally:
            self._lock.release()


def _read(src: IO[bytes], n: int, deadline: float) -> bytes | float | None:
    """``n`` bytes from the pipe ``src`` before ``deadline`` (monotonic): the bytes, None at
    its end, or the deadline (a float) when it passed first."""
    fd = src.fileno()
    parts: list[bytes] = []
    got = 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return deadline
        part = os.read(fd, min(n - got, 1 << 20))
        if not part:
            return None
        parts.append(part)
        got += len(part)
    return b"".join(parts)
