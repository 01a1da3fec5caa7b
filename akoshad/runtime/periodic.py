"""What the daemon's periodic jobs (drills, prunes) share: the loop (wait until the job is
due, run it, and never let what it meets take the daemon down) and the parts a job keeps
(:class:`PeriodicJob`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from loguru import logger

if TYPE_CHECKING:
    from akoshad.config import Settings
    from akoshad.events import EventBus
    from akoshad.store.db import StateDB
    from akoshad.targets import Target

TICK = 60.0  # the daemon looks at the interval at least this often (it may be reloaded)
# A last run dated further ahead of the clock than this was dated by a clock that ran ahead
# and was set right since: waiting for it would hold the job back until the clock caught up.
CLOCK_SKEW = 300.0
# A job runs again at the earliest this long after its last run ended: an interval set to
# next to nothing (drill_interval_hours: 1e-9) ran it back to back, hundreds of log lines
# a second at most of a core.
MIN_GAP = 5.0


async def run_periodic(
    name: str,
    stop_event: asyncio.Event,
    due_in: Callable[[], Awaitable[float]],
    once: Callable[[], Awaitable[None]],
    postpone: Callable[[], None],
) -> None:
    """Until ``stop_event``: ``once()`` whenever ``due_in()`` is 0 or less, never sooner
    than :data:`MIN_GAP` after the last run ended; an unexpected error is logged and
    ``postpone()`` moves the next try."""
    while not stop_event.is_set():
        try:
            wait = await due_in()
            if wait <= 0:
                await once()
                wait = MIN_GAP
        except Exception as exc:  # a periodic job must never take the daemon down
            logger.error("{} could not run: {}: {}", name, type(exc).__name__, exc)
            postpone()
            wait = TICK
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), min(wait, TICK))


class PeriodicJob:
    """A periodic job's parts: the settings (a reload replaces them), the state, the target,
    the events, the daemon's stop event and pass lock; when it started and, after a run that
    could not happen, the earliest next try (``retry_seconds`` later, or one interval if
    that is shorter), both on the monotonic clock (a wall clock set back holds neither)."""

    retry_seconds = 600.0
    first_delay = 60.0  # the first run after a start with none on record (or at most one interval)
    wake: asyncio.Event | None = None  # set when a run queued files again: the drain has work

    def __init__(
        self,
        settings: Settings,
        *,
        state: StateDB,
        target: Target,
        events: EventBus,
        stop_event: asyncio.Event,
        pass_lock: asyncio.Lock,
    ) -> None:
        self.settings = settings
        self.state = state
        self.target = target
        self.events = events
        self.stop_event = stop_event
        self.lock = pass_lock
        self.started = time.monotonic()
        self._not_before = 0.0

    def configure(self, settings: Settings) -> None:
        """A reload: the interval (and what else the job reads) may have changed."""
        self.settings = settings

    def interval(self) -> float:
        """Seconds between two runs (0 or less: off)."""
        raise NotImplementedError

    def _postpone(self) -> None:
        self._not_before = time.monotonic() + min(self.interval(), self.retry_seconds)

    def wait(self, at: object, after: float) -> float:
        """Seconds until the job is due: ``after`` seconds past ``at`` (the wall-clock time
        of its last run); with none on record, or one dated ahead of the clock (beyond
        :data:`CLOCK_SKEW`), ``first_delay`` after the start; never before a postponed try."""
        now = time.monotonic()
        if isinstance(at, int | float) and at <= time.time() + CLOCK_SKEW:
            wait = float(at) + after - time.time()
        else:
            wait = self.started + min(self.interval(), self.first_delay) - now
        return max(wait, self._not_before - now)
