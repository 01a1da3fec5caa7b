"""Awaiting the daemon's own tasks at a stop: let the drain finish within
``drain_deadline_seconds`` (shared by the daemon's shutdown and ``run --once``), and wait
for a task to end whatever its outcome."""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger


async def settled(task: asyncio.Future[Any]) -> None:
    """Wait for ``task`` to end, whatever its outcome (its owner is going away)."""
    await asyncio.gather(task, return_exceptions=True)


async def finished_within(drain: asyncio.Future[Any], deadline: float) -> bool:
    """Let ``drain`` run for at most ``deadline`` seconds more: True when it ended (its
    error, if any, raised here); else it is cancelled (logged: what it held stays queued)
    and False."""
    try:
        await asyncio.wait_for(asyncio.shield(drain), deadline)
    except TimeoutError:
        logger.warning("drain deadline ({}s) reached: the rest stays queued", deadline)
        drain.cancel()
        return False
    return True
