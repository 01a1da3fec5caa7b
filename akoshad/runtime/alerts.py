"""Webhook alerts for backups that stop without a failed pass or a target down.

``status --check`` fails for many reasons no event announces: ``data_dir`` gone or
unreadable, changes the state's full disk cannot record, nothing selected, files skipped
or failing to capture, behind, memories Akosha did not store, a drill that could not run,
/metrics not served, a refused reload... ``HealthAlerts`` looks at the daemon's status every
:data:`ALERT_TICK_SECONDS` and, for each such kind of problem, sends one ``failure`` event
(``kind``, ``error``: the problem's line, ``failed``: 0) once it has held for
:data:`ALERT_HOLD_SECONDS` (behind: :data:`ALERT_HOLDS`), and one ``recovered`` event
(``kind``, ``after_seconds``) once it has been gone that long. The kinds another event
tells of already are left out (:data:`OWN_EVENT`): a target down (``degraded``), a failed
drill (``drill``), a failed prune (``prune``), a pause and a stop (asked for); so is behind while
paused or a target is down (the changes wait for that).

What was announced, and since when, is kept in the state (``KV_ALERTED``): a restart during
a problem sends no second ``failure``, and ``recovered`` counts from when it began.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from loguru import logger

from akoshad.errors import AkoshadError
from akoshad.events import EventBus
from akoshad.ratelog import RateLimitedLog
from akoshad.runtime.health_watch import parse_since

if TYPE_CHECKING:
    from akoshad.store.db import StateDB

ALERT_TICK_SECONDS = 5.0
ALERT_HOLD_SECONDS = 30.0  # a problem announced, or its end, once it held this long
# behind: a long pass (a large first upload on a slow link) is behind and no fault
ALERT_HOLDS = {"behind": 900.0}
KV_ALERTED = "alerts_announced"  # JSON {kind: wall-clock time it began}
# the kinds announced by an event of their own (or asked for)
OWN_EVENT = frozenset(("degraded", "drill_failed", "prune_failed", "paused", "stopping"))


class HealthAlerts:
    """Turns the problems ``look`` returns (``{kind: line}``) into ``failure`` and
    ``recovered`` events, once per problem."""

    def __init__(
        self,
        events: EventBus,
        look: Callable[[], Awaitable[dict[str, str]]],
        *,
        state: StateDB | None = None,
        hold: float = ALERT_HOLD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.events = events
        self.look = look
        self.state = state
        self.hold = hold
        self.clock = clock
        self.wall = wall
        self.announced: dict[str, float] = {}  # kind: wall-clock time it began
        self._seen: dict[str, float] = {}  # not announced yet: kind -> first seen (clock)
        self._gone: dict[str, float] = {}  # announced, not seen since: kind -> when (clock)
        self._changed = False
        self._log = RateLimitedLog(3600.0)

    async def restore(self) -> None:
        """At a start: the problems announced before the stop stay announced."""
        if self.state is None:
            return
        try:
            self.announced = parse_since(await self.state.get_kv(KV_ALERTED))
        except (sqlite3.Error, OSError) as exc:
            logger.warning("cannot read which problems were announced: {}", exc)

    def update(self, problems: dict[str, str]) -> None:
        """One look: announce the problems that held, and the ends of those that went."""
        now = self.clock()
        found = {k: v for k, v in problems.items() if k not in OWN_EVENT}
        if ("paused" in problems or "degraded" in problems) and "behind" not in self.announced:
            found.pop("behind", None)  # changes wait for the resume, or for the target
        for kind in [k for k in self._seen if k not in found]:
            del self._seen[kind]
        for kind, line in found.items():
            self._gone.pop(kind, None)
            if kind in self.announced:
                continue
            first = self._seen.setdefault(kind, now)
            if now - first >= ALERT_HOLDS.get(kind, self.hold):
                del self._seen[kind]
                self.announced[kind] = self.wall() - (now - first)
                self._changed = True
                logger.warning("unhealthy for {:.0f} s ({}): {}", now - first, kind, line)
                self.events.emit("failure", kind=kind, error=line, failed=0)
        for kind in [k for k in self.announced if k not in found]:
            gone = self._gone.setdefault(kind, now)
            if now - gone >= self.hold:
                del self._gone[kind]
                since = self.announced.pop(kind)
                self._changed = True
                after = round(max(0.0, self.wall() - (now - gone) - since), 3)
                logger.info("healthy again ({}) after {:.0f} s", kind, after)
                self.events.emit("recovered", kind=kind, after_seconds=after)

    async def save(self) -> None:
        """Keep what is announced (tried again at the next look when the state cannot)."""
        if self.state is None or not self._changed:
            return
        text = json.dumps({k: round(v, 3) for k, v in self.announced.items()})
        try:
            await self.state.set_kv(KV_ALERTED, text)
        except (sqlite3.Error, OSError) as exc:
            logger.debug("cannot keep which problems were announced: {}", exc)
            return
        self._changed = False

    async def run(self, stop: asyncio.Event, tick: float = ALERT_TICK_SECONDS) -> None:
        """Look every ``tick`` seconds until ``stop``."""
        while not stop.is_set():
            try:
                self.update(await self.look())
            except (sqlite3.Error, OSError, AkoshadError) as exc:  # the next look tries again
                logger.debug("cannot look at the status for alerts: {}", exc)
            except Exception as exc:  # a bug here must not stop the daemon's backups
                self._log.error("alerts", "cannot look at the status for alerts: {!r}", exc)
            await self.save()
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick)
