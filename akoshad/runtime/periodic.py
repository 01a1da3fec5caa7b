"""The loop shared by the daemon's periodic jobs (drills, prunes): wait until the job is
due, run it, and never let what it meets take the daemon down."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from loguru import logger

TICK = 60.0  # the daemon looks at the interval at least this often (it may be reloaded)


async def run_periodic(
    name: str,
    stop_event: asyncio.Event,
    due_in: Callable[[], Awaitable[float]],
    once: Callable[[], Awaitable[None]],
    postpone: Callable[[], None],
) -> None:
    """Until ``stop_event``: ``once()`` whenever ``due_in()`` is 0 or less; an unexpected
    error is logged and ``postpone()`` moves the next try."""
    while not stop_event.is_set():
        try:
            wait = await due_in()
            if wait <= 0:
                await once()
                continue
        except Exception as exc:  # a periodic job must never take the daemon down
            logger.error("{} could not run: {}: {}", name, type(exc).__name__, exc)
            postpone()
            wait = TICK
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), min(wait, TICK))
