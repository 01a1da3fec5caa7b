"""A local target whose reads can be held, and a prune scheduler over a rig: for the tests
that run a reader (a drill, ``verify``, ``restore``) or a prune against a target that stops
answering at a chosen moment."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from akoshad.config import Settings
from akoshad.events import EventBus
from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.stats import Stats
from akoshad.runtime.drills import DrillScheduler
from akoshad.runtime.prune_scheduler import PruneScheduler
from akoshad.store.db import StateDB
from tests.f2_rig import CountingTarget

# (operation, key) -> hold this call? Operations: read, read_range, head, list_keys.
Hold = Callable[[str, str], bool]

KEEP_LAST_ONE = {"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}


class HoldingTarget(CountingTarget):
    """Reads for which ``hold(operation, key)`` is true wait until ``go`` is set (never, if
    it is not); ``held`` is set once one waits. :meth:`hold_once` holds the first only."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.hold: Hold | None = None
        self.held = asyncio.Event()
        self.go = asyncio.Event()

    def hold_once(self, hold: Hold) -> None:
        """Hold the first read ``hold`` picks, and no other."""

        def first(operation: str, key: str) -> bool:
            if not hold(operation, key):
                return False
            self.hold = None
            return True

        self.hold = first

    async def _gate(self, operation: str, key: str) -> None:
        if self.hold is not None and self.hold(operation, key):
            self.held.set()
            await self.go.wait()

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        await self._gate("read_range", key)
        return await super().read_range(key, offset, length)

    async def head(self, key: str) -> int | None:
        await self._gate("head", key)
        return await super().head(key)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        await self._gate("read", key)
        async for piece in super().read(key):
            yield piece

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:
        await self._gate("list_keys", prefix)
        async for key in super().list_keys(prefix):
            yield key


def pack_ranges(operation: str, key: str) -> bool:
    """A ranged read of a pack (a reader's: a prune reads packs whole)."""
    return operation == "read_range" and "/packs/" in key


def prune_scheduler(
    settings: Settings,
    state: StateDB,
    target: CountingTarget,
    *,
    events: EventBus | None = None,
    stop_event: asyncio.Event | None = None,
    pass_lock: asyncio.Lock | None = None,
    drills: DrillScheduler | None = None,
) -> PruneScheduler:
    """The daemon's prune scheduler over ``state`` and ``target`` (new events, stop event
    and pass lock unless given)."""
    sid = settings.cloud_sync.system_id
    return PruneScheduler(
        settings,
        state=state,
        target=target,
        gate=OwnerGate(settings.state_dir, sid, Stats()),
        events=events or EventBus(sid),
        stop_event=stop_event or asyncio.Event(),
        pass_lock=pass_lock or asyncio.Lock(),
        drills=drills,
    )
