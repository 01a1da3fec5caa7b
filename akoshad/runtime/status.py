"""What the daemon says about itself: ``status``, ``queue``, the sd_notify status line.

One reading of the parts, shared by the control socket, ``/metrics`` and systemd.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from akoshad import __version__
from akoshad.config import Settings
from akoshad.pipeline.cloud_memories import KV_UNREADABLE
from akoshad.pipeline.storefiles import idle_include_line
from akoshad.runtime.health import (
    behind_after_seconds,
    capture_problem,
    check_kinds,
    clock_went_back,
    data_dir_problem,
    drill_not_run,
    memories_held,
    memories_unreadable,
    nothing_selected,
    nothing_to_back_up,
)
from akoshad.runtime.safety import SafetyPolicy, SafetyTracker, assess, drill_overdue
from akoshad.runtime.webhook_wire import failing_webhooks
from akoshad.runtime.wiring import Parts
from akoshad.store.places import target_identity


class StatusView:
    """Status of a running daemon, read from its parts."""

    def __init__(
        self,
        settings: Settings,
        parts: Parts,
        started: float,
        reload_refused: Callable[[], str | None] = lambda: None,
        unsettled: Callable[[], str | None] = lambda: None,
        config_changed: Callable[[], Awaitable[str | None]] | None = None,
        stopping: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.parts = parts
        self.started = started
        # the uptime runs on the monotonic clock: a wall clock set back made it negative
        self._started_monotonic = time.monotonic() - max(0.0, time.time() - started)
        self.paused = False
        self.safety = SafetyTracker(started)
        # settings a reload read but cannot apply (``runtime.reload.RESTART_KEYS``)
        self.restart_pending: list[str] = []
        self.metrics_error: str | None = None  # metrics_listen set and not served
        self.reload_refused = reload_refused  # the last reload's refusal, until one passes
        self.unsettled = unsettled  # why a crash's upload is not settled yet (runtime.settle)
        self.config_changed = config_changed  # the file changed, not reloaded (ConfigDrift)
        self.stopping = stopping  # a stop signal came: the pass in hand finishes, no new one
        # where it uploads (a reload changes none of it): a client asking with another
        # configuration's --config tells its status is not that configuration's
        self.place = target_identity(settings, settings.primary_target)

    def configure(self, settings: Settings) -> None:
        """A reload: the debounce window and the drill interval count in the verdict."""
        self.settings = settings

    def state_word(self, degraded: str | None) -> str:
        """CONTRACT.md's state; a daemon stopping is ``paused`` (its nearest: no new pass
        begins, the one in hand finishes), with ``stopping`` true beside it."""
        stats = self.parts.stats
        if self.paused or self.stopping():
            return "paused"
        if degraded:
            return "degraded"
        if stats.syncing or stats.in_flight:
            return "syncing"
        return "idle"

    def uptime(self) -> float:
        """Seconds since the daemon started, on the monotonic clock."""
        return round(time.monotonic() - self._started_monotonic, 3)

    def unrecorded(self) -> str | None:
        """A warning while changes seen cannot be put on the queue (the state's disk)."""
        why = self.parts.feed.unrecorded
        return None if why is None else f"{why}: kept in memory and tried again"

    async def status(self) -> dict[str, Any]:
        p = self.parts
        state = p.state
        depth = await state.queue_depth()
        last = await state.last_upload()
        degraded = p.stats.degraded_reason()
        missing = await asyncio.to_thread(data_dir_problem, self.settings.data_dir)
        empty = None if missing else await self.nothing_to_back_up()
        webhooks = await p.webhooks.status()
        memories = await p.memory_sync.status() if p.akosha_client is not None else None
        reads = p.akosha is not None or p.cloud is not None  # memories are read from copies
        unreadable = await state.get_kv(KV_UNREADABLE) if reads else None
        went_back = clock_went_back(await state.sorts_after_last())
        changed = None if self.config_changed is None else await self.config_changed()
        result: dict[str, Any] = {
            "state": self.state_word(degraded),
            "pid": os.getpid(),
            "version": __version__,
            "uptime_seconds": self.uptime(),
            "started_at": self.started,  # one value for the daemon's life (metrics)
            "data_dir": str(self.settings.data_dir),
            "pending": depth + len(p.feed.debouncer),
            "in_flight": p.stats.in_flight,
            "paused": self.paused,
            "stopping": self.stopping(),  # a stop signal came: state is paused meanwhile
            "degraded_reason": degraded,
            "degraded_since": p.health.down_since() if degraded else None,  # a target down
            "last_upload": None
            if last is None
            else {
                "upload_id": last.upload_id,
                "method": last.method,
                "finished_at": last.finished_at,
                "files": last.files,
                "bytes_sent": last.bytes_sent,
            },
            "last_pass_seconds": p.metrics.last_pass_seconds,  # the last pass, as timed
            "counters": p.stats.counters_dict(),
            "targets": self.targets(),
            "memories": memories,
            "skipped": await state.skipped(),
            "system_id": self.settings.cloud_sync.system_id,
            "place": self.place,  # where it uploads, as a client's place_fields names it
            "webhooks": webhooks,
            "last_drill": await p.drills.last(),
            "last_good_drill_at": await p.drills.last_good_at(),  # survives restarts too
            "drill_interval_hours": self.settings.drill_interval_hours,  # 0: drills off
            "drill_not_run": drill_not_run(p.drills.not_run),  # it could not run: why
            "last_prune": await p.prunes.last(),
            "lease": p.owners.lease(p.primary.name),
            "memories_unreadable": unreadable,  # why the last copy's memories were not read
            "warnings": self._warnings(
                missing,
                empty,
                webhooks,
                memories_held(memories),
                memories_unreadable(unreadable),
                went_back,
                changed,
            ),
            "metrics_error": self.metrics_error,
            "restart_pending": list(self.restart_pending),  # changed, applied at a restart
            "reload_refused": self.reload_refused(),  # the file on disk would not start
            "config_changed": changed,  # the file changed since read, not reloaded: how
            "unrecorded": p.feed.unrecorded,  # changes seen that the queue could not take
            "capture_failures": dict(p.stats.capture_failures),  # path: why, tried again
            "waiting_for_data_dir": missing is not None,
            "data_dir_problem": missing,  # why, while waiting for it
            "nothing_selected": empty,  # no file selected: why (the last upload is kept)
            "oldest_pending_age_seconds": await self.oldest_pending_age(),
            "behind_after_seconds": behind_after_seconds(
                self.settings.max_delay_seconds, self.settings.min_upload_interval_seconds
            ),
            "next_upload_not_before": p.drain.pacer.not_before(time.time())
            if depth or len(p.feed.debouncer)
            else None,
        }
        result["safety"] = self._safety(result)
        return result

    async def nothing_to_back_up(self) -> str | None:
        """One line when the store's last reconcile selected no file (an ``include`` typo,
        an empty or unmounted ``data_dir``: no backup) and nothing is on its way, else
        None. With an upload made before, that upload is kept as it is (the reconcile
        queued no removal) and the line says so."""
        p = self.parts
        if p.feed.files_on_disk != 0 or len(p.feed.debouncer) or p.stats.in_flight:
            return None
        uploaded = await p.state.last_upload() is not None
        if not uploaded and await p.state.queue_depth():
            return None
        why = nothing_selected(self.settings, p.feed.files_on_disk, p.feed.files_excluded)
        return None if why is None else nothing_to_back_up(why, uploaded)

    def _warnings(
        self,
        missing: str | None,
        empty: str | None,
        webhooks: list[dict[str, Any]],
        held: str | None = None,
        unreadable: str | None = None,
        went_back: str | None = None,
        changed: str | None = None,
    ) -> list[str]:
        """The status's one-line problems: the store, the queue, metrics, a refused reload,
        a crash's upload not settled, memories Akosha did not store yet, settings waiting
        for a restart, failing webhooks, a clock gone back."""
        unsettled = self.unsettled()
        waiting = (
            None
            if unsettled is None
            else f"an interrupted upload is not settled yet ({unsettled}): uploads wait until it is"
        )
        lines = [stopping_line(self.settings.drain_deadline_seconds) if self.stopping() else None]
        lines += [missing, empty, self.unrecorded(), self.metrics_error, self.reload_refused()]
        lines.append(changed)
        lines.append(capture_problem(self.parts.stats.capture_failures))
        lines.append(drill_not_run(self.parts.drills.not_run))
        lines.append(waiting)
        lines.append(held)
        lines.append(unreadable)
        lines.append(went_back)
        idle = self.parts.feed.idle_includes  # an include typo leaves out what it names
        lines.append(idle_include_line(self.settings.data_dir, idle) if idle else None)
        return [w for w in lines if w] + self._restart_warnings() + failing_webhooks(webhooks)

    def _restart_warnings(self) -> list[str]:
        """One line per setting changed in the configuration that runs as before until a
        restart (new S3 keys after a rotation, a new endpoint...)."""
        return [
            f"{key} changed in the configuration: the previous {key} is used until "
            "akoshad is restarted"
            for key in self.restart_pending
        ]

    async def problems(self) -> dict[str, str]:
        """What fails ``status --check``, by kind, and drills overdue (``drill_overdue``,
        which only the safety verdict counts): the webhook alerts' look."""
        st = await self.status()
        found = check_kinds(st)
        late = drill_overdue(st, self._policy(), now=time.time(), started=self.started)
        if late is not None:
            found["drill_overdue"] = late
        return found

    def _policy(self) -> SafetyPolicy:
        s = self.settings
        return SafetyPolicy(
            s.debounce_seconds, s.min_upload_interval_seconds, s.drill_interval_hours
        )

    def _safety(self, status: dict[str, Any]) -> dict[str, Any]:
        """Is everything backed up and restorable? (see akoshad/runtime/safety.py)"""
        found = assess(
            status,
            self._policy(),
            now=time.time(),
            started=self.started,
            last_pass_seconds=self.parts.metrics.last_pass_seconds,
        )
        return self.safety.update(found)

    async def oldest_pending_age(self) -> float | None:
        """Seconds since the oldest change not yet uploaded was seen (in the debouncer or
        the queue); None when nothing is pending."""
        ages: list[float] = []
        first = self.parts.feed.debouncer.oldest()
        if first is not None:
            ages.append(time.monotonic() - first)
        queued = await self.parts.state.oldest_queued()
        if queued is not None:
            ages.append(time.time() - queued)
        return round(max(0.0, *ages), 3) if ages else None

    def targets(self) -> dict[str, Any]:
        """The targets in use: the primary (the bucket when one is configured, else the
        local outbox) and ``http`` with ``akosha_url``. The outbox a daemon keeps beside a
        bucket receives nothing: not listed (its ``ok`` would read as a backup there),
        unless something marked it down."""
        p = self.parts
        names = [n for n in p.targets if n == p.primary.name or not p.stats.target(n).available] + (
            ["http"] if p.akosha is not None else []
        )
        breakers = {}
        if p.cloud is not None:
            breakers["cloud"] = p.cloud.breaker
        if p.akosha is not None:
            breakers["http"] = p.akosha.breaker
        out: dict[str, Any] = {}
        for name in names:
            entry = p.stats.target(name).as_dict()
            breaker = breakers.get(name)
            if breaker is not None:
                entry["circuit"] = breaker.state.value
            entry["primary"] = name == p.primary.name
            out[name] = entry
        return out

    async def queue_listing(self) -> dict[str, Any]:
        now = time.time()
        items = await self.parts.state.queue_items()
        return {
            "queue": [
                {
                    "path": i.path,
                    "event": i.event,
                    "age_seconds": round(now - i.first_seen, 3),
                    "attempts": i.attempts,
                    "state": i.state,
                    "next_attempt_in": round(max(0.0, i.next_attempt - now), 3),
                    "last_error": i.last_error,
                }
                for i in items
            ],
            "debouncing": self.parts.feed.debouncer.paths(),
            "place": self.place,  # as in status: a client of another place refuses it
            "system_id": self.settings.cloud_sync.system_id,
            "data_dir": str(self.settings.data_dir),
            "restart_pending": list(self.restart_pending),
        }

    async def line(self) -> str:
        """The sd_notify ``STATUS=`` line."""
        st = await self.status()
        last = st["last_upload"]
        line = f"{st['state']}: {st['pending']} pending"
        if last:
            line += f", last upload {last['upload_id']} via {last['method']}"
        if st["degraded_reason"]:
            line += f"; {st['degraded_reason']}"
        for warning in st["warnings"]:
            line += f"; {warning}"
        return line


def stopping_line(deadline: float) -> str:
    """The warning (and ``status --check`` problem) of a daemon that is stopping."""
    return (
        "akoshad is stopping (a stop signal was received): no new pass begins, the one in "
        f"hand finishes within {deadline:g}s; what is queued stays for its next start"
    )
