"""What the daemon's periodic jobs (drills, prunes) share: the loop (wait until the job is
due, run it, and never let what it meets take the daemon down) and the parts a job keeps
(:class:`PeriodicJob`): among them, how a job that keeps failing backs off and logs."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from akoshad.backoff import exponential
from akoshad.ratelog import ReasonLog

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
FAILURE_LOG_SECONDS = 3600.0  # the same failure of a job is logged at most this often
# what a request's failure says of its tries (``backoff.say_tries``): it changes each try
_TRIES = re.compile(r" \(sent \d+ times over \d+ s\)")


def failure_reason(text: str) -> str:
    """``text`` of a failure without what changes from one try of it to the next: the key
    under which its repeats are counted rather than logged."""
    return _TRIES.sub("", text)


async def run_periodic(
    name: str,
    stop_event: asyncio.Event,
    due_in: Callable[[], Awaitable[float]],
    once: Callable[[], Awaitable[None]],
    failed: Callable[[str, Exception], None],
    nudge: asyncio.Event | None = None,
) -> None:
    """Until ``stop_event``: ``once()`` whenever ``due_in()`` is 0 or less, never sooner
    than :data:`MIN_GAP` after the last run ended; ``failed(name, exc)`` is told of an
    unexpected error (it logs it and moves the next try). ``nudge``, when set, has
    ``due_in()`` asked again at once (it is cleared then)."""
    while not stop_event.is_set():
        try:
            wait = await due_in()
            if wait <= 0:
                await once()
                wait = MIN_GAP
        except Exception as exc:  # a periodic job must never take the daemon down
            failed(name, exc)
            wait = TICK
        await _pause(stop_event, min(wait, TICK), nudge)


async def _pause(stop_event: asyncio.Event, seconds: float, nudge: asyncio.Event | None) -> None:
    """Until ``stop_event`` or ``nudge`` is set, or ``seconds`` have passed; ``nudge`` is
    cleared."""
    if nudge is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), seconds)
        return
    waits = [asyncio.ensure_future(stop_event.wait()), asyncio.ensure_future(nudge.wait())]
    try:
        await asyncio.wait(waits, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    nudge.clear()


class PeriodicJob:
    """A periodic job's parts: the settings (a reload replaces them), the state, the target,
    the events, the daemon's stop event and pass lock; when it started and, after a run that
    could not happen, the earliest next try (:meth:`retry_delay` later), both on the
    monotonic clock (a wall clock set back holds neither); how many runs in a row failed,
    and the log of their failures (:data:`FAILURE_LOG_SECONDS`)."""

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
        self._failures = 0  # runs in a row that failed or could not happen
        self.failure_log = ReasonLog(FAILURE_LOG_SECONDS)

    def configure(self, settings: Settings) -> None:
        """A reload: the interval (and what else the job reads) may have changed."""
        self.settings = settings
        self.start_over()

    def start_over(self) -> None:
        """A reload, or a run asked for: failures counted from none again, and a try
        postponed further than ``retry_seconds`` comes then (the user may have fixed the
        cause)."""
        self._failures = 0
        self._not_before = min(self._not_before, time.monotonic() + self.retry_seconds)

    def retry_delay(self) -> float:
        """How long after a run that failed the next try comes: ``retry_seconds`` after the
        first failure in a row, twice as long after each further one, at most one interval
        (a target down for a day, or a cause only the user can remove, is not tried every
        few minutes all along)."""
        return min(self.interval(), exponential(self._failures - 1, self.retry_seconds))

    def failed(self, name: str, exc: Exception) -> None:
        """A run could not happen (an unexpected error): logged (the same error at most
        once per :data:`FAILURE_LOG_SECONDS`), the next try postponed."""
        text = f"{type(exc).__name__}: {exc}"
        self.failure_log.error(failure_reason(text), "{} could not run: {}", name, text)
        self._postpone()

    def interval(self) -> float:
        """Seconds between two runs (0 or less: off)."""
        raise NotImplementedError

    def _postpone(self, *, failed: bool = True) -> None:
        """The next try :meth:`retry_delay` later (one more failure in a row); not
        ``failed`` (the job ran, but found nothing to do): ``retry_seconds`` later."""
        self._failures = self._failures + 1 if failed else 0
        delay = self.retry_delay() if failed else min(self.interval(), self.retry_seconds)
        self._not_before = time.monotonic() + delay

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
