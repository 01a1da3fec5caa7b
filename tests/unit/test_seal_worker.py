"""Sealing in child processes (``pipeline/seal_worker``): real children, real age bodies.
The first bodies of a pass are sealed in process; then children seal, each body opens with
the identity; a child that dies, hangs or answers too much is given up for the pass (the
body sealed in process, one warning) and ``close`` leaves no child behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger
from pyrage import x25519

from akoshad.pipeline import seal_worker
from akoshad.pipeline.seal_child import IN_AREA, MAX_BODIES, OUT_AREA
from akoshad.pipeline.seal_worker import SealingWorkers
from akoshad.storage.crypto import (
    Identities,
    Recipients,
    is_sealed,
    open_sealed,
    sealed_size_bound,
)


def keys() -> tuple[Recipients, Identities]:
    ident = x25519.Identity.generate()
    public = str(ident.to_public())
    return Recipients.parse([public]), Identities(Path("id.txt"), (public,), (), (ident,))


def gone(pid: int, within: float = 5.0) -> bool:
    """True when ``pid`` is no longer a process (reaped) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING")
    yield lines
    logger.remove(sink)


@pytest.fixture
def one_child(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[SealingWorkers, Identities]]:
    """Workers of one child, past the warm-up from the first body."""
    monkeypatch.setattr(seal_worker, "WARM_UP", 0)
    recipients, identities = keys()
    workers = SealingWorkers(recipients, 1)
    yield workers, identities
    workers.close()


def test_first_bodies_are_sealed_here_then_in_one_child_per_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(seal_worker, "WARM_UP", 3)
    recipients, identities = keys()
    workers = SealingWorkers(recipients, 2)
    try:
        bodies = [os.urandom(1000 + i) for i in range(3)]
        assert [open_sealed(workers.seal(b), identities, len(b)) for b in bodies] == bodies
        assert workers.children == ()  # the warm-up: no child for a small pass
        more = [os.urandom(200_000 + i) for i in range(6)]
        sealed = [workers.seal(b) for b in more]
        assert all(is_sealed(s) for s in sealed)
        assert [open_sealed(s, identities, 300_000) for s in sealed] == more
        assert len(workers.children) == 1  # one caller at a time: one child
        out: list[bytes] = []

        def call() -> None:
            out.append(workers.seal(b"x" * 300_000))

        threads = [threading.Thread(target=call) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(workers.children) <= 2
        assert all(open_sealed(s, identities, 300_000) == b"x" * 300_000 for s in out)
        pids = workers.children
    finally:
        workers.close()
    assert all(gone(pid) for pid in pids)
    assert workers.children == ()
    assert open_sealed(workers.seal(b"after"), identities, 5) == b"after"  # sealed here


def test_a_batch_seals_in_one_round_trip_and_counts_toward_the_warm_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(seal_worker, "WARM_UP", 10)
    recipients, identities = keys()
    workers = SealingWorkers(recipients, 2)
    try:
        assert not workers.ready
        first = [f"small {i}".encode() for i in range(10)]
        assert [open_sealed(s, identities, 20) for s in workers.seal_many(first)] == first
        assert workers.children == () and workers.ready  # 10 sealed here: ready now
        more = [os.urandom(i * 1000) for i in range(50)]
        sealed = workers.seal_many(more)
        assert len(workers.children) == 1
        assert [open_sealed(s, identities, 50_000) for s in sealed] == more
    finally:
        workers.close()
    assert not workers.ready


def test_a_killed_child_is_given_up_and_the_body_sealed_here(
    one_child: tuple[SealingWorkers, Identities], warnings: list[str]
) -> None:
    workers, identities = one_child
    workers.seal(b"first")
    (pid,) = workers.children
    os.kill(pid, signal.SIGKILL)
    body = os.urandom(500_000)
    assert open_sealed(workers.seal(body), identities, len(body)) == body
    assert workers.children == (pid,)  # no new child for the rest of the pass
    assert open_sealed(workers.seal(b"next"), identities, 4) == b"next"
    assert len([w for w in warnings if "sealing in this process" in w]) == 1
    assert "worker ended" in warnings[0]


def test_a_hung_child_is_killed_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch, warnings: list[str]
) -> None:
    monkeypatch.setattr(seal_worker, "WARM_UP", 0)
    recipients, identities = keys()
    workers = SealingWorkers(recipients, 1)
    workers.seal(b"first")  # the child's start within the usual bound: a loaded machine
    (pid,) = workers.children
    monkeypatch.setattr(seal_worker, "TIMEOUT", 0.5)
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    body = os.urandom(1024 * 1024)
    assert open_sealed(workers.seal(body), identities, len(body)) == body
    assert 0.4 < time.monotonic() - started < 10
    assert gone(pid)  # given up: killed and reaped
    workers.close()
    assert any("did not answer in 0.5s" in w for w in warnings)


def test_an_answer_over_the_bound_is_refused(
    one_child: tuple[SealingWorkers, Identities],
    monkeypatch: pytest.MonkeyPatch,
    warnings: list[str],
) -> None:
    workers, identities = one_child
    workers.seal(b"first")
    monkeypatch.setattr(seal_worker, "sealed_size_bound", lambda n: n)  # age adds a header
    body = os.urandom(10_000)
    assert open_sealed(workers.seal(body), identities, len(body)) == body
    assert any("answered more than a sealed body" in w for w in warnings)


def test_a_child_that_cannot_start_its_work_is_an_ended_worker(
    monkeypatch: pytest.MonkeyPatch, warnings: list[str]
) -> None:
    """A child that exits at once (here: a module that does not exist) fails the first
    body it is given; the body is sealed here."""
    monkeypatch.setattr(seal_worker, "WARM_UP", 0)
    monkeypatch.setattr(seal_worker, "MODULE", "akoshad.pipeline.no_such_module")
    recipients, identities = keys()
    workers = SealingWorkers(recipients, 1)
    try:
        body = os.urandom(300_000)
        assert open_sealed(workers.seal(body), identities, len(body)) == body
    finally:
        workers.close()
    assert any("sealing worker ended" in w for w in warnings)


def test_the_child_seals_until_its_input_ends() -> None:
    """One child over real pipes answers each body, in order, and exits 0 at the end of
    its input."""
    recipients, identities = keys()
    worker = seal_worker.SealProcess(recipients)
    try:
        for size in (0, 1, 65_536, 1_048_576):
            body = os.urandom(size)
            assert open_sealed(worker.seal_many([body])[0], identities, size) == body
        # a batch of more than the shared area holds: several round trips, in order
        bodies = [os.urandom(300 + i % 7 * 100_000) for i in range(64)]
        assert sum(map(len, bodies)) > 4 * IN_AREA
        sealed = worker.seal_many(bodies)
        opened = [open_sealed(s, identities, len(b)) for s, b in zip(sealed, bodies, strict=True)]
        assert opened == bodies
        many = [b"%d" % i for i in range(MAX_BODIES * 2 + 3)]  # by count too
        assert [open_sealed(s, identities, 8) for s in worker.seal_many(many)] == many
    finally:
        worker.close()
    assert worker._proc.returncode == 0


def test_round_trips_fit_the_shared_area() -> None:
    """Runs of bodies never exceed the input area, their sealed bound the output area, or
    the count a request carries; every body is in exactly one run, in order."""
    area = IN_AREA
    cases = [
        [b"a" * area],
        [b"a" * (area // 2)] * 5,
        [b"b" * 1000] * (MAX_BODIES * 3 + 1),
        [b"c" * n for n in (1, area - 1, 2, area // 3, area // 3, area // 3, 0)],
    ]
    for bodies in cases:
        runs = list(seal_worker._round_trips(bodies))
        assert [b for run in runs for b in run] == bodies
        for run in runs:
            assert run
            assert len(run) <= MAX_BODIES
            assert sum(map(len, run)) <= area
            assert sum(sealed_size_bound(len(b)) for b in run) <= OUT_AREA


def test_the_shared_area_is_private_and_the_child_gets_nothing_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The area is a memfd (no name in any directory); without memfd_create, an unlinked
    temporary file of mode 0600; either way the child seals through it."""
    recipients, identities = keys()
    fd = seal_worker._shared_area()
    try:
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:akoshad-seal")
        assert os.fstat(fd).st_size == IN_AREA + OUT_AREA
    finally:
        os.close(fd)
    monkeypatch.delattr(os, "memfd_create")
    fd = seal_worker._shared_area()
    try:
        st = os.fstat(fd)
        assert st.st_nlink == 0 and st.st_mode & 0o777 == 0o600
    finally:
        os.close(fd)
    worker = seal_worker.SealProcess(recipients)
    try:
        body = os.urandom(70_000)
        assert open_sealed(worker.seal_many([body])[0], identities, len(body)) == body
    finally:
        worker.close()


def test_the_child_refuses_a_span_outside_the_area_and_serves_on() -> None:
    """A request naming bytes outside the input area gets a one-line error, not a read
    past it; the next request is served."""
    from akoshad.pipeline.seal_child import ANSWER, REQUEST, SPAN, write_all

    recipients, identities = keys()
    worker = seal_worker.SealProcess(recipients)
    try:
        write_all(worker._in, REQUEST.pack(1) + SPAN.pack(IN_AREA - 5, 10))
        deadline = time.monotonic() + 10
        status, size = ANSWER.unpack(worker._read(ANSWER.size, deadline))
        assert status == 1
        assert worker._read(size, deadline) == b"a body lies outside the shared area"
        body = os.urandom(1000)
        assert open_sealed(worker.seal_many([body])[0], identities, len(body)) == body
    finally:
        worker.close()
    assert worker._proc.returncode == 0


_HEAP_CYCLES = """
import resource, sys
from akoshad.pipeline.seal_child import steady_heap
kept = steady_heap() if sys.argv[1] == "steady" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def cycle():  # buffers grown and freed, as pyrage's output for each body
    held, size = [], 64 * 1024
    while size <= 2 * 1024 * 1024:
        held.append(bytearray(size))
        size *= 2
cycle()
before = faults()
for _ in range(50):
    cycle()
print(kept, faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_child_keeps_freed_memory_for_the_next_body(tmp_path: Path) -> None:
    """With glibc's defaults every freed buffer went back to the system and the next one
    was faulted in again; the sealing child keeps them (steady_heap)."""
    script = tmp_path / "cycles.py"
    script.write_text(_HEAP_CYCLES)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    runs = {}
    for mode in ("default", "steady"):
        out = subprocess.run(
            [sys.executable, str(script), mode], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        runs[mode] = (out[0], int(out[1]))
    assert runs["steady"][0] == "True"
    assert runs["default"][1] > 200  # pages faulted in again, cycle after cycle
    assert runs["steady"][1] < 20  # the same buffers reused


def test_the_child_prepares_headers_while_idle_each_for_one_body() -> None:
    """While no request waits, the child prepares the next bodies' age headers (a fresh
    X25519 key pair and exchange each: most of a small body's sealing), up to AHEAD; a
    waiting request stops it. Each prepared header seals one body, then is gone: every
    body has its own share, and opens with the identity."""
    from akoshad.pipeline import seal_child
    from akoshad.pipeline.seal_child import AHEAD, SPAN
    from akoshad.storage.age_write import AgeWriter, Start, recipient_bytes

    recipients, identities = keys()
    writer = AgeWriter([recipient_bytes(k) for k in recipients.keys])
    ready: deque[Start] = deque()
    inp, waiting = os.pipe()
    try:
        seal_child._prepare(writer, ready, inp)
        assert len(ready) == AHEAD
        os.write(waiting, b"\0")  # a request waits: nothing is prepared before it
        none: deque[Start] = deque()
        seal_child._prepare(writer, none, inp)
        assert not none
    finally:
        os.close(inp)
        os.close(waiting)
    area = memoryview(bytearray(IN_AREA + OUT_AREA))
    bodies = [os.urandom(n) for n in (0, 100, 70_000)]
    spans, pos = b"", 0
    for body in bodies:
        area[pos : pos + len(body)] = body
        spans += SPAN.pack(pos, len(body))
        pos += len(body)
    prepared = [start for start, _ in list(ready)[:3]]
    answer = seal_child._seal_into(area, spans, writer, ready)
    assert len(ready) == AHEAD - 3
    lengths = [n for (n,) in seal_child.LENGTH.iter_unpack(answer[seal_child.ANSWER.size :])]
    sealed, pos = [], IN_AREA
    for n in lengths:
        sealed.append(bytes(area[pos : pos + n]))
        pos += n
    assert [s[: writer.header_size + 16] for s in sealed] == prepared
    assert [
        open_sealed(s, identities, len(b)) for s, b in zip(sealed, bodies, strict=True)
    ] == bodies
    assert len({s.split(b"\n")[1] for s in sealed}) == 3  # a share of its own each
