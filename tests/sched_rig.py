"""The daemon's periodic jobs as the unit tests build them: a drill or prune scheduler on a
local outbox, and a target whose listing fails while it is ``down``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from akoshad.config import Settings
from akoshad.errors import TransientError
from akoshad.events import EventBus
from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.stats import Stats
from akoshad.runtime.drills import DrillScheduler
from akoshad.runtime.prune_scheduler import PruneScheduler
from akoshad.store.db import StateDB
from akoshad.targets.base import Target
from akoshad.targets.local import LocalTarget


class ListingDownTarget(LocalTarget):
    """A local target whose listing fails while ``down`` is set (at first)."""

    down = True

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        if self.down:
            raise TransientError("connection refused")
        async for key in super().list_keys(prefix):
            yield key


def drill_scheduler(settings: Settings, state: StateDB, target: Target) -> DrillScheduler:
    """A drill scheduler of system id ``sched`` on ``target``."""
    return DrillScheduler(
        settings,
        state=state,
        target=target,
        events=EventBus("sched"),
        stop_event=asyncio.Event(),
        pass_lock=asyncio.Lock(),
    )


def prune_scheduler(settings: Settings, state: StateDB, outbox: Path) -> PruneScheduler:
    """A prune scheduler of system id ``sched`` on the outbox ``outbox``."""
    return PruneScheduler(
        settings,
        state=state,
        target=LocalTarget(outbox),
        gate=OwnerGate(settings.state_dir, "sched", Stats()),
        events=EventBus("sched"),
        stop_event=asyncio.Event(),
        pass_lock=asyncio.Lock(),
    )
