"""Restore fetches several files at once, with bounded memory.

:func:`fetch_all` runs one job per file on at most :data:`WORKERS` workers. Each file
streams (one read piece and one decoded piece at a time), so what a file holds in memory
does not grow with its size; the byte budget (:data:`BUDGET`) still caps how many large
files are in flight together: a file weighs its stored size, at most :data:`FILE_WEIGHT`,
and a chunked file is fetched within that weight (``fetch_file``'s ``memory_budget``).
The largest files start first, so one big file does not end the restore alone; meanwhile
:data:`SMALL_WORKERS` of the workers take the smallest units first, within a share of the
budget the large ones never take (:data:`SMALL_RESERVE`), so that small files (whose
landing waits on the disk more than on the processor) land while the large ones stream.

The first failure (in manifest order among those seen) is raised once every job in hand has
ended; no new file starts after a failure (:func:`run_each`, for ``verify``, runs them
all). Each job cleans up after itself (the sink of a file that fails is discarded), so
nothing partial is left.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

WORKERS = 8
BUDGET = 64 * 1024 * 1024
FILE_WEIGHT = 16 * 1024 * 1024  # a file this large or larger takes this much of BUDGET
SMALL_WORKERS = 2  # workers of fetch_all that take the smallest units first
SMALL_RESERVE = 8 * 1024 * 1024  # of BUDGET, never taken by the other workers

_E = TypeVar("_E")
_T = TypeVar("_T")


class ByteBudget:
    """Weights held by the files in flight; ``acquire`` waits until ``weight`` fits."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._changed = asyncio.Condition()

    async def acquire(self, weight: int, limit: int | None = None) -> int:
        """Wait until ``weight`` (at most ``limit``, itself at most the budget's) fits
        within ``limit`` of the budget; returns the weight taken, for :meth:`release`."""
        limit = self.limit if limit is None else min(limit, self.limit)
        weight = min(weight, limit)
        async with self._changed:
            await self._changed.wait_for(lambda: self.held + weight <= limit)
            self.held += weight
        return weight

    async def release(self, weight: int) -> None:
        async with self._changed:
            self.held -= min(weight, self.limit)
            self._changed.notify_all()


def weight_of(stored_size: int) -> int:
    """What a file of ``stored_size`` stored bytes takes of the budget (at least 1)."""
    return max(1, min(stored_size, FILE_WEIGHT))


async def fetch_all(
    entries: Sequence[_E],
    job: Callable[[_E], Awaitable[object]],
    size: Callable[[_E], int],
    *,
    workers: int | None = None,
    budget: int | None = None,
) -> None:
    """Run ``job`` on every entry, at most ``workers`` at once and within ``budget`` bytes
    of weight (defaults: the module's :data:`WORKERS` and :data:`BUDGET`, read at call
    time): the largest first, and the smallest first by :data:`SMALL_WORKERS` of them
    (module docstring). Raises the first entry's error (manifest order) once the jobs in
    hand end."""
    workers = max(1, min(WORKERS if workers is None else workers, len(entries)))
    limit = BUDGET if budget is None else budget
    gate = ByteBudget(limit)
    # one queue shared by the workers, largest first: each entry is taken once
    order = deque(sorted(range(len(entries)), key=lambda i: -size(entries[i])))
    small = min(SMALL_WORKERS, workers - 1)
    large_limit = limit - (min(SMALL_RESERVE, limit // 4) if small else 0)
    errors: dict[int, BaseException] = {}

    async def worker(smallest_first: bool) -> None:
        while order and not errors:
            i = order.pop() if smallest_first else order.popleft()
            taken = await gate.acquire(
                weight_of(size(entries[i])), limit if smallest_first else large_limit
            )
            try:
                await job(entries[i])
            except Exception as exc:
                errors[i] = exc
                return
            finally:
                await gate.release(taken)

    tasks = [asyncio.create_task(worker(n < small)) for n in range(workers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if errors:
        raise errors[min(errors)]


async def run_each(
    entries: Sequence[_E],
    job: Callable[[_E], Awaitable[_T]],
    size: Callable[[_E], int],
    *,
    workers: int | None = None,
    budget: int | None = None,
) -> list[_T]:
    """``job`` on every entry within the same bounds as :func:`fetch_all`, whatever the
    others return (``verify``: a job returns its file's problem); the results in entry
    order. An exception a job raises (the target is down) ends the run and is raised."""
    workers = WORKERS if workers is None else workers
    gate = ByteBudget(BUDGET if budget is None else budget)
    queue = iter(sorted(range(len(entries)), key=lambda i: -size(entries[i])))
    results: dict[int, _T] = {}

    async def worker() -> None:
        for i in queue:
            weight = weight_of(size(entries[i]))
            await gate.acquire(weight)
            try:
                results[i] = await job(entries[i])
            finally:
                await gate.release(weight)

    try:
        async with asyncio.TaskGroup() as tg:
            for _ in range(max(1, min(workers, len(entries)))):
                tg.create_task(worker())
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    return [results[i] for i in range(len(entries))]


READ_AHEAD = 2  # stored pieces (of up to fileio.CHUNK bytes) read ahead of the decoder


async def read_ahead(source: AsyncIterator[bytes], depth: int = READ_AHEAD) -> AsyncIterator[bytes]:
    """``source``'s pieces, read up to ``depth`` pieces ahead by a task of its own, so that
    the next read is on the wire while this one is decoded. Its errors (``KeyError`` for a
    missing object, ...) come out in order; the reader task ends with the iteration."""
    queue: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(max(1, depth))

    async def pump() -> None:
        try:
            async for piece in source:
                await queue.put(piece)
        except Exception as exc:
            await queue.put(exc)
            return
        await queue.put(None)

    task = asyncio.create_task(pump())
    try:
        while True:
            item = await queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
