"""Target health transitions as events, and the ``degraded_fail_after_minutes`` rule.

``HealthWatch.check`` compares each target's ``available`` flag with what it saw last and
emits ``degraded`` (available -> unavailable) or ``recovered`` (back, with how long it was
away). The daemon calls it after every pass and ``run`` calls it every second, so a
transition outside a pass (a target that fails at startup) is seen too. While the daemon
is degraded without a break for ``degraded_fail_after_minutes`` (> 0), ``run`` asks it to
stop with ``EXIT_DEGRADED`` so that a service manager's ``OnFailure=`` can alert.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import suppress

from loguru import logger

from akoshad.events import EventBus
from akoshad.names import EXIT_DEGRADED
from akoshad.pipeline.stats import Stats

TICK_SECONDS = 1.0


class HealthWatch:
    """Watches ``stats.targets``; emits on ``events``; times continuous degradation."""

    def __init__(
        self,
        stats: Stats,
        events: EventBus,
        fail_after_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats
        self.events = events
        self.fail_after_seconds = fail_after_seconds
        self.clock = clock
        self._available: dict[str, bool] = {}
        self._down_since: dict[str, float] = {}
        self._degraded_since: float | None = None

    def check(self) -> None:
        """Emit the transitions since the last check; track how long we are degraded."""
        now = self.clock()
        for name, health in list(self.stats.targets.items()):
            was = self._available.get(name, True)
            if was and not health.available:
                self._down_since[name] = now
                self.events.emit("degraded", target=name, error=health.last_error)
            elif not was and health.available:
                since = self._down_since.pop(name, now)
                self.events.emit("recovered", target=name, after_seconds=round(now - since, 3))
            self._available[name] = health.available
        if self.stats.degraded_reason() is None:
            self._degraded_since = None
        elif self._degraded_since is None:
            self._degraded_since = now

    def degraded_for(self) -> float:
        """Seconds degraded without a break (0 when not degraded)."""
        return 0.0 if self._degraded_since is None else self.clock() - self._degraded_since

    def fail_due(self) -> bool:
        """Degraded for ``fail_after_seconds`` (when that is set)."""
        return (
            self.fail_after_seconds > 0
            and self._degraded_since is not None
            and self.degraded_for() >= self.fail_after_seconds
        )

    async def run(self, stop: asyncio.Event, on_fail: Callable[[int], None]) -> None:
        """Check every second until ``stop``; call ``on_fail(EXIT_DEGRADED)`` once when due."""
        while not stop.is_set():
            self.check()
            if self.fail_due():
                logger.error(
                    "degraded for {:.1f} min ({}), degraded_fail_after_minutes is {:g}: "
                    "exiting with code {} so that the service manager can alert",
                    self.degraded_for() / 60,
                    self.stats.degraded_reason(),
                    self.fail_after_seconds / 60,
                    EXIT_DEGRADED,
                )
                on_fail(EXIT_DEGRADED)
                return
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_SECONDS)
