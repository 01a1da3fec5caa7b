"""Sealing (age encryption) of large chunks in child processes, beside the chunking.

``pyrage`` holds the GIL while it encrypts (about 450 MB/s and 80 us a body on the
reference machine), so in the daemon's process sealing cannot overlap the chunking,
hashing and compression that run in other threads. :class:`SealingWorkers` lends each
sealing thread a child process of its own (``python -m akoshad.pipeline.seal_child
RECIPIENT...``: only public keys cross, never an identity) that seals one body at a time
over its pipes: the parent only copies the bodies through the pipes, without the GIL.

A pass that seals little never starts one: the first :data:`WARM_UP` bodies handed to it
are sealed in this process (a session-sized upload stays as it was). A child that crashes,
hangs (killed after :data:`TIMEOUT`) or answers something that is not an age body of the
expected size is stopped and the pass goes on sealing in this process, with one warning:
never a failed upload for it. Every answer is checked against
:func:`~akoshad.storage.crypto.sealed_size_bound`.
Blocking: call from worker threads (each call takes a worker for its duration).
"""

from __future__ import annotations

import itertools
import os
import select
import subprocess
import threading
from collections import deque
from collections.abc import Sequence

from loguru import logger

from akoshad.pipeline.seal_child import ANSWER, MAX_ERROR, REQUEST, grow_pipe
from akoshad.pyworker import child_argv, stop_child
from akoshad.storage.crypto import AGE_MAGIC, Recipients, seal, sealed_size_bound

MODULE = "akoshad.pipeline.seal_child"
WARM_UP = 64  # bodies sealed in this process before a child is started (a session: none)
TIMEOUT = 60.0  # seconds one body may take in a child
MAX_BODY = 32 * 1024 * 1024  # larger bodies are sealed here (chunks are at most 1 MiB)
WRITE_FRAMES = 64  # frames handed to one writev
STOP_GRACE = 2.0  # seconds a child whose input ended may take to exit before it is killed


class SealWorkerFailed(Exception):
    """A sealing child crashed, hung or answered garbage (one line)."""


class SealProcess:
    """One sealing child: :meth:`seal` sends a body and waits for it sealed."""

    def __init__(self, recipients: Recipients) -> None:
        self._proc = subprocess.Popen(
            child_argv(MODULE, *recipients.keys),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            close_fds=True,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._in = self._proc.stdin.fileno()
        self._out = self._proc.stdout.fileno()
        grow_pipe(self._in)
        grow_pipe(self._out)
        os.set_blocking(self._in, False)  # written and read as the pipes allow
        os.set_blocking(self._out, False)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._proc.pid

    def seal_many(self, bodies: Sequence[bytes]) -> list[bytes]:
        """Every body sealed by the child, in order (requests written while answers are
        read, so neither side waits on a full pipe); SealWorkerFailed (one line) when
        they cannot be."""
        frames: deque[memoryview] = deque()
        for body in bodies:
            frames += (memoryview(REQUEST.pack(len(body))), memoryview(body))
        answers = _Answers(bodies)
        try:
            while not answers.complete:
                writing = [self._in] if frames else []
                readable, writable, _ = select.select([self._out], writing, [], TIMEOUT)
                if not readable and not writable:
                    raise SealWorkerFailed(f"its sealing worker did not answer in {TIMEOUT:g}s")
                if writable:
                    self._write_some(frames)
                if readable:
                    answers.read_from(self._out)
        except OSError as exc:  # a broken pipe: the child is gone
            raise SealWorkerFailed(f"its sealing worker ended ({exc.strerror})") from None
        return answers.done

    def _write_some(self, frames: deque[memoryview]) -> None:
        """Write what the pipe takes now, several frames in one call (a request's length
        and body arrive together: the child wakes once for them)."""
        while frames:
            try:
                n = os.writev(self._in, list(itertools.islice(frames, WRITE_FRAMES)))
            except BlockingIOError:
                return
            while frames and n >= len(frames[0]):
                n -= len(frames.popleft())
            if n:
                frames[0] = frames[0][n:]
                return

    def close(self, *, kill: bool = False) -> None:
        """End the child: the end of its input (killed when it does not end at once), or
        at once with ``kill``."""
        stop_child(self._proc, kill=kill, grace=STOP_GRACE)


class _Answers:
    """A child's answers to ``bodies``, read as they come (each into a buffer of its own
    size, no copy through a growing one), each checked: an age body within the bound of its
    request's size, or the child's one-line error."""

    def __init__(self, bodies: Sequence[bytes]) -> None:
        self.bodies = bodies
        self.done: list[bytes] = []
        self._head = bytearray(ANSWER.size)
        self._body: bytearray | None = None
        self._status = 0
        self._got = 0

    @property
    def complete(self) -> bool:
        """True once every body has its answer."""
        return len(self.done) == len(self.bodies)

    def read_from(self, fd: int) -> None:
        """Read what ``fd`` (non-blocking) holds now, up to the last answer."""
        while not self.complete:
            into = self._head if self._body is None else self._body
            try:
                n = os.readv(fd, [memoryview(into)[self._got :]])
            except BlockingIOError:
                return
            if n == 0:
                raise SealWorkerFailed("its sealing worker ended")
            self._got += n
            if self._body is None and self._got == ANSWER.size:
                self._start_body()
            if self._body is not None and self._got == len(self._body):
                self._finish()

    def _start_body(self) -> None:
        status, size = ANSWER.unpack(self._head)
        if status == 0:
            if size > sealed_size_bound(len(self.bodies[len(self.done)])):
                raise SealWorkerFailed("its sealing worker answered more than a sealed body")
        elif status != 1 or size > MAX_ERROR:
            raise SealWorkerFailed("its sealing worker answered garbage")
        self._status, self._body, self._got = status, bytearray(size), 0

    def _finish(self) -> None:
        assert self._body is not None
        body, self._body, self._got = bytes(self._body), None, 0
        if self._status == 1:
            said = body.decode(errors="replace")
            raise SealWorkerFailed(f"its sealing worker failed: {said}")
        if not body.startswith(AGE_MAGIC):
            raise SealWorkerFailed("its sealing worker answered something that is not age data")
        self.done.append(body)


class SealingWorkers:
    """Seals bodies to ``recipients``: the first :data:`WARM_UP` here, then in up to
    ``size`` children lent to one calling thread at a time; in this process again for the
    rest of the pass once a child failed. :meth:`close` ends every child."""

    def __init__(self, recipients: Recipients, size: int) -> None:
        self.recipients = recipients
        self.size = size
        self._lock = threading.Lock()
        self._free = threading.Condition(self._lock)  # a child went back to the idle list
        self._idle: list[SealProcess] = []
        self._started: list[SealProcess] = []
        self._calls = 0
        self._broken = False
        self._closed = False

    def seal(self, body: bytes) -> bytes:
        """``body`` (compressed) sealed, in a child when one is available."""
        return self.seal_many([body])[0]

    def seal_many(self, bodies: Sequence[bytes]) -> list[bytes]:
        """Every body sealed, in order: in one child's round trip when one is available."""
        worker = self._take(bodies)
        if worker is None:
            return [seal(b, self.recipients) for b in bodies]
        try:
            sealed = worker.seal_many(bodies)
        except SealWorkerFailed as exc:
            self._give_up(worker, exc)
            return [seal(b, self.recipients) for b in bodies]
        with self._lock:
            self._idle.append(worker)
            self._free.notify()
        return sealed

    @property
    def ready(self) -> bool:
        """True once bodies go to children (past the warm-up, none failed, not closed)."""
        with self._lock:
            return self._calls >= WARM_UP and not (self._broken or self._closed)

    @property
    def children(self) -> tuple[int, ...]:
        """The pids of the children started (for tests and the bench)."""
        with self._lock:
            return tuple(p.pid for p in self._started)

    def _take(self, bodies: Sequence[bytes]) -> SealProcess | None:
        with self._lock:
            self._calls += len(bodies)
            big = sum(len(b) for b in bodies) > MAX_BODY
            if self._broken or self._closed or self._calls <= WARM_UP or big:
                return None
            while not self._idle and len(self._started) >= self.size:
                self._free.wait()  # every child is busy: wait for one
                if self._broken or self._closed:
                    return None
            if self._idle:
                return self._idle.pop()
            try:
                worker = SealProcess(self.recipients)
            except OSError as exc:
                self._broken = True
                logger.warning("sealing in this process: no sealing worker ({})", exc.strerror)
                return None
            self._started.append(worker)
            return worker

    def _give_up(self, worker: SealProcess, exc: SealWorkerFailed) -> None:
        with self._lock:
            first = not self._broken
            self._broken = True
            self._free.notify_all()
        worker.close(kill=True)
        if first:
            logger.warning("sealing in this process for the rest of the pass: {}", exc)

    def close(self) -> None:
        """End every child (idempotent); later calls seal in this process."""
        with self._lock:
            self._closed = True
            self._free.notify_all()
            started, self._started, self._idle = self._started, [], []
        for worker in started:
            worker.close()
