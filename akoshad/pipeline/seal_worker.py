"""Sealing (age encryption) of large chunks in child processes, beside the chunking.

Each body sealed costs an age header (an X25519 key pair and exchange and a dozen Python
calls: about 90 us, mostly under the GIL) and the cipher (about 2 GB/s,
:mod:`~akoshad.storage.age_write`); a first upload seals a body per chunk and per small
file, thousands of headers. In this process that work could not overlap the chunking,
hashing and compression that run in other threads (sealed here instead,
``bench/encrypted_upload_bench.py --s3`` lost 15.8 and 24.5% of its throughput, median of
three runs, against 13.9 and 12.4% with the children, same hour). :class:`SealingWorkers` lends each
sealing thread a child process of its own (``python -m akoshad.pipeline.seal_child FD
RECIPIENT...``: only public keys cross, never an identity) that seals a run of bodies at a
time: the parent lays them in an area both map and reads the sealed ones back from it
(``seal_child`` has the exchange); only a few bytes cross the pipes.

A pass that seals little never starts one: the first :data:`WARM_UP` bodies handed to it
are sealed in this process (a session-sized upload stays as it was). A child that crashes,
hangs (killed after :data:`TIMEOUT`) or answers something that is not an age body of the
expected size is stopped and the pass goes on sealing in this process, with one warning:
never a failed upload for it. Every answer is checked against
:func:`~akoshad.storage.crypto.sealed_size_bound`.
Blocking: call from worker threads (each call takes a worker for its duration).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import select
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence

from loguru import logger

from akoshad.pipeline.seal_child import (
    ANSWER,
    IN_AREA,
    LENGTH,
    MAX_BODIES,
    MAX_ERROR,
    OUT_AREA,
    REQUEST,
    SPAN,
    write_all,
)
from akoshad.pyworker import child_argv, stop_child
from akoshad.storage.crypto import AGE_MAGIC, Recipients, seal, sealed_size_bound

MODULE = "akoshad.pipeline.seal_child"
WARM_UP = 64  # bodies sealed in this process before a child is started (a session: none)
TIMEOUT = 60.0  # seconds one round trip may take in a child
MAX_BODY = IN_AREA  # larger bodies are sealed here (chunks are at most 1 MiB)
STOP_GRACE = 2.0  # seconds a child whose input ended may take to exit before it is killed


class SealWorkerFailed(Exception):
    """A sealing child crashed, hung or answered garbage (one line)."""


def _shared_area() -> int:
    """A descriptor of a new file of the shared area's size that no other process can
    reach: a ``memfd`` (Linux), else an unlinked temporary file (mode 0600)."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        fd: int = memfd_create("akoshad-seal", getattr(os, "MFD_CLOEXEC", 1))
    else:
        with tempfile.TemporaryFile() as fh:
            fd = os.dup(fh.fileno())
    try:
        os.ftruncate(fd, IN_AREA + OUT_AREA)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _round_trips(bodies: Sequence[bytes]) -> Iterator[Sequence[bytes]]:
    """``bodies`` in runs that fit the shared area, sealed (by the bound) included."""
    start, plain, sealed = 0, 0, 0
    for i, body in enumerate(bodies):
        bound = sealed_size_bound(len(body))
        full = plain + len(body) > IN_AREA or sealed + bound > OUT_AREA
        if i > start and (full or i - start == MAX_BODIES):
            yield bodies[start:i]
            start, plain, sealed = i, 0, 0
        plain += len(body)
        sealed += bound
    if start < len(bodies):
        yield bodies[start:]


class SealProcess:
    """One sealing child: :meth:`seal_many` lays the bodies in the shared area and waits
    for them sealed."""

    def __init__(self, recipients: Recipients) -> None:
        fd = _shared_area()
        try:
            self._area = mmap.mmap(fd, IN_AREA + OUT_AREA)
            self._proc = subprocess.Popen(
                child_argv(MODULE, str(fd), *recipients.keys),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
                pass_fds=(fd,),
            )
        finally:
            os.close(fd)  # the mapping and the child keep the area
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._view = memoryview(self._area)
        self._in = self._proc.stdin.fileno()
        self._out = self._proc.stdout.fileno()
        os.set_blocking(self._out, False)  # answers are waited for with a timeout

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self._proc.pid

    def seal_many(self, bodies: Sequence[bytes]) -> list[bytes]:
        """Every body (each at most :data:`MAX_BODY` bytes) sealed by the child, in order:
        one round trip per run that fits the shared area; SealWorkerFailed (one line) when
        they cannot be."""
        sealed: list[bytes] = []
        try:
            for run in _round_trips(bodies):
                sealed += self._round_trip(run)
        except OSError as exc:  # a broken pipe: the child is gone
            raise SealWorkerFailed(f"its sealing worker ended ({exc.strerror})") from None
        return sealed

    def _round_trip(self, bodies: Sequence[bytes]) -> list[bytes]:
        request = bytearray(REQUEST.pack(len(bodies)))
        pos = 0
        for body in bodies:
            self._view[pos : pos + len(body)] = body
            request += SPAN.pack(pos, len(body))
            pos += len(body)
        write_all(self._in, bytes(request))  # a few bytes: the pipe takes them at once
        deadline = time.monotonic() + TIMEOUT
        status, count = ANSWER.unpack(self._read(ANSWER.size, deadline))
        if status == 1 and count <= MAX_ERROR:
            said = self._read(count, deadline).decode(errors="replace")
            raise SealWorkerFailed(f"its sealing worker failed: {said}")
        if status != 0 or count != len(bodies):
            raise SealWorkerFailed("its sealing worker answered garbage")
        lengths = LENGTH.iter_unpack(self._read(LENGTH.size * count, deadline))
        return self._sealed(bodies, [n for (n,) in lengths])

    def _sealed(self, bodies: Sequence[bytes], lengths: list[int]) -> list[bytes]:
        """The sealed bodies out of the area, each checked: within the bound of its
        request's size, starting like age data."""
        out: list[bytes] = []
        pos = IN_AREA
        for body, size in zip(bodies, lengths, strict=True):
            if size > sealed_size_bound(len(body)) or pos + size > IN_AREA + OUT_AREA:
                raise SealWorkerFailed("its sealing worker answered more than a sealed body")
            sealed = bytes(self._view[pos : pos + size])
            if not sealed.startswith(AGE_MAGIC):
                raise SealWorkerFailed("its sealing worker answered something that is not age data")
            out.append(sealed)
            pos += size
        return out

    def _read(self, size: int, deadline: float) -> bytes:
        """``size`` bytes of the answer, waited for until ``deadline``."""
        got = bytearray()
        while len(got) < size:
            wait = max(0.0, deadline - time.monotonic())
            if not select.select([self._out], [], [], wait)[0]:
                raise SealWorkerFailed(f"its sealing worker did not answer in {TIMEOUT:g}s")
            try:
                part = os.read(self._out, size - len(got))
            except BlockingIOError:
                continue
            if not part:
                raise SealWorkerFailed("its sealing worker ended")
            got += part
        return bytes(got)

    def close(self, *, kill: bool = False) -> None:
        """End the child: the end of its input (killed when it does not end at once), or
        at once with ``kill``; the shared area is let go."""
        stop_child(self._proc, kill=kill, grace=STOP_GRACE)
        with contextlib.suppress(BufferError):  # still in use by a caller: freed with it
            self._view.release()
            self._area.close()


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
            big = any(len(b) > MAX_BODY for b in bodies)
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
