"""Blocking work in a worker thread that a cancellation must not cut short.

A cancelled ``await asyncio.to_thread(fn)`` returns at once while ``fn`` goes on in its
thread (or, not started yet, never runs): clean-up work (a temporary file removed) would
be skipped, and a caller cancelled twice (Ctrl-C cancels a task, and its parent cancels
it again on the way out) escapes even a wait made for the first cancellation. These wait
for the thread to its end whatever cancellations come meanwhile, then raise one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")


async def wait_out(future: asyncio.Future[_T]) -> bool:
    """Wait until ``future`` is done, never cancelling it; True when the caller was
    cancelled meanwhile (once or more): the caller raises that once it has cleaned up."""
    cancelled = False
    while not future.done():
        try:
            await asyncio.wait((future,))
        except asyncio.CancelledError:
            cancelled = True
    return cancelled


def _cancelled_after(future: asyncio.Future[_T]) -> asyncio.CancelledError:
    if not future.cancelled():
        future.exception()  # retrieved: the cancellation is what the caller hears of
    return asyncio.CancelledError()


async def to_the_end(fn: Callable[[], _T]) -> _T:
    """``fn()`` in a worker thread; if the caller is cancelled meanwhile (even again and
    again), it still waits for the thread to end (so nothing the thread uses is closed
    under it, and a clean-up is done), then raises the cancellation."""
    future = asyncio.ensure_future(asyncio.to_thread(fn))
    if await wait_out(future):
        raise _cancelled_after(future)
    return future.result()


async def owned_in_thread(make: Callable[[], _T], drop: Callable[[_T], object]) -> _T:
    """``make()`` in a worker thread; if the caller is cancelled meanwhile, what it made
    is dropped (``drop``, in a thread too, to its end) instead of leaking (a temporary
    file), then the cancellation is raised."""
    future = asyncio.ensure_future(asyncio.to_thread(make))
    if not await wait_out(future):
        return future.result()
    if not future.cancelled() and future.exception() is None:
        made = future.result()
        await to_the_end(lambda: drop(made))
    raise asyncio.CancelledError
