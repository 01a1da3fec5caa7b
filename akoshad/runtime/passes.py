"""The daemon's drain passes: one at a time under the pass lock, the background loop that
runs them as changes fall due, and a drain on request (``sync --wait``, ``run --once``).

The loop survives what a pass may meet (a full disk, the state database in trouble, a
target gone wrong): the failure is counted, logged and emitted, and the next pass waits a
backoff (2 s doubling, at most 60 s) unless the daemon stops first.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from contextlib import suppress

from loguru import logger

from akoshad.errors import AkoshadError
from akoshad.pipeline.report import PassReport
from akoshad.runtime.failure_notices import FailureNotices
from akoshad.runtime.settle import InterruptedUploads
from akoshad.runtime.wiring import Parts

# the background passes that made an upload, remembered for a sync that waited for the pass
# lock meanwhile (its change was in one of them)
REMEMBERED_UPLOADS = 8
DRAIN = "drain"  # the key of passes that raised, in FailureNotices


class Passes:
    """Drain passes of one daemon (``parts``), paused while ``paused()`` says so."""

    def __init__(
        self,
        parts: Parts,
        interrupted: InterruptedUploads,
        paused: Callable[[], bool],
        stop_event: asyncio.Event,
        wake: asyncio.Event,
    ) -> None:
        self.parts = parts
        self.interrupted = interrupted
        self.paused = paused
        self.stop_event = stop_event
        self.wake = wake  # set: the drain has work
        self._done = 0  # passes run, numbered
        self._uploaded: deque[tuple[int, PassReport]] = deque(maxlen=REMEMBERED_UPLOADS)
        self.notices = FailureNotices()  # passes that raise, paced as failed uploads are

    async def one(
        self, method: str | None = None, enable_fallback: bool | None = None
    ) -> PassReport | None:
        """One pass through the chain (``method``/``enable_fallback``: a one-off sync's)."""
        async with self.parts.pass_lock:
            await self.interrupted.before_pass()
            report = await self.parts.drain.run_pass(method, enable_fallback)
            self._done += 1
            if (
                report is not None
                and report.upload_id
                and not (report.error or report.memory_error)
            ):
                self._uploaded.append((self._done, report))
            return report

    async def until_empty(
        self,
        *,
        retry_now: bool = True,
        method: str | None = None,
        enable_fallback: bool | None = None,
    ) -> tuple[bool, list[PassReport]]:
        """Drain now (``sync --wait``, ``run --once``): (every pass ok, reports).

        Holds the pass lock throughout, so the background loop cannot take these changes
        away from the caller that asked for them. An upload the background loop made while
        the caller waited for the lock (the change it asked for may be in it) is among the
        reports, first."""
        before = self._done
        p = self.parts
        async with p.pass_lock:
            waited = [report for n, report in self._uploaded if n > before]
            await p.feed.flush()
            await self.interrupted.before_pass()
            if retry_now:
                await self.due_now()
            ok, reports = await p.drain.until_empty(
                method, enable_fallback, stop=self.stop_event, paused=self.paused
            )
            return ok, waited + reports

    async def due_now(self) -> None:
        """Every pending change due now, those waiting out a failure's backoff too (a sync
        asked for: the user may have fixed the cause)."""
        await self.parts.state.transaction(
            lambda c: c.execute("UPDATE queue SET next_attempt = 0 WHERE state = 'pending'")
        )

    async def run(self) -> None:
        """The background loop: a pass whenever changes are due (and not paused, and
        ``min_upload_interval_seconds`` allows), until the daemon stops."""
        drain = self.parts.drain
        failures = 0
        while not self.stop_event.is_set():
            if not self.paused() and drain.pacer.hold() <= 0:
                try:
                    report = await self.one()
                    failures = 0
                    self._worked()
                except (sqlite3.Error, OSError, AkoshadError) as exc:
                    failures += 1
                    self.parts.stats.counters.failures += 1
                    self._failed(str(exc))
                    await self._sleep_or_stop(min(60.0, 2.0**failures))
                    continue
                if report is not None:
                    continue  # more may be due right away
            due = None if self.paused() else await self.parts.state.next_due()
            due = drain.pacer.defer(due, time.time())  # min_upload_interval_seconds
            timeout = None if due is None else max(0.05, due - time.time())
            self.wake.clear()
            if self.stop_event.is_set():  # came while this pass waited for the pass lock
                return  # (a sync --wait's drain held it): its wake is gone with the clear
            with suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    def _failed(self, error: str) -> None:
        """A pass that raised (a full or broken ``state_dir``...): the ERROR line and the
        ``failure`` event when its run of failures is to be announced (``FailureNotices``:
        its start, a new kind, else every 5 minutes); otherwise a DEBUG line."""
        unsaid = self.notices.failed(DRAIN, error)
        if unsaid is None:
            logger.debug("drain pass failed again: {}", error)
            return
        note = f" ({unsaid} more failed pass(es) since the last report)" if unsaid else ""
        logger.error("drain pass failed: {}{}", error, note)
        repeated = {"repeated": unsaid} if unsaid else {}
        self.parts.events.emit("failure", error=error, failed=0, **repeated)

    def _worked(self) -> None:
        failed = self.notices.worked(DRAIN)
        if failed:
            logger.info("drain passes work again after {} failed pass(es)", failed)

    async def _sleep_or_stop(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), seconds)
