"""systemd's watchdog and status line, fed from the pipeline's progress.

``WATCHDOG=1`` is sent only while the pipeline moves or has nothing to do; a pipeline that
made no progress for ``watchdog_stall_seconds`` while busy is left to the service manager.
``STATUS=`` follows the daemon's status line.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

from akoshad.pipeline.stats import Stats
from akoshad.ratelog import RateLimitedLog
from akoshad.runtime.notify import Notifier, WatchdogPolicy
from akoshad.runtime.status import StatusView


class Watchdog:
    """The daemon's health loop."""

    def __init__(
        self,
        notifier: Notifier,
        policy: WatchdogPolicy,
        stats: Stats,
        view: StatusView,
        stop_event: asyncio.Event,
    ) -> None:
        self.notifier = notifier
        self.watchdog_policy = policy
        self.stats = stats
        self.view = view
        self.stop_event = stop_event
        self._rate_log = RateLimitedLog(60.0)

    async def run(self) -> None:
        """STATUS= on changes; WATCHDOG=1 only while the pipeline moves or has nothing to do."""
        if not self.notifier.enabled:
            return  # no service manager listening: nothing to tell, no timer to run
        interval = self.notifier.watchdog_interval
        tick = min(1.0, interval) if interval else 1.0
        while not self.stop_event.is_set():
            busy = self.stats.syncing or self.stats.in_flight > 0
            self.watchdog_policy.observe(self.stats.progress_seq, busy)
            if interval and self.watchdog_policy.should_ping():
                self.notifier.watchdog()
                self.watchdog_policy.pinged()
                self._rate_log.ok("wedged", "the pipeline moves again: watchdog fed")
            elif interval and self.watchdog_policy.wedged:
                self._rate_log.error(
                    "wedged",
                    "the pipeline made no progress for {:.0f}s: watchdog withheld",
                    self.watchdog_policy.stall_seconds,
                )
            self.notifier.status(await self.view.line())
            await self._sleep_or_stop(tick)

    async def _sleep_or_stop(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), seconds)
