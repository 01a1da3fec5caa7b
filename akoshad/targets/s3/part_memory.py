"""The S3 target's memory budget for parts: a compressed part waits in memory until it is
sent, and the parts held that way, over all the files being uploaded at once, are bounded
(:data:`PART_MEMORY_BUDGET`, never fewer than two parts)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from akoshad.targets.s3.parts import MiB

if TYPE_CHECKING:
    from akoshad.targets.s3.parts import _Part, _PartSource
    from akoshad.targets.s3.target import S3Target

# Compressed parts wait in memory until sent: at most this many bytes of them, over all the
# files being uploaded at once (never fewer than two parts).
PART_MEMORY_BUDGET = 32 * MiB


async def budgeted(
    target: S3Target, in_memory: bool, cut: Callable[[], tuple[_PartSource, _Part | None]]
) -> tuple[_PartSource, _Part | None]:
    """Run ``cut`` in the target's pool. A part held in memory takes a slot of the
    target-wide budget until it is closed; a file waits for a slot holding no unsent part,
    so uploads cannot deadlock one another."""
    if not in_memory:
        return await target._prepare(cut)
    if target._memory is None:
        target._memory = asyncio.Semaphore(max(2, PART_MEMORY_BUDGET // target.part_size))
    memory = target._memory
    await memory.acquire()
    try:
        parts, part = await target._prepare(cut)
    except BaseException:
        memory.release()
        raise
    if part is None:
        memory.release()
    else:
        part.on_close = memory.release
    return parts, part
