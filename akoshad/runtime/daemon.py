"""The daemon's lifecycle: startup (recover, reconcile, ready), main loop, shutdown.

Resources are entered on one ``AsyncExitStack`` and torn down in reverse. Every task is
owned by the daemon and awaited. SIGTERM/SIGINT start a shutdown that finishes or
persists the work in hand within ``drain_deadline_seconds``; a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, suppress
from pathlib import Path
from typing import Any

from loguru import logger

from akoshad import __version__, fastpath
from akoshad.akosha.client import AkoshaClient
from akoshad.config import Settings
from akoshad.errors import (
    AkoshadError,
    AlreadyRunning,
    ConfigError,
    PermanentError,
    SnapshotError,
    TransientError,
)
from akoshad.events import EventBus
from akoshad.names import EXIT_FAIL, EXIT_OK, MEMORIES_NAME, MEMORY_DB
from akoshad.pipeline.capture.snapshot import Captured, Snapshotter
from akoshad.pipeline.chain import CircuitBreaker, plan_pass
from akoshad.pipeline.debounce import Debouncer, Kind
from akoshad.pipeline.memory_sync import MemorySync
from akoshad.pipeline.stats import Stats
from akoshad.pipeline.storefiles import PathFilter, is_ignored, walk_store
from akoshad.pipeline.upload import ExtraObject, MemoryStep, PassReport, Uploader
from akoshad.pipeline.watch import StoreWatcher, reconcile
from akoshad.runtime.control import ControlServer
from akoshad.runtime.drills import DrillScheduler
from akoshad.runtime.health import behind_after_seconds, data_dir_problem
from akoshad.runtime.health_watch import HealthWatch
from akoshad.runtime.logs import RateLimitedLog, setup_logging
from akoshad.runtime.metrics import Metrics, MetricsServer
from akoshad.runtime.notify import Notifier, WatchdogPolicy
from akoshad.runtime.safety import SafetyPolicy, SafetyTracker, assess
from akoshad.runtime.webhooks import WEBHOOK_ONCE_SECONDS, WebhookSink
from akoshad.store.db import STATE_FILE, StateDB, StateError
from akoshad.targets import Target, make_target
from akoshad.targets.base import ReadCheck

LOCK_NAME = "akoshad.lock"
ENQUEUE_RETRY_SECONDS = 2.0
TARGET_START_TIMEOUT = 10.0


class StateLock:
    """An exclusive ``flock`` on ``state_dir/akoshad.lock``: one daemon per state."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(
                f"another akoshad is already running on state {self.path.parent} "
                "(use `akoshad sync --wait` to ask it to drain)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


class Daemon:
    """One akoshad: watches, queues, drains. Build with validated settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        environ: Mapping[str, str] | None = None,
        reload: Callable[[], Settings] | None = None,
    ) -> None:
        self.settings = settings
        self.environ = dict(environ or {})
        self._reload = reload
        self.started = time.time()
        self.stats = Stats()
        self.stop_event = asyncio.Event()
        self.wake = asyncio.Event()
        self.paused = False
        self.flt = PathFilter.of(settings.include, settings.exclude)
        self.debouncer = Debouncer(settings.debounce_seconds, settings.max_delay_seconds)
        self._debounce_wake = asyncio.Event()
        self._pass_lock = asyncio.Lock()
        self.state = StateDB(settings.state_dir / STATE_FILE)
        self.snapshotter = Snapshotter(settings.data_dir, settings.state_dir / "staging")
        cs = settings.cloud_sync
        self.metrics = Metrics()
        self.safety = SafetyTracker(self.started)
        self.targets: dict[str, Target] = {
            "local": self.metrics.counted(make_target("local", settings))
        }
        if settings.bucket_configured:
            self.targets["cloud"] = self.metrics.counted(make_target("cloud", settings))
        primary = "cloud" if settings.bucket_configured and cs.force_method != "http" else "local"
        self.target: Target = self.targets[primary]
        self.metrics.targets_known(list(self.targets) + (["http"] if settings.akosha_url else []))
        self.cloud_breaker = CircuitBreaker(
            "cloud", reset_timeout=max(5.0, cs.retry_backoff_seconds * 4)
        )
        self.http_breaker = CircuitBreaker(
            "http", reset_timeout=max(5.0, cs.retry_backoff_seconds * 4)
        )
        # True once the cloud's read-only check passed; any cloud failure clears it, so
        # nothing is written to a bucket that was not just seen to exist
        self._cloud_checked = False
        self.akosha: AkoshaClient | None = None
        if settings.akosha_url:
            self.akosha = AkoshaClient(
                settings.akosha_url, timeout=float(min(cs.upload_timeout_seconds, 120))
            )
            self.akosha.on_request = self.metrics.request_hook("http")
        self.memory_sync = MemorySync(
            self.state,
            self.akosha,
            cs.system_id,
            self.http_breaker,
            redact_secrets=settings.redact_secrets,
            stats=self.stats,
        )
        self.uploader = Uploader(
            state=self.state,
            snapshotter=self.snapshotter,
            system_id=settings.cloud_sync.system_id,
            stats=self.stats,
            enable_compression=settings.cloud_sync.enable_compression,
            enable_deduplication=settings.cloud_sync.enable_deduplication,
            retry_backoff_seconds=settings.cloud_sync.retry_backoff_seconds,
        )
        self.last_report: PassReport | None = None
        self.ready = False
        self.reconciled = asyncio.Event()
        self.watcher: StoreWatcher | None = None
        self._last_memory_report: dict[str, Any] | None = None
        self._last_memory_error: str | None = None
        self._hup = asyncio.Event()
        self.on_reload: Callable[[Settings], None] | None = None
        self.notifier = Notifier(self.environ)
        stall = settings.watchdog_stall_seconds or cs.upload_timeout_seconds + 30.0
        self.watchdog_policy = WatchdogPolicy(stall)
        self._rate_log = RateLimitedLog(60.0)
        # Webhooks, metrics and the log hear upload/failure/degraded/recovered/drill/prune here.
        self.events = EventBus(cs.system_id)
        self.webhooks = WebhookSink(
            settings.webhooks, lambda: self.state, base_delay=cs.retry_backoff_seconds
        )
        self.events.subscribe(self.webhooks)
        fail_after = settings.degraded_fail_after_minutes * 60
        self.health = HealthWatch(self.stats, self.events, fail_after)
        self.exit_code = EXIT_OK
        self.drills = DrillScheduler(self, self._pass_lock)

    # ---- startup -------------------------------------------------------------------------
    async def startup(self, stack: AsyncExitStack) -> None:
        """Lock, open state, start targets, recover a crash, reconcile (in that order)."""
        lock = StateLock(self.settings.state_dir)
        lock.acquire()
        stack.callback(lock.release)
        rebuilt = await self._open_state()
        stack.push_async_callback(self.state.close)
        stack.push_async_callback(self.webhooks.close)  # events emitted so far are kept
        await asyncio.to_thread(self.snapshotter.reset_staging)
        stack.push_async_callback(asyncio.to_thread, self.snapshotter.reset_staging)
        for target in self.targets.values():
            await self._start_target(target)
            stack.push_async_callback(target.close)
        if self.akosha is not None:
            await self.akosha.start()
            stack.push_async_callback(self.akosha.close)
        if rebuilt:
            n = await self.uploader.rebuild_ledger(self.target)
            logger.warning("ledger rebuilt from {}: {} file(s) known", self.target.name, n)
        await self.uploader.recover(self.targets)
        await self.reconcile()
        if self.akosha is not None and (self.settings.data_dir / MEMORY_DB).is_file():
            # what Akosha has is checked against the store once per start (it may have
            # been restarted and lost its in-memory store, or akosha_url is new)
            await self.state.requeue(MEMORY_DB, time.time(), "memories: startup check")
            self.wake.set()

    async def _open_state(self) -> bool:
        """Open the state database; a corrupt one is kept aside and started afresh.
        Returns True when the ledger must be rebuilt."""
        try:
            await self.state.open()
            return False
        except StateError as exc:
            if not exc.corrupt:
                raise
            await self.state.close()
            aside = self.state.set_aside()
            logger.error("{}; kept aside as {} and starting a new one", exc, aside.name)
        self.state = StateDB(self.state.path)
        self.uploader.state = self.state
        await self.state.open()
        return True

    async def _start_target(self, target: Target) -> None:
        try:
            # a hanging endpoint must not hold up READY: the pipeline retries it later
            await asyncio.wait_for(target.start(), TARGET_START_TIMEOUT)
            self.stats.target(target.name)
            if target.name == "cloud":
                self._cloud_checked = True
        except TimeoutError:
            exc = TransientError(f"no answer within {TARGET_START_TIMEOUT:.0f}s")
            self.stats.target(target.name).failed(str(exc))
            if target.name == "cloud":
                self.cloud_breaker.record_failure(exc)
            logger.error("target {} is unavailable: {}", target.name, exc)
        except (TransientError, PermanentError) as exc:
            # keep running: changes stay queued until the target answers
            self.stats.target(target.name).failed(str(exc))
            if target.name == "cloud":
                self.cloud_breaker.record_failure(exc, permanent=isinstance(exc, PermanentError))
            logger.error("target {} is unavailable: {}", target.name, exc)

    async def reconcile(self) -> int:
        """Queue what changed while akoshad was not looking. Returns the number queued."""
        if not self.settings.data_dir.is_dir():
            self.reconciled.set()
            return 0
        ledger = await self.state.ledger(self.target.name)
        result = await asyncio.to_thread(reconcile, self.settings.data_dir, self.flt, ledger)
        queued = await self.state.enqueue(result.changes)
        if result.refused:
            for path, reason in result.refused.items():
                logger.warning("not syncing {}: {}", path, reason)
            await self.state.transaction(lambda c: self.state.record_skipped(c, result.refused))
        logger.info(
            "reconciled {} store file(s) with the ledger: {} change(s) queued",
            result.on_disk,
            queued,
        )
        self.reconciled.set()
        if queued:
            self.wake.set()
        return queued

    # ---- changes in --------------------------------------------------------------------------
    def on_change(self, changes: Iterable[tuple[str, Kind]]) -> None:
        now = time.monotonic()
        for path, kind in changes:
            self.debouncer.touch(path, kind, now)
        self._debounce_wake.set()

    async def _expand(self, released: list[tuple[str, Kind]]) -> list[tuple[str, str]]:
        """Directories stand for the files below them (and the ledger's files there)."""
        out: dict[str, str] = {}
        ledger_groups: set[str] | None = None
        for path, kind in released:
            full = self.settings.data_dir / path
            is_dir = await asyncio.to_thread(full.is_dir)
            if not is_dir and kind != "deleted":
                out[path] = kind
                continue
            if ledger_groups is None:
                ledger_groups = {
                    e.group_path for e in (await self.state.ledger(self.target.name)).values()
                }
            below = [g for g in ledger_groups if g.startswith(path + "/")]
            for g in below:
                out.setdefault(g, "modified")
            if is_dir:
                walk = await asyncio.to_thread(walk_store, full, PathFilter())
                for rel in walk.files:
                    group = f"{path}/{rel}"
                    if not is_ignored(group) and self.flt.allows(group):
                        out[group] = "modified"
            elif not below:
                out[path] = kind
        return list(out.items())

    async def _debounce_loop(self) -> None:
        """Move due paths from the debouncer into the durable queue."""
        while not self.stop_event.is_set():
            deadline = self.debouncer.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._debounce_wake.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._debounce_wake.wait(), timeout)
            due = self.debouncer.due(time.monotonic())
            if due:
                await self._enqueue(due)

    async def _enqueue(self, released: list[tuple[str, Kind]]) -> bool:
        """Persist released paths; on failure (disk full, ...) keep them for a retry."""
        try:
            items = await self._expand(released)
            if items:
                await self.state.enqueue(items)
        except (sqlite3.Error, OSError) as exc:
            logger.error(
                "cannot record {} change(s) on the queue: {}; retrying", len(released), exc
            )
            retry_at = time.monotonic() - self.debouncer.quiet + ENQUEUE_RETRY_SECONDS
            for path, kind in released:
                self.debouncer.touch(path, kind, retry_at)
            return False
        if items:
            self.stats.progressed()
            self.wake.set()
        return True

    async def flush_debouncer(self) -> None:
        """Persist everything the debouncer holds (shutdown, ``sync``)."""
        released = self.debouncer.flush()
        if released:
            await self._enqueue(released)

    # ---- draining --------------------------------------------------------------------------
    async def drain_pass(
        self, method: str | None = None, enable_fallback: bool | None = None
    ) -> PassReport | None:
        """One pass through the chain (``method``/``enable_fallback``: a one-off sync's)."""
        async with self._pass_lock:
            return await self._drain_pass_locked(method, enable_fallback)

    async def _drain_pass_locked(
        self, method: str | None, enable_fallback: bool | None
    ) -> PassReport | None:
        cs = self.settings.cloud_sync
        chosen = method or cs.force_method
        plan = plan_pass(
            method=chosen,  # type: ignore[arg-type]
            enable_fallback=cs.enable_fallback if enable_fallback is None else enable_fallback,
            bucket=self.settings.bucket_configured,
            akosha=self.akosha is not None,
            cloud=self.cloud_breaker.state,
            http=self.http_breaker.state,
        )
        files: str = plan.files
        if files == "local" and self.target.name == "cloud":
            files = "wait"  # a one-off http sync: the files stay queued for the cloud
        if files == "cloud" and not await self._cloud_allowed():
            files = "wait"
        target = self.targets.get(files)
        retry_at = time.time() + max(1.0, self.cloud_breaker.retry_in())
        memory_step = None if plan.memories == "none" else self._memory_step(plan.memories)
        extras = self._memories_json if target is not None and target.name == "cloud" else None
        self.stats.syncing = True
        self._last_memory_report = None
        self._last_memory_error = None
        began = time.monotonic()
        try:
            report = await self.uploader.drain_once(
                target, memory_step=memory_step, files_retry_at=retry_at, extras_hook=extras
            )
        finally:
            self.stats.syncing = False
        if report is None:
            return None
        report.memories = self._last_memory_report
        report.memory_error = self._last_memory_error
        if target is not None and target.name == "cloud":
            if report.error:
                self._cloud_checked = False
                self.cloud_breaker.record_failure(report.error, permanent=report.permanent)
            elif report.upload_id:
                self.cloud_breaker.record_success()
        self.last_report = report
        if report.upload_id and not report.error:
            self.events.emit(
                "upload",
                upload_id=report.upload_id,
                method=report.target,
                files=len(report.files_uploaded),
                bytes_sent=report.bytes_sent,
            )
        self.metrics.pass_done(report, time.monotonic() - began)
        if report.error and not report.waiting:
            logger.error("upload to {} failed: {}", report.target, report.error)
            self.events.emit("failure", error=report.error, failed=report.claimed)
        self.health.check()
        for path, reason in report.skipped.items():
            logger.warning("skipped {}: {}", path, reason)
        return report

    async def _cloud_allowed(self) -> bool:
        """May this pass write to the cloud? Only when its breaker lets a call through and a
        read-only check of the bucket has passed since the target started or last failed
        (so the breaker's half-open probe is that check, never a write). Checks only when
        the pass has something to claim; a change queued meanwhile waits for the next pass."""
        target = self.targets["cloud"]
        if self._cloud_checked or not isinstance(target, ReadCheck):
            return self.cloud_breaker.allow()
        due = await self.state.next_due()
        if due is None or due > time.time() or not self.cloud_breaker.allow():
            return False
        try:
            await asyncio.wait_for(target.check(), TARGET_START_TIMEOUT)
        except (TimeoutError, TransientError, PermanentError) as exc:
            if isinstance(exc, TimeoutError):
                exc = TransientError(f"no answer within {TARGET_START_TIMEOUT:.0f}s")
            self.stats.target("cloud").failed(str(exc))
            self.cloud_breaker.record_failure(exc, permanent=isinstance(exc, PermanentError))
            self._rate_log.error("cloud-check", "target cloud is unavailable: {}", exc)
            return False
        self._rate_log.ok("cloud-check", "target cloud answers again")
        self._cloud_checked = True
        return True

    def _memory_step(self, route: str) -> MemoryStep:
        async def step(snapshot_db: Path) -> float | None:
            backoff = self.settings.cloud_sync.retry_backoff_seconds
            if route == "wait":
                self._last_memory_error = "waiting for Akosha (circuit open)"
                return time.time() + max(backoff, self.http_breaker.retry_in())
            try:
                report = await self.memory_sync.deliver(snapshot_db)
            except TransientError as exc:
                self._last_memory_error = str(exc)
                self.stats.target("http").failed(str(exc))
                logger.warning("memories not delivered to Akosha: {}", exc)
                return time.time() + max(backoff, self.http_breaker.retry_in())
            except PermanentError as exc:
                self._last_memory_error = str(exc)
                self.stats.target("http").failed(str(exc))
                logger.error("memories not delivered to Akosha: {}", exc)
                return time.time() + max(300.0, self.http_breaker.retry_in())
            except SnapshotError as exc:
                logger.warning("no memories read from {}: {}", MEMORY_DB, exc)
                return None
            self.stats.target("http").ok()
            self._last_memory_report = report.as_dict()
            if report.delivered:
                self.stats.progressed()
                logger.info("delivered {} memories to Akosha", report.delivered)
            return None

        return step

    async def _memories_json(
        self, captures: Sequence[Captured], upload_id: str
    ) -> list[ExtraObject]:
        memory_db = next((c for c in captures if c.group == MEMORY_DB), None)
        if memory_db is None:
            return []
        try:
            found = await self.memory_sync.conversations_for_cloud(
                memory_db.files[0].staged, upload_id
            )
        except SnapshotError as exc:
            logger.warning("no memories.json: {}", exc)
            return []
        if found is None:
            return []
        data, count, _ids = found
        return [
            ExtraObject(
                name=MEMORIES_NAME,
                data=data,
                content_type="application/json",
                conversation_count=count,
                on_committed=self.memory_sync.commit_cloud,
                on_failed=self.memory_sync.forget_cloud,
            )
        ]

    async def drain_until_empty(
        self,
        *,
        retry_now: bool = True,
        method: str | None = None,
        enable_fallback: bool | None = None,
    ) -> tuple[bool, list[PassReport]]:
        """Drain now (``sync --wait``, ``run --once``): (every pass ok, reports).

        Holds the pass lock throughout, so the background loop cannot take these changes
        away from the caller that asked for them."""
        async with self._pass_lock:
            await self.flush_debouncer()
            if retry_now:
                await self.state.transaction(
                    lambda c: c.execute("UPDATE queue SET next_attempt = 0 WHERE state = 'pending'")
                )
            reports: list[PassReport] = []
            while True:
                report = await self._drain_pass_locked(method, enable_fallback)
                if report is None:
                    break
                reports.append(report)
                if report.error or report.retrying or report.memory_error:
                    break
        return all(r.ok for r in reports), reports

    async def _drain_loop(self) -> None:
        failures = 0
        while not self.stop_event.is_set():
            if not self.paused:
                try:
                    report = await self.drain_pass()
                    failures = 0
                except (sqlite3.Error, OSError, AkoshadError) as exc:
                    # the daemon survives: disk full, state trouble, a target gone wrong
                    failures += 1
                    self.stats.counters.failures += 1
                    logger.error("drain pass failed: {}", exc)
                    self.events.emit("failure", error=str(exc), failed=0)
                    await self._sleep_or_stop(min(60.0, 2.0**failures))
                    continue
                if report is not None:
                    continue  # more may be due right away
            due = None if self.paused else await self.state.next_due()
            timeout = None if due is None else max(0.05, due - time.time())
            self.wake.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)

    async def _sleep_or_stop(self, seconds: float) -> None:
        with suppress(TimeoutError):
            await asyncio.wait_for(self.stop_event.wait(), seconds)

    # ---- reload ----------------------------------------------------------------------------
    RESTART_KEYS = (
        "data_dir",
        "state_dir",
        "socket_path",
        "local_target_dir",
        "cloud_sync",
        "webhooks",
        "metrics_listen",
    )

    async def reload(self) -> bool:
        """SIGHUP: load and validate the configuration again; apply what can change live.
        An invalid configuration is refused and the running one kept."""
        if self._reload is None:
            return False
        try:
            new = await asyncio.to_thread(self._reload)
        except ConfigError as exc:
            logger.error("reload refused, keeping the running configuration: {}", exc)
            return False
        old = self.settings
        for key in self.RESTART_KEYS:
            if getattr(new, key) != getattr(old, key):
                logger.warning("{} changed: it takes effect after a restart", key)
        self.settings = new.model_copy(update={key: getattr(old, key) for key in self.RESTART_KEYS})
        self.debouncer.quiet = new.debounce_seconds
        self.debouncer.max_delay = new.max_delay_seconds
        self.flt = PathFilter.of(new.include, new.exclude)
        if self.watcher is not None:
            self.watcher.set_filter(self.flt)
        if self.on_reload is not None:
            self.on_reload(self.settings)
        logger.info("configuration reloaded")
        if (new.include, new.exclude) != (old.include, old.exclude):
            await self.reconcile()
        return True

    # ---- status / control -------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        depth = await self.state.queue_depth()
        last = await self.state.last_upload()
        skipped = await self.state.skipped()
        degraded = self.stats.degraded_reason()
        missing = await asyncio.to_thread(data_dir_problem, self.settings.data_dir)
        if self.paused:
            state = "paused"
        elif degraded:
            state = "degraded"
        elif self.stats.syncing or self.stats.in_flight:
            state = "syncing"
        else:
            state = "idle"
        result: dict[str, Any] = {
            "state": state,
            "pid": os.getpid(),
            "version": __version__,
            "uptime_seconds": round(time.time() - self.started, 3),
            "data_dir": str(self.settings.data_dir),
            "pending": depth + len(self.debouncer),
            "in_flight": self.stats.in_flight,
            "paused": self.paused,
            "degraded_reason": degraded,
            "last_upload": None
            if last is None
            else {
                "upload_id": last.upload_id,
                "method": last.method,
                "finished_at": last.finished_at,
                "files": last.files,
                "bytes_sent": last.bytes_sent,
            },
            "counters": self.stats.counters_dict(),
            "targets": self._targets_status(),
            "memories": await self.memory_sync.status() if self.akosha is not None else None,
            "skipped": skipped,
            "system_id": self.settings.cloud_sync.system_id,
            "webhooks": await self.webhooks.status(),
            "last_drill": await self.drills.last(),
            "warnings": [missing] if missing else [],
            "waiting_for_data_dir": missing is not None,
            "oldest_pending_age_seconds": await self._oldest_pending_age(),
            "behind_after_seconds": behind_after_seconds(self.settings.max_delay_seconds),
        }
        result["safety"] = self._safety(result)
        return result

    def _safety(self, status: dict[str, Any]) -> dict[str, Any]:
        """Is everything backed up and restorable? (see akoshad/safety.py)"""
        s = self.settings
        policy = SafetyPolicy(
            s.debounce_seconds,
            # min_upload_interval_seconds: counted once the configuration has it
            float(getattr(s, "min_upload_interval_seconds", 0.0)),
            s.drill_interval_hours,
        )
        found = assess(
            status,
            policy,
            now=time.time(),
            started=self.started,
            last_pass_seconds=self.metrics.last_pass_seconds,
        )
        return self.safety.update(found)

    async def _oldest_pending_age(self) -> float | None:
        """Seconds since the oldest change not yet uploaded was seen (in the debouncer or
        the queue); None when nothing is pending."""
        ages: list[float] = []
        first = self.debouncer.oldest()
        if first is not None:
            ages.append(time.monotonic() - first)
        queued = await self.state.oldest_queued()
        if queued is not None:
            ages.append(time.time() - queued)
        return round(max(0.0, *ages), 3) if ages else None

    def _targets_status(self) -> dict[str, Any]:
        names = list(self.targets) + (["http"] if self.akosha is not None else [])
        out: dict[str, Any] = {}
        for name in names:
            entry = self.stats.target(name).as_dict()
            breaker = {"cloud": self.cloud_breaker, "http": self.http_breaker}.get(name)
            if breaker is not None:
                entry["circuit"] = breaker.state.value
            entry["primary"] = name == self.target.name
            out[name] = entry
        return out

    async def queue_listing(self) -> dict[str, Any]:
        now = time.time()
        items = await self.state.queue_items()
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
            "debouncing": self.debouncer.paths(),
        }

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """The control socket's handler: ``{"cmd": ...}`` -> result dict."""
        cmd = request.get("cmd")
        if cmd == "status":
            return await self.status()
        if cmd == "queue":
            return await self.queue_listing()
        if cmd == "pause":
            self.paused = True
            logger.info("uploads paused")
            return {"paused": True}
        if cmd == "resume":
            self.paused = False
            self.wake.set()
            logger.info("uploads resumed")
            return {"paused": False}
        if cmd == "sync":
            method = request.get("method")
            if method not in (None, "auto", "cloud", "http"):
                raise ValueError("method must be auto, cloud or http")
            fallback = request.get("enable_fallback")
            if fallback is not None and not isinstance(fallback, bool):
                raise ValueError("enable_fallback must be true or false")
            if request.get("wait"):
                ok, reports = await self.drain_until_empty(method=method, enable_fallback=fallback)
                return {
                    "ok_drain": ok,
                    "passes": [r.as_dict() for r in reports],
                    "pending": await self.state.queue_depth(),
                }
            await self.flush_debouncer()
            self.wake.set()
            return {"ok_drain": True, "started": True}
        raise ValueError(f"unknown command {cmd!r}")

    # ---- run ------------------------------------------------------------------------------
    async def run_once(self) -> int:
        missing = await asyncio.to_thread(data_dir_problem, self.settings.data_dir)
        if missing:
            logger.error("run --once: {}", missing)
            return EXIT_FAIL
        async with AsyncExitStack() as stack:
            await self.startup(stack)
            ok, reports = await self.drain_until_empty()
            await self.webhooks.deliver_queued(WEBHOOK_ONCE_SECONDS)
            skipped = await self.state.skipped()
            uploads = [r.upload_id for r in reports if r.upload_id and not r.error]
            failed = [r for r in reports if r.error]
            if uploads:
                logger.info("run --once: uploaded {}", ", ".join(uploads))
            if failed:
                logger.error(
                    "run --once: {} change(s) stay queued ({})",
                    await self.state.queue_depth(),
                    failed[-1].error,
                )
            elif not uploads:
                logger.info("run --once: nothing changed, no upload")
            return EXIT_OK if ok and not skipped else EXIT_FAIL

    async def run_forever(self) -> int:
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal(signame: str) -> None:
            nonlocal signals
            signals += 1
            if signals > 1:
                logger.warning("second {}: exiting now", signame)
                os._exit(EXIT_FAIL)
            logger.info("{} received: shutting down", signame)
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self._hup.set)
        try:
            async with AsyncExitStack() as stack:
                await self.startup(stack)
                control = ControlServer(self.settings.socket_path, self.handle)
                await control.start()
                stack.push_async_callback(control.close)
                await self._serve_metrics(stack)
                watcher = self.watcher = StoreWatcher(
                    self.settings.data_dir,
                    self.flt,
                    self.on_change,
                    self.reconcile,
                    self.stop_event,
                )
                self.ready = True
                self.notifier.ready()
                logger.info(
                    "akoshad {} watching {} -> {}",
                    __version__,
                    self.settings.data_dir,
                    self.target,
                )
                async with asyncio.TaskGroup() as tg:
                    tasks = [
                        tg.create_task(watcher.run(first_reset_done=True), name="watcher"),
                        tg.create_task(self._debounce_loop(), name="debounce"),
                        tg.create_task(self._drain_loop(), name="drain"),
                        tg.create_task(self._reload_loop(), name="reload"),
                        tg.create_task(self._health_loop(), name="health"),
                        tg.create_task(self.webhooks.run(), name="webhooks"),
                        tg.create_task(self.health.run(self.stop_event, self.stop), name="watch"),
                        tg.create_task(self.drills.run(), name="drill"),
                    ]
                    await self.stop_event.wait()
                    await self._shutdown(tasks)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return self.exit_code

    def stop(self, exit_code: int = EXIT_OK) -> None:
        """Start a clean shutdown; ``run_forever`` then returns ``exit_code``."""
        self.exit_code = max(self.exit_code, exit_code)
        self.stop_event.set()
        self.wake.set()
        self._debounce_wake.set()

    async def _serve_metrics(self, stack: AsyncExitStack) -> None:
        """Serve /metrics on ``metrics_listen`` (if set) until shutdown. An address that
        cannot be bound is logged; backing up goes on without metrics."""
        if not self.settings.metrics_listen:
            return
        server = MetricsServer(self.metrics, self.status, self.settings.metrics_listen)
        try:
            await server.start()
        except OSError as exc:
            logger.error("metrics_listen {}: cannot serve: {}", self.settings.metrics_listen, exc)
            return
        stack.push_async_callback(server.close)

    async def _reload_loop(self) -> None:
        while not self.stop_event.is_set():
            await self._hup.wait()
            self._hup.clear()
            self.notifier.reloading()
            try:
                await self.reload()
            finally:
                self.notifier.ready()

    async def _health_loop(self) -> None:
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
            self.notifier.status(await self._status_line())
            await self._sleep_or_stop(tick)

    async def _status_line(self) -> str:
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

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        """Persist what was seen, let the pass in hand finish within the deadline."""
        self.notifier.stopping()
        self.notifier.status("stopping: persisting the work in hand")
        deadline = self.settings.drain_deadline_seconds
        await self.flush_debouncer()
        drain = next(t for t in tasks if t.get_name() == "drain")
        others = [t for t in tasks if t is not drain]
        for t in others:
            t.cancel()
        try:
            await asyncio.wait_for(asyncio.shield(drain), deadline)
        except TimeoutError:
            logger.warning("drain deadline ({}s) reached: the rest stays queued", deadline)
            drain.cancel()
        with suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        logger.info("stopped; {} change(s) stay queued", await self.state.queue_depth())


def run_daemon(
    settings: Settings,
    *,
    once: bool = False,
    config_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """Entry point of ``akoshad run`` (``argv`` keys the quick no-change check)."""
    env = dict(environ or {})
    _bounded_heap()
    setup_logging(settings, environ=env)
    for note in settings.notes:
        logger.warning("configuration: {}", note)

    def reload() -> Settings:
        from akoshad.config import load_settings

        return load_settings(config_path, environ=env)

    daemon = Daemon(settings, environ=env, reload=reload)
    try:
        if once:
            before = fastpath.stat_map(settings.data_dir)
            code = asyncio.run(daemon.run_once())
            if code == EXIT_OK and argv is not None:
                fastpath.record_unchanged(argv, env, settings.data_dir, settings.state_dir, before)
            return code
        return asyncio.run(daemon.run_forever())
    except (AlreadyRunning, ConfigError, StateError) as exc:
        print(f"akoshad: {exc}", file=sys.stderr)
        return exc.exit_code


def _bounded_heap() -> None:
    """Large buffers (upload parts) go straight to mmap and back to the system when freed,
    so the resident size stays flat instead of keeping freed parts in malloc arenas."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 1024 * 1024)  # M_MMAP_THRESHOLD: fixed at 1 MiB
            libc.mallopt(-8, 2)  # M_ARENA_MAX: two arenas for our few threads
        except (OSError, AttributeError):
            pass
