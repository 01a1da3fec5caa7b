"""The daemon's prunes (:class:`PruneScheduler`): one every
``retention.prune_interval_hours``, a failed one tried again later (and soon after the
target's ``recovered``), and each one asked for over the socket (:func:`prune_request`),
all under the pass lock; one prune is :func:`~akoshad.runtime.prune.prune_target`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Mapping
from typing import Any

from loguru import logger

from akoshad.config import Settings
from akoshad.events import EventBus
from akoshad.pipeline.ownership import OwnerGate
from akoshad.runtime.control_client import ControlRequestError
from akoshad.runtime.drill_mark import answers
from akoshad.runtime.drills import DrillScheduler
from akoshad.runtime.periodic import TICK, PeriodicJob, run_periodic
from akoshad.runtime.prune import prune_target
from akoshad.runtime.prune_progress import fold_interrupted
from akoshad.runtime.prune_report import KV_LAST, log_result, parse_last, record
from akoshad.runtime.recovery_retry import RecoveryRetry
from akoshad.storage.owner import NotOwner
from akoshad.storage.retention import Retention
from akoshad.store.db import StateDB
from akoshad.targets import Target

FIRST_DELAY = 300.0  # after a start with no prune on record
# a prune that failed or was refused (not the owner) is tried again this long after, then
# twice as long after each further failure in a row, at most one interval apart
RETRY_SECONDS = 600.0


class PruneScheduler(PeriodicJob):
    """The daemon's prunes: one every ``prune_interval_hours`` and each one asked for over
    the socket, all under the pass lock."""

    retry_seconds = RETRY_SECONDS
    first_delay = FIRST_DELAY

    def __init__(
        self,
        settings: Settings,
        *,
        state: StateDB,
        target: Target,
        gate: OwnerGate,
        events: EventBus,
        stop_event: asyncio.Event,
        pass_lock: asyncio.Lock,
        drills: DrillScheduler | None = None,
    ) -> None:
        super().__init__(
            settings,
            state=state,
            target=target,
            events=events,
            stop_event=stop_event,
            pass_lock=pass_lock,
        )
        self.gate = gate
        self.drills = drills  # a prune waits for the daemon's drill: it may repack what it reads
        # a prune that failed is tried 30 s after the target's ``recovered``, once until one
        # passes (it failed status --check until its own retry, 10 minutes or more later)
        self.retry = RecoveryRetry()

    @functools.cached_property
    def nudge(self) -> asyncio.Event:
        """Set when the target recovered: the loop looks at once whether a prune is due."""
        return asyncio.Event()

    def emit(self, event: str, fields: dict[str, Any]) -> None:
        """An event of the daemon (the scheduler hears them): the target's ``recovered``,
        after a prune that failed, has the prune tried again soon."""
        if event != "recovered" or fields.get("target") != self.target.name:
            return
        if self.retry.recovered():
            logger.info(
                "prune: {} answers again: the prune that failed is tried in {:.0f} s",
                self.target.name,
                self.retry.after,
            )
            self.nudge.set()

    def interval(self) -> float:
        """``retention.prune_interval_hours`` in seconds."""
        return self.settings.retention.prune_interval_hours * 3600.0

    async def last(self) -> dict[str, Any] | None:
        """``status.last_prune`` (a prune run by hand counts too), or None."""
        return parse_last(await self.state.get_kv(KV_LAST))

    async def prune_now(self, *, dry_run: bool = False, scheduled: bool = False) -> dict[str, Any]:
        """One prune now, after the drill in progress (if any), under the pass lock; raises
        :class:`NotOwner`. One asked for (not ``scheduled``, not a dry run) starts the
        count of failed prunes over; a ``scheduled`` one that fails as the last did is
        logged at most once per :data:`~akoshad.runtime.periodic.FAILURE_LOG_SECONDS`."""
        from akoshad.runtime.drill_heal import send_missing_again

        if not scheduled and not dry_run:
            self.start_over()
        if not dry_run:
            self.retry.due = None  # tried now

        async with contextlib.AsyncExitStack() as stack:
            if self.drills is not None:  # taken before the pass lock, as a drill does
                await stack.enter_async_context(self.drills.reading)
            await stack.enter_async_context(self.lock)
            result = await prune_target(
                self.settings, self.state, self.target, self.gate, dry_run=dry_run
            )
            queued = await send_missing_again(self.state, self.target.name, result, dry_run=dry_run)
        if queued and self.wake is not None:
            self.wake.set()
        last = await record(self.state, result)
        if not dry_run and result.get("enabled", True):
            self._count(result)
            failed = _retried_soon(last)
            self.retry.outcome(failed=failed)
            if failed:
                await self._mark_if_unreachable(last)
        log_result(result, self.failure_log if scheduled else None)
        if not dry_run and result.get("enabled", True):
            self.events.emit("prune", **{k: v for k, v in last.items() if k != "at"})
        return result

    async def _mark_if_unreachable(self, last: Mapping[str, Any]) -> None:
        """A prune that failed before it read the uploads, the target not answering one
        cheap read: the target is marked unavailable as a drill that cannot read it marks
        it (``degraded``: its last attempt failed), and the drill loop's look, once a
        minute, sees it back, whose ``recovered`` brings the prune's early try. Unmarked,
        an idle daemon showed the target ok and never saw it back: the prune waited for
        its own retry, 10 minutes on."""
        drills = self.drills
        if drills is None or drills.health is None or not drills.health.available:
            return
        if await answers(self.target, self.settings.cloud_sync.system_id):
            return  # it answers: the failure was no outage (a newer manifest format...)
        problems = last.get("problems") or ["the target does not answer"]
        drills.mark.failed(drills.health, str(problems[0]))
        drills.nudge.set()  # the drill loop takes the look's time into its wait

    def _count(self, result: dict[str, Any]) -> None:
        """One more failed prune in a row, or none since this one (a "works again" line
        when failures were logged): also none after one that ran to its end and found a
        kept upload damaged (tried again at the interval, not sooner)."""
        if result["ok"]:
            self.failure_log.ok("prune: works again")
        self._failures = (
            0 if result["ok"] or result.get("uploads_kept") is not None else (self._failures + 1)
        )

    async def due_in(self) -> float:
        """Seconds until the next prune is due (TICK while prunes are off)."""
        interval = self.interval()
        if interval <= 0 or not self.settings.retention.enabled:
            return TICK
        last = await self.last() or {}
        soon = _retried_soon(last)
        wait = self.wait(last.get("at"), self.retry_delay() if soon else interval)
        return self.retry.wait(wait)

    async def run(self) -> None:
        """Until the daemon stops: wait for the next prune, run it. Nothing a prune meets
        leaves this task. A prune the daemon's last run did not finish (stopped or killed
        meanwhile) is recorded first, with what it deleted."""
        try:
            await fold_interrupted(self.state)
            # one that failed before a restart (the target down): tried soon once it is back
            self.retry.outcome(failed=_retried_soon(await self.last() or {"ok": True}))
        except Exception as exc:  # as any failure of a prune: logged, the daemon goes on
            self.failed("prune", exc)
        self.events.subscribe(self)
        await run_periodic(
            "prune", self.stop_event, self.due_in, self._scheduled, self.failed, self.nudge
        )

    async def _scheduled(self) -> None:
        try:
            await self.prune_now(scheduled=True)
        except NotOwner as exc:  # nothing recorded: this machine has nothing to prune
            self.failure_log.warning(str(exc), "prune skipped: {}", exc)
            self._postpone()


def _retried_soon(last: Mapping[str, Any]) -> bool:
    """A prune that failed is tried again sooner (10 minutes later, then twice as long with
    each further failure in a row: ``retry_delay``); not one that needs the identity (that
    won't come back by itself), nor one that ran to its end (``uploads_kept`` known) and
    found a kept upload damaged or objects missing: that stands until retention drops the
    upload, and each try reads every manifest and document again."""
    ran = last.get("uploads_kept") is not None
    return not last.get("ok") and not last.get("needs_identity") and not ran


async def prune_request(scheduler: PruneScheduler, request: dict[str, Any]) -> dict[str, Any]:
    """The socket's ``{"cmd": "prune", "dry_run": bool}``; refused (an error reply) when
    this machine does not own the system id."""
    dry_run = request.get("dry_run", False)
    if not isinstance(dry_run, bool):
        raise ControlRequestError("dry_run must be true or false")
    _same_policy(scheduler.settings.retention, request.get("retention"))
    try:
        return await scheduler.prune_now(dry_run=dry_run)
    except NotOwner as exc:
        raise ControlRequestError(str(exc)) from None


def _same_policy(mine: Retention, asked: object) -> None:
    """Refuse a prune asked with other retention rules than the daemon's (its configuration
    file was edited and not reloaded): the user would get the policy of the file as it was
    (an edit to keep more, undone). A request without rules (an older client) goes on."""
    if asked is None:
        return
    try:
        theirs = Retention.model_validate(asked)
    except ValueError:
        raise ControlRequestError("retention must be a retention: group") from None
    if theirs.rules() != mine.rules():
        raise ControlRequestError(
            f"the daemon runs with retention '{mine.describe()}' but the configuration "
            f"here says '{theirs.describe()}': reload the daemon (systemctl --user reload "
            "akoshad, or kill -HUP its pid) so that it prunes by the file (or give this "
            "command the daemon's AKOSHAD_RETENTION__* environment), then prune again; "
            "nothing was deleted"
        )
