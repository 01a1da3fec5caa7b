"""A file's chunks read as streams of pack spans, cut into chunks as the bytes arrive.

Consecutive chunks of a file that lie one after another in one pack (gaps of at most
:data:`RUN_GAP` unwanted bytes, spans of at most :data:`RUN_SPAN`) make a :class:`Run`:
one ranged read, streamed (``stream_range``: S3 hands the body on piece by piece), so a
pack whose chunks are all wanted costs one GET, and its first chunks are decoded while the
rest is still on the wire. A task per run cuts the pieces into chunks and hands them on in
steps of about :data:`STEP_BYTES` stored bytes (one hop to a decoding thread per step, not
per chunk); runs are consumed in file order, the next ones read ahead while their bounds
fit in the file's memory budget.

Memory: a run holds at most ``(QUEUE_STEPS + 2)`` steps (queued, being filled, being
decoded), each of at most ``min(STEP_BYTES, memory_budget / (QUEUE_STEPS + 2))`` bytes
plus its last chunk, and one read piece (``fileio.CHUNK``): :meth:`Run.bound`. The runs
read ahead together stay within ``memory_budget`` (one run is always allowed). A target
without ``stream_range`` is read by ``fetch``'s batched ``read_range`` instead.

A read that fails is ``KeyError``/``PackError`` at the chunk it stopped at
(:class:`RunFailed`); damage inside a chunk is found by the decoder, which names it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from akoshad.fileio import CHUNK
from akoshad.storage.chunk_decode import Stored
from akoshad.storage.errors import PackError
from akoshad.storage.packs import PACK_MAX
from akoshad.storage.refs import ChunkRef

MiB = 1024 * 1024
RUN_SPAN = PACK_MAX  # bytes of one streamed read: a whole pack (memory is bound by steps)
RUN_GAP = MiB  # unwanted bytes a run reads through rather than start another read
STEP_BYTES = 2 * MiB  # stored bytes handed to the decoder at once
QUEUE_STEPS = 1  # steps of a run waiting for the decoder


@runtime_checkable
class RangeStreamer(Protocol):
    """Ranged reads handed on as the bytes arrive (the S3 target)."""

    def stream_range(self, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        """``length`` bytes of ``key`` at ``offset`` in pieces; errors as ``read_range``."""


@dataclass(frozen=True)
class Run:
    """Chunks ``chunks`` (indexes into the file's list, in file order) read by one read
    of ``key`` from ``start`` to ``end``."""

    key: str
    start: int
    end: int
    chunks: range
    biggest: int  # the largest stored chunk in it

    def bound(self, step: int) -> int:
        """The most stored bytes this run holds at once in steps of ``step`` bytes (module
        docstring)."""
        return (QUEUE_STEPS + 2) * (step + self.biggest) + CHUNK


class RunFailed(Exception):
    """The read of a run failed (``cause``: ``KeyError`` or ``PackError``) at chunk
    ``index`` of the file."""

    def __init__(self, index: int, cause: KeyError | PackError) -> None:
        super().__init__(index, cause)
        self.index = index
        self.cause = cause


def plan_runs(
    chunks: Sequence[ChunkRef], max_gap: int = RUN_GAP, max_span: int = RUN_SPAN
) -> list[Run]:
    """``chunks`` (in file order) cut into runs: a chunk joins the run before it when it
    is in the same object, at or after its end by at most ``max_gap`` bytes, and the run
    stays within ``max_span`` bytes (a longer chunk makes a run of its own)."""
    runs: list[Run] = []
    for i, ref in enumerate(chunks):
        end = ref.offset + ref.length
        if runs:
            r = runs[-1]
            if (
                ref.key == r.key
                and r.end <= ref.offset <= r.end + max_gap
                and end - r.start <= max_span
            ):
                joined = range(r.chunks.start, i + 1)
                runs[-1] = Run(r.key, r.start, end, joined, max(r.biggest, ref.length))
                continue
        runs.append(Run(ref.key, ref.offset, end, range(i, i + 1), ref.length))
    return runs


def _take(pieces: deque[memoryview], n: int) -> Stored:
    """The first ``n`` bytes of ``pieces``, removed from them: a view when they lie in
    one piece, else the views of the pieces they span (no copy)."""
    first = pieces[0]
    if len(first) >= n:
        if len(first) == n:
            pieces.popleft()
        else:
            pieces[0] = first[n:]
        return first[:n]
    parts: list[memoryview] = []
    while n:
        p = pieces.popleft()
        if len(p) > n:
            pieces.appendleft(p[n:])
            p = p[:n]
        parts.append(p)
        n -= len(p)
    return tuple(parts)


Step = tuple[int, list[Stored]]  # the index of its first chunk, their stored bytes
_Item = Step | BaseException | None


async def _produce(
    source: RangeStreamer,
    run: Run,
    chunks: Sequence[ChunkRef],
    queue: asyncio.Queue[_Item],
    step_bytes: int,
) -> None:
    """Stream ``run`` and put its chunks on ``queue`` in steps, then None (or the
    failure, at the chunk it stopped at)."""
    pieces: deque[memoryview] = deque()
    have, pos, i = 0, run.start, run.chunks.start
    step: list[Stored] = []
    first = i
    filled = 0
    try:
        async for data in source.stream_range(run.key, run.start, run.end - run.start):
            pieces.append(memoryview(data))
            have += len(data)
            while i < run.chunks.stop and chunks[i].offset + chunks[i].length <= pos + have:
                ref = chunks[i]
                if ref.offset > pos:  # unwanted bytes between two chunks
                    _take(pieces, ref.offset - pos)
                    have -= ref.offset - pos
                    pos = ref.offset
                step.append(_take(pieces, ref.length))
                have -= ref.length
                pos += ref.length
                filled += ref.length
                i += 1
                if filled >= step_bytes:
                    await queue.put((first, step))
                    step, first, filled = [], i, 0
        if i < run.chunks.stop:
            raise PackError(f"object {run.key} ends before {run.end}")
    except Exception as exc:  # the target is down, ...: raised as it is by the reader
        if step:
            await queue.put((first, step))
        await queue.put(RunFailed(i, exc) if isinstance(exc, KeyError | PackError) else exc)
        return
    if step:
        await queue.put((first, step))
    await queue.put(None)


async def stream_runs(
    source: RangeStreamer,
    chunks: Sequence[ChunkRef],
    handle: Callable[[int, list[Stored]], Awaitable[object]],
    memory_budget: int,
    max_runs: int,
) -> None:
    """Read ``chunks`` run by run (module docstring; at most ``max_runs`` reads at once)
    and ``await handle(first, bodies)`` for each step, in file order. Raises
    :class:`RunFailed` for a read that failed, the reader's own error for another."""
    runs = plan_runs(chunks)
    step = max(1, min(STEP_BYTES, memory_budget // (QUEUE_STEPS + 2)))
    bounds = [run.bound(step) for run in runs]
    active: deque[tuple[int, asyncio.Queue[_Item], asyncio.Task[None]]] = deque()
    nxt = held = 0
    try:
        while nxt < len(runs) or active:
            while nxt < len(runs) and (
                not active or (len(active) < max_runs and held + bounds[nxt] <= memory_budget)
            ):
                queue: asyncio.Queue[_Item] = asyncio.Queue(QUEUE_STEPS)
                task = asyncio.create_task(_produce(source, runs[nxt], chunks, queue, step))
                active.append((bounds[nxt], queue, task))
                held += bounds[nxt]
                nxt += 1
            bound, queue, task = active[0]
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                await handle(*item)
            await task
            active.popleft()
            held -= bound
    finally:
        for _, _, task in active:
            task.cancel()
        await asyncio.gather(*(t for _, _, t in active), return_exceptions=True)
