"""The daemon's restore drills: one every ``drill_interval_hours`` (0 = off), beside the
uploads. The pass lock is held only while the upload is picked; the daemon's prunes wait
for a drill to finish (``reading``: a repack would delete the packs it reads); the result
goes to the state (``status.last_drill``), the event bus (``drill``: webhooks, metrics) and
the log.
The drill code (``restore.drill``) is imported when the first drill runs.

Encrypted uploads are drilled with ``encryption.identity_file``. A daemon without one
(the identity kept off this machine) cannot read them: such a drill checks nothing, is
recorded as ``last_drill`` with ``ok: false`` and ``needs_identity: true`` (one problem line
saying so, a warning in the log, one ``drill`` event; no failure for status or the safety
verdict), and the next one comes after the full interval, like any drill. An
``identity_file`` that is configured but cannot be read, or that does not open the upload
(encrypted to other keys), fails the drill.
"""

from __future__ import annotations

import asyncio
import functools
import math
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from loguru import logger

from akoshad.errors import PermanentError, TransientError
from akoshad.restore.drill_dirs import KV_LAST, KV_LAST_GOOD, parse_result, remove_stale
from akoshad.runtime.drill_mark import ReadMark
from akoshad.runtime.periodic import TICK, PeriodicJob, failure_reason, run_periodic
from akoshad.runtime.recovery_retry import AFTER_RECOVERY_SECONDS, RecoveryRetry
from akoshad.storage.crypto import Identities, IdentityError

if TYPE_CHECKING:
    from akoshad.config import Settings
    from akoshad.pipeline.recovery import Recovery
    from akoshad.pipeline.stats import TargetHealth
    from akoshad.restore.drill_restore import DrillResult

FIRST_DELAY = 60.0  # after a start without any drill on record
# nothing to drill yet, or the drill could not run: look again this long after (a drill that
# could not run again: twice as long after each further one in a row, at most one interval)
RETRY_SECONDS = 600.0
FOLLOW_UP_SECONDS = 600.0  # after a drill had what it found lost sent again: see it healed


def log_result(result: DrillResult) -> None:
    """INFO when all is well, ERROR with every problem (WARNING when it needs the
    identity)."""
    if result.needs_identity:
        logger.warning("drill of upload {} skipped: {}", result.upload_id, result.problems[0])
        return
    for note in result.notes:
        logger.warning("drill of {}: {}", result.upload_id, note)
    if result.ok:
        logger.info(
            "drill of upload {}: {} file(s), {} byte(s) restored and checked in {:.1f}s: all well",
            result.upload_id,
            result.files,
            result.bytes,
            result.seconds,
        )
        return
    logger.error(
        "drill of upload {} found {} problem(s): {}",
        result.upload_id,
        len(result.problems),
        "; ".join(result.problems),
    )


class DrillScheduler(PeriodicJob):
    """The daemon's drill task: a drill each ``drill_interval_hours`` (0 = off), beside the
    uploads; the pass lock is held only while the upload is picked (and while the files of
    objects it found missing or damaged are queued to be sent again: ``drill_heal``)."""

    retry_seconds = RETRY_SECONDS
    first_delay = FIRST_DELAY
    # the daemon's, for a drill that finds the last upload gone: seeds the ledger again
    # (under the pass lock), then queues every file that differs from it
    recovery: Recovery | None = None
    reconcile: Callable[[], Awaitable[Any]] | None = None
    # the target's health in the daemon's stats: a drill that cannot read the target marks
    # it unavailable at once (degraded), and clears only what it marked when it reads again
    health: TargetHealth | None = None
    # why the last drill could not run (the target unreadable, state_dir full), until one runs
    not_run: str | None = None
    # when (monotonic) a drill is due to show that what the last one found lost was sent
    # again: without it, the failed drill stood (status unsafe) for a whole interval
    _follow_up: float | None = None
    _looked = False  # the last drill on record was looked at since the start

    @functools.cached_property
    def mark(self) -> ReadMark:
        """What a drill that could not read the target marked (``drill_mark``)."""
        return ReadMark()

    @functools.cached_property
    def retry(self) -> RecoveryRetry:
        """The target kept the last drill from running: tried again
        :data:`AFTER_RECOVERY_SECONDS` after it is seen back, once until a drill runs (a
        flapping target gets no drill at each of its returns, only the usual retries)."""
        return RecoveryRetry(AFTER_RECOVERY_SECONDS)

    @functools.cached_property
    def nudge(self) -> asyncio.Event:
        """Set when the target recovered: the loop looks at once whether a drill is due."""
        return asyncio.Event()

    @functools.cached_property
    def reading(self) -> asyncio.Lock:
        """Held while a drill picks and reads its upload: a prune takes it (before the pass
        lock) so that it never deletes or repacks what a drill is reading."""
        return asyncio.Lock()

    def interval(self) -> float:
        """``drill_interval_hours`` in seconds."""
        return self.settings.drill_interval_hours * 3600.0

    def configure(self, settings: Settings) -> None:
        """A reload; one that turns drills off forgets why the last could not run: none is
        tried again, so it no longer fails ``status --check`` (it did until a restart)."""
        super().configure(settings)
        if self.interval() <= 0:
            self.not_run = None
            self.retry.forget()

    async def last(self) -> dict[str, Any] | None:
        """The ``last_drill`` object (a drill run by hand counts too), or None."""
        return parse_result(await self.state.get_kv(KV_LAST))

    async def last_good_at(self) -> float | None:
        """When the last drill that found nothing wrong finished, or None."""
        text = await self.state.get_kv(KV_LAST_GOOD)
        try:
            return None if text is None else float(text)
        except ValueError:
            return None

    async def due_in(self) -> float:
        """Seconds until the next drill is due (at most TICK when drills are off)."""
        sid = self.settings.cloud_sync.system_id  # the loop wakes for the next look too
        look = (
            math.inf if self.health is None else await self.mark.look(self.health, self.target, sid)
        )
        interval = self.interval()
        if interval <= 0:
            return min(TICK, look)
        self._retry_if_back()
        last = await self.last()
        wait = self.wait(last.get("at") if last else None, interval)
        if not self._looked and last and last.get("ok") is False and not last.get("needs_identity"):
            # a start with a failed drill on record (a restart after the fix, often):
            # drilled again soon, not a whole interval after that drill
            self._follow_up = self.started + self.first_delay
        self._looked = True
        if self._follow_up is not None:
            wait = min(wait, max(self._follow_up, self._not_before) - time.monotonic())
        wait = self.retry.wait(wait)
        if self.not_run is not None:  # also one asked for: tried again as it was postponed
            wait = min(wait, self._not_before - time.monotonic())
        return min(wait, look)

    def _retry_if_back(self) -> None:
        """After a drill the target kept from running, once the target is available again
        (an upload went through, the outbox is back): the next try comes
        :data:`AFTER_RECOVERY_SECONDS` from now, not the retry's 10 minutes or more later
        (``drill_not_run`` failed ``status --check`` all that time)."""
        if self.health is None or not self.health.available or not self.retry.recovered():
            return
        logger.info(
            "drill: {} answers again: the drill that could not run is tried in {:.0f} s",
            self.target.name,
            self.retry.after,
        )

    def emit(self, event: str, fields: dict[str, Any]) -> None:
        """An event of the daemon (the scheduler hears them): the target's ``recovered``
        has the loop look at once whether a drill that could not run is due."""
        if event == "recovered" and fields.get("target") == self.target.name:
            self.nudge.set()

    async def run(self) -> None:
        """Until the daemon stops: wait for the next drill, run it. Nothing a drill meets
        (a target down, a full disk, a state error) leaves this task."""
        try:  # what a drill cut short by a crash left, also when drills are off now
            await asyncio.to_thread(remove_stale, self.settings.state_dir)
        except OSError as exc:
            logger.warning("cannot remove an old drill directory: {}", exc)
        self.events.subscribe(self)
        await run_periodic(
            "drill",
            self.stop_event,
            self.due_in,
            self._drill_or_postpone,
            self.failed,
            self.nudge,
        )

    async def _drill_or_postpone(self) -> None:
        """A scheduled drill; one the target keeps from running is tried again later and
        later (``retry_delay``), its warning logged at most once an hour while it lasts."""
        try:
            result = await self.drill_once()
        except (TransientError, PermanentError) as exc:
            why = f"{self.target.name} cannot be read: {exc}"
            self.failure_log.warning(failure_reason(why), "drill postponed: {}", why)
            self._postpone()
            return
        self.failure_log.ok("drill: runs again")
        if result is None:  # nothing to drill yet: looked again 10 minutes later
            self._postpone(failed=False)
        else:
            self._failures = 0

    async def drill_once(self) -> DrillResult | None:
        """One drill now (:meth:`_drill`); what keeps it from running is kept in
        ``not_run`` (status, ``status --check``) until a drill runs, and a target it cannot
        read is marked unavailable."""
        self.retry.due = None  # tried now
        try:
            result = await self._drill()
        except (TransientError, PermanentError) as exc:
            self._not_run(f"{self.target.name} cannot be read: {exc}")
            if self.health is not None:
                self.mark.failed(self.health, str(exc))
            if self.not_run is not None:  # awaits the target's recovery, unless had since
                self.retry.outcome(failed=True)
            else:
                self.retry.forget()
            raise
        except Exception as exc:  # state_dir full, the state database: tried again later
            self._not_run(f"{type(exc).__name__}: {exc}")
            self.retry.forget()
            raise
        self.not_run = None
        self.retry.outcome(failed=False)
        if self.health is not None:
            self.mark.read(self.health)
        return result

    def _not_run(self, why: str) -> None:
        """Keep why a drill could not run, for ``status`` ("tried again later"): only with
        drills on (by hand with drills off, the reply says it, and none is tried again)."""
        if self.interval() > 0:
            self.not_run = why

    async def _drill(self) -> DrillResult | None:
        """One drill now; None when there is nothing to drill yet. When the last upload
        this machine made in the target is gone, the drill fails saying so (whatever the
        newest upload still there shows), and the target is forgotten and its ledger seeded
        again as at a start: the next upload sends what the newest upload there lacks."""
        # imported at the first drill: a daemon with drills off never loads the drill code
        from akoshad.restore.drill import drill_picked, pick_upload

        settings, target = self.settings, self.target
        system_id = settings.cloud_sync.system_id
        async with self.reading:  # no prune meanwhile: it may repack what is read
            gone: str | None = None
            try:
                async with self.lock:
                    gone = await self._forget_gone(system_id)
                    upload_id = await pick_upload(target, system_id)
            except Exception:
                if gone is not None:  # forgotten: every file compared, even if the drill
                    await self._compare_all()  # cannot go on (the target cannot be read)
                raise
            if gone is not None:
                await self._compare_all()
            if upload_id is None and gone is None:
                logger.debug("drill: no upload in {} yet, nothing to drill", target.name)
                return None
            identities, unusable = (
                (None, None) if upload_id is None else await asyncio.to_thread(self._identities)
            )
            result = await drill_picked(
                target,
                system_id,
                upload_id,
                gone,
                settings.state_dir,
                settings.drill_max_mbps,
                identities,
            )
        if result.needs_identity and unusable:  # one is configured: not a choice, a fault
            result.needs_identity = False
            result.problems = [f"encryption.identity_file cannot be used: {unusable}"]
        follow_up = await self._record(result)
        if gone is not None:  # the whole store is sent again
            self._follow_up = follow_up
        return result

    async def _compare_all(self) -> None:
        """After the state forgot the target: every file compared with the seeded ledger
        (what differs is queued), and the pipeline woken. Without it, the next uploads
        would hold only the files that change from now on."""
        if self.reconcile is not None:
            await self.reconcile()
            if self.wake is not None:
                self.wake.set()

    async def _forget_gone(self, system_id: str) -> str | None:
        """Under the pass lock: the last upload this machine made in the target, when it
        is gone (``forget_if_last_upload_gone``: the state forgets the target), after the
        ledger is seeded from the newest upload there."""
        from akoshad.runtime.target_identity import forget_if_last_upload_gone, seed_ledger

        gone = await forget_if_last_upload_gone(self.state, self.target, system_id)
        if gone is not None and self.recovery is not None:
            await seed_ledger(self.recovery, self.target, available=True)
        return gone

    async def _record(self, result: DrillResult) -> float | None:
        """Keep ``result`` as ``last_drill``, log it, emit it; queue again the files of
        what it found lost. Returns when a drill would follow up on files sent again (None
        when this drill was that follow-up: one after the upload that sends them, not one
        per drill, so a target that keeps losing what it is sent is drilled at the
        interval)."""
        from akoshad.restore.drill import store_result

        await self.state.transaction(lambda c: store_result(c, result))
        was, self._follow_up = self._follow_up, None
        now = time.monotonic()
        follow_up = now + FOLLOW_UP_SECONDS if was is None or was > now else None
        log_result(result)
        extra = {"needs_identity": True} if result.needs_identity else {}
        self.events.emit(
            "drill", ok=result.ok, upload_id=result.upload_id, problems=result.problems, **extra
        )
        lost = result.damaged_objects or result.documents_unreadable
        if lost and await self._send_again(result):
            self._follow_up = follow_up
        return follow_up

    async def _send_again(self, result: DrillResult) -> bool:
        """The files that used the objects found missing or damaged go up again with the
        next upload (``drill_heal``), under the pass lock (no upload is planned meanwhile);
        True when files were queued."""
        from akoshad.runtime.drill_heal import heal

        keys = sorted(result.damaged_objects)
        try:
            async with self.lock:
                outcome = await heal(
                    self.state,
                    self.target.name,
                    keys,
                    f"drill of {result.upload_id}",
                    documents=result.documents_unreadable,
                )
        except sqlite3.Error as exc:  # the next drill finds the damage again and retries
            logger.warning("drill: what it found lost cannot be queued to be sent again: {}", exc)
            return False
        queued = outcome is not None and outcome[1] > 0
        if queued and self.wake is not None:
            self.wake.set()
        return queued

    def _identities(self) -> tuple[Identities | None, str | None]:
        """(the identity when one is configured and readable, else None: an encrypted
        upload's drill then records that it needs it; why a configured one cannot be read,
        else None: that drill fails). Blocking."""
        try:
            return self.settings.encryption.identities_if_set(), None  # mode: at start
        except IdentityError as exc:
            logger.warning("drill: the identity is not usable: {}", exc)
            return None, str(exc)


async def drill_request(scheduler: DrillScheduler) -> dict[str, Any]:
    """The socket's ``{"cmd": "drill"}``: a drill now, in the daemon (what it finds lost is
    sent again, the ``drill`` event is emitted); the ``last_drill`` object with its
    details. Nothing to drill, or a target that cannot be read: an error reply."""
    from akoshad.runtime.control_client import ControlRequestError

    scheduler.start_over()
    try:
        result = await scheduler.drill_once()
    except (TransientError, PermanentError) as exc:
        scheduler._postpone()  # tried again 10 minutes later, as a drill of its own
        raise ControlRequestError(f"{scheduler.target.name} cannot be read: {exc}") from None
    except (OSError, sqlite3.Error) as exc:  # state_dir's disk full: one line, no traceback
        scheduler._postpone()
        raise ControlRequestError(f"the drill could not run: {type(exc).__name__}: {exc}") from None
    if result is None:
        from akoshad.restore.drill import nothing_to_drill

        sid = scheduler.settings.cloud_sync.system_id
        try:
            why = await nothing_to_drill(scheduler.target, sid)
        except (TransientError, PermanentError) as exc:
            raise ControlRequestError(f"{scheduler.target.name} cannot be read: {exc}") from None
        raise ControlRequestError(why)
    return result.as_dict()
