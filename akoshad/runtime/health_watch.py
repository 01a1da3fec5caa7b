"""Target health transitions as events, and the ``degraded_fail_after_minutes`` rule.

``HealthWatch.check`` compares each target's ``available`` flag with what it saw last and
emits ``degraded`` (available -> unavailable) or ``recovered`` (back, with how long it was
away). The daemon calls it after every pass and ``run`` calls it every second, so a
transition outside a pass (a target that fails at startup) is seen too. While the daemon
is degraded without a break for ``degraded_fail_after_minutes`` (> 0), ``run`` asks it to
stop with ``EXIT_DEGRADED`` so that a service manager's ``OnFailure=`` can alert.

Which targets are down, and since when, is kept in the state (``KV_DOWN_SINCE``): a restart
during an outage does not announce it again, and ``recovered.after_seconds`` counts from
when it began. A target restored as down is judged only once it was tried since the start.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from typing import TYPE_CHECKING

from loguru import logger

from akoshad.events import EventBus
from akoshad.names import EXIT_DEGRADED
from akoshad.pipeline.stats import Stats

if TYPE_CHECKING:
    from akoshad.store.db import StateDB

TICK_SECONDS = 1.0
KV_DOWN_SINCE = "targets_down_since"  # JSON {target: wall-clock time it went down}


def parse_since(text: str | None) -> dict[str, float]:
    """A kept ``{name: wall-clock time it began}`` (targets down, alerts announced); what
    is not such a mapping is ignored."""
    try:
        found = json.loads(text) if text else {}
    except ValueError:
        return {}
    if not isinstance(found, dict):
        return {}
    return {
        str(name): float(since)
        for name, since in found.items()
        if isinstance(since, int | float) and not isinstance(since, bool)
    }


class HealthWatch:
    """Watches ``stats.targets``; emits on ``events``; times continuous degradation."""

    def __init__(
        self,
        stats: Stats,
        events: EventBus,
        fail_after_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        state: StateDB | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.stats = stats
        self.events = events
        self.fail_after_seconds = fail_after_seconds
        self.clock = clock
        self.state = state
        self.wall = wall
        self._available: dict[str, bool] = {}
        self._down_since: dict[str, float] = {}
        self._degraded_since: float | None = None
        self._restored: set[str] = set()  # down at the last stop, not tried since the start
        self._changed = False  # a transition not yet kept in the state
        # looked at before each check: a target's failure that is over with nothing sent
        # (an outbox whose disk is mounted again)
        self.probes: list[Callable[[], Awaitable[None]]] = []

    async def restore(self, moved: Iterable[str] = ()) -> None:
        """At a start: the targets that were down when the daemon stopped are down since
        then (no second ``degraded``; ``recovered`` counts from when it began); not those
        ``moved`` to another place since."""
        if self.state is None:
            return
        try:
            down = parse_since(await self.state.get_kv(KV_DOWN_SINCE))
        except (sqlite3.Error, OSError) as exc:
            logger.warning("cannot read which targets were down: {}", exc)
            return
        for name in moved:
            self._changed = down.pop(name, None) is not None or self._changed
        now, wall_now = self.clock(), self.wall()
        for name, since in down.items():
            self._available[name] = False
            self._down_since[name] = now - max(0.0, wall_now - since)
        self._restored = set(down)

    async def save(self) -> None:
        """Keep which targets are down, and since when, after a transition (tried again
        at the next tick when the state cannot take it)."""
        if self.state is None or not self._changed:
            return
        now, wall_now = self.clock(), self.wall()
        text = json.dumps(
            {name: round(wall_now - (now - t), 3) for name, t in self._down_since.items()}
        )
        try:
            await self.state.set_kv(KV_DOWN_SINCE, text)
        except (sqlite3.Error, OSError) as exc:
            logger.debug("cannot keep which targets are down: {}", exc)
            return
        self._changed = False

    def check(self) -> None:
        """Emit the transitions since the last check; track how long we are degraded."""
        now = self.clock()
        for name, health in list(self.stats.targets.items()):
            if name in self._restored:
                if not health.attempted:
                    continue  # down at the last stop, not tried since: still down
                self._restored.discard(name)
            was = self._available.get(name, True)
            if was and not health.available:
                self._down_since[name] = now
                self._changed = True
                self.events.emit("degraded", target=name, error=health.last_error)
            elif not was and health.available:
                since = self._down_since.pop(name, now)
                self._changed = True
                self.events.emit("recovered", target=name, after_seconds=round(now - since, 3))
            self._available[name] = health.available
        if self.stats.degraded_reason() is None:
            self._degraded_since = None
        elif self._degraded_since is None:
            self._degraded_since = now

    def down_since(self) -> float | None:
        """When (wall clock) the target down longest went down, None when none is down: the
        safety verdict's UNSAFE dates from then, not from when status was asked."""
        if not self._down_since:
            return None
        return self.wall() - (self.clock() - min(self._down_since.values()))

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
            for probe in self.probes:
                await probe()
            self.check()
            await self.save()
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
