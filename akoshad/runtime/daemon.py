"""The daemon's lifecycle: startup (recover, reconcile, ready), main loop, shutdown.

Its parts are built once by :mod:`akoshad.runtime.wiring` (the lock and the state
database first) and entered on one ``AsyncExitStack``, torn down in reverse. Every task
is owned by the daemon and awaited. SIGTERM/SIGINT start a shutdown that finishes or
persists the work in hand within ``drain_deadline_seconds``; a second signal exits at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Future
from contextlib import AsyncExitStack, suppress
from typing import Any

from loguru import logger

from akoshad import __version__
from akoshad.config import Settings
from akoshad.errors import (
    PermanentError,
    TransientError,
)
from akoshad.fastpath import StatMap
from akoshad.names import EXIT_FAIL, EXIT_OK, MEMORY_DB
from akoshad.pipeline.drain import Drain
from akoshad.pipeline.feed import RESCAN_SECONDS, ChangeFeed
from akoshad.pipeline.report import PassReport
from akoshad.pipeline.routes import TARGET_START_TIMEOUT
from akoshad.pipeline.stats import Stats
from akoshad.pipeline.store_walk import WalkResult
from akoshad.pipeline.watch import WATCH_STOP_SECONDS, StoreWatcher
from akoshad.runtime.alerts import HealthAlerts
from akoshad.runtime.control import ControlServer
from akoshad.runtime.control_path import check_socket
from akoshad.runtime.deadline import finished_within, settled
from akoshad.runtime.health import data_dir_problem
from akoshad.runtime.leftovers import clean_leftovers
from akoshad.runtime.leftovers import describe as describe_leftovers
from akoshad.runtime.notify import STOP_MARGIN, Notifier, WatchdogPolicy
from akoshad.runtime.once import drain_within_deadline, nothing_selected, once_outcome
from akoshad.runtime.passes import Passes
from akoshad.runtime.reload import ConfigDrift, apply_reload, read_again
from akoshad.runtime.requests import handle_request
from akoshad.runtime.settle import InterruptedUploads
from akoshad.runtime.signals import stop_signals
from akoshad.runtime.state_watch import watch_state_dir
from akoshad.runtime.status import StatusView
from akoshad.runtime.target_identity import forget_if_last_upload_gone, seed_ledger
from akoshad.runtime.watchdog import Watchdog
from akoshad.runtime.webhook_wire import WEBHOOK_ONCE_SECONDS
from akoshad.runtime.wiring import Parts, wire
from akoshad.store.db import StateDB
from akoshad.targets import Target


class Daemon:
    """One akoshad: watches, queues, drains. Its parts are wired once, at startup."""

    # wired by ``startup`` (lock, state database, then everything that uses it)
    parts: Parts
    state: StateDB
    stats: Stats
    feed: ChangeFeed
    drain: Drain
    view: StatusView
    interrupted: InterruptedUploads  # a crash's uploads, settled at start or before a pass
    passes: Passes

    def __init__(
        self,
        settings: Settings,
        *,
        environ: Mapping[str, str] | None = None,
        reload: Callable[[], Settings] | None = None,
        walked: Future[tuple[WalkResult, StatMap | None]] | None = None,
        drift: ConfigDrift | None = None,
    ) -> None:
        """``walked``: the store's walk, begun already (``run --once``); ``drift``: tells
        a configuration file changed and not reloaded."""
        self._walked = walked
        self.settings = settings
        self._reload = reload
        self._drift = drift
        self.reload_refused: str | None = None  # the last reload's refusal, until one passes
        self.started = time.time()
        self.stop_event = asyncio.Event()
        self.wake = asyncio.Event()  # the drain has work
        self._wired = False
        self.watcher: StoreWatcher | None = None
        self._hup = asyncio.Event()
        self.notifier = Notifier(dict(environ or {}))
        cs = settings.cloud_sync
        stall = settings.watchdog_stall_seconds or cs.upload_timeout_seconds + 30.0
        self._stall = stall
        self.exit_code = EXIT_OK
        self.once = False  # ``run --once``: the first reconcile keeps the store's stats

    # ---- startup -------------------------------------------------------------------------
    async def startup(self, stack: AsyncExitStack) -> None:
        """Wire the parts (lock, state database, the rest), start targets, then read who
        owns the system id while a crash is recovered and the store reconciled (in that
        order); nothing is claimed here: the first upload claims an id no machine owns
        (``OwnerGate.refusal``, asked before it sends anything)."""
        await self.warn_exposed_identity()
        p = await wire(self.settings, stack, stop_event=self.stop_event, wake=self.wake)
        self.parts, self.state, self.stats = p, p.state, p.stats
        self.feed, self.drain = p.feed, p.drain
        # the first walk's stats: run --once's quick check, or the daemon's ``catch_up``
        # (its watch begins after that walk)
        self.feed.keep_stats = True
        walked: asyncio.Future[tuple[WalkResult, StatMap | None]] | None = None
        if self._walked is not None:  # begun before the daemon's modules were imported
            walked = asyncio.ensure_future(asyncio.wrap_future(self._walked))
        elif self.once:  # the store is walked while the targets start (one daemon-less pass)
            walked = asyncio.create_task(self.feed.walk(), name="walk")
        if walked is not None:
            stack.push_async_callback(settled, walked)
        self.interrupted = InterruptedUploads(p, self.stop_event)
        self.view = StatusView(
            self.settings,
            p,
            self.started,
            lambda: self.reload_refused,
            lambda: self.interrupted.unsettled,
            None if self._drift is None else self._drift.line,
            stopping=self.stop_event.is_set,
        )
        self.passes = Passes(
            p, self.interrupted, lambda: self.view.paused, self.stop_event, self.wake
        )
        self.watchdog = Watchdog(
            self.notifier, WatchdogPolicy(self._stall), p.stats, self.view, self.stop_event
        )
        self.alerts = HealthAlerts(p.events, self.view.problems, state=p.state)
        await self.alerts.restore()
        stack.push_async_callback(self.alerts.save)  # before the state closes
        self._wired = True
        stack.push_async_callback(p.webhooks.close)  # events emitted so far are kept
        left = await asyncio.to_thread(
            clean_leftovers, self.settings.state_dir, p.snapshotter.staging
        )
        if left:
            logger.info("removed what an interrupted run left: {}", describe_leftovers(left))
        stack.push_async_callback(asyncio.to_thread, p.snapshotter.reset_staging)
        for target in p.targets.values():
            if p.cloud is not None and target is p.cloud.target:
                await p.cloud.start(clean_up=False)  # only the owner cleans up (owners)
            else:
                await self._start_target(target)
            stack.push_async_callback(target.close)
        claim: asyncio.Task[str | None] | None = None
        stack.push_async_callback(p.owners.close)  # a check still running ends with us
        if p.stats.target(p.primary.name).available:  # a read: the first upload claims
            claim = p.owners.start_check(p.primary)
        await self._recover_and_reconcile(p, stack, claim, walked)
        if claim is not None:  # who owns the id is known before the start is done
            await asyncio.wait([claim])
        memories = p.cloud.memories_json if p.cloud is not None else None
        if memories is not None and await memories.at_start(self.settings.data_dir):
            self.wake.set()  # encrypt_memories changed: every memory goes up again
        if p.akosha_client is not None and (self.settings.data_dir / MEMORY_DB).is_file():
            # the store's memories not yet delivered go once per start (held back at the
            # last stop, or all of them when akosha_url points at another Akosha:
            # forget_changed_akosha); an Akosha that lost its store cannot be told
            await self.state.requeue(MEMORY_DB, time.time(), "memories: startup check")
            self.wake.set()

    async def _recover_and_reconcile(
        self,
        p: Parts,
        stack: AsyncExitStack,
        claim: asyncio.Task[str | None] | None,
        walked: asyncio.Future[tuple[WalkResult, StatMap | None]] | None = None,
    ) -> None:
        """Akosha's client, the ledger rebuilt if lost, a crash's uploads settled, then the
        store reconciled (with its walk ``walked``, when begun earlier), while the start's
        ownership check ``claim`` runs. Settling an interrupted upload writes to the target:
        then the gate is asked first (the owner does it; one that owns none claims it)."""
        if p.akosha_client is not None:
            await p.akosha_client.start()
            stack.push_async_callback(p.akosha_client.close)
        available = p.stats.target(p.primary.name).available
        sid = self.settings.cloud_sync.system_id
        gone = (  # the target emptied: a failure event too
            available
            and not p.rebuilt
            and await forget_if_last_upload_gone(p.state, p.primary, sid, p.events)
        )
        if p.rebuilt or gone:
            await seed_ledger(p.recovery, p.primary, available)
            seeded = (await self.state.last_success_by_target()).get(p.primary.name)
            p.stats.target(p.primary.name).last_success_at = seeded  # as wire() reads it
        await self.interrupted.at_start(claim)
        await self.feed.reconcile(walked)

    async def warn_exposed_identity(self) -> None:
        """One warning when others may read ``identity_file`` (not one per drill)."""
        line = await asyncio.to_thread(self.settings.encryption.exposed_identity)
        if line is not None:
            logger.warning(line)

    async def _start_target(self, target: Target) -> None:
        try:
            # a hanging endpoint must not hold up READY: the pipeline retries it later
            await asyncio.wait_for(target.start(clean_up=False), TARGET_START_TIMEOUT)
            self.stats.target(target.name).answered()
        except TimeoutError:
            exc = TransientError(f"no answer within {TARGET_START_TIMEOUT:.0f}s")
            self.stats.target(target.name).failed(str(exc))
            logger.error("target {} is unavailable: {}", target.name, exc)
        except (TransientError, PermanentError) as exc:
            # keep running: changes stay queued until the target answers
            self.stats.target(target.name).failed(str(exc))
            logger.error("target {} is unavailable: {}", target.name, exc)

    # ---- drain ---------------------------------------------------------------------------
    async def drain_until_empty(
        self,
        *,
        retry_now: bool = True,
        method: str | None = None,
        enable_fallback: bool | None = None,
    ) -> tuple[bool, list[PassReport]]:
        """Drain now (``sync --wait``, ``run --once``; :meth:`Passes.until_empty`), with
        what the watch holds of the changes made before (:meth:`StoreWatcher.handed_over`)."""
        if self.watcher is not None:
            await self.watcher.handed_over()
        return await self.passes.until_empty(
            retry_now=retry_now, method=method, enable_fallback=enable_fallback
        )

    # ---- reload ----------------------------------------------------------------------------
    async def reload(self) -> bool:
        """SIGHUP: load and validate the configuration again; apply what can change live.
        An invalid configuration is refused and the running one kept."""
        if self._reload is None:
            return False
        new = await read_again(self._reload)
        if self._drift is not None:
            self._drift.reloaded(None if isinstance(new, str) else new)
        if isinstance(new, str):
            self.reload_refused = f"{new} (refused at {time.strftime('%H:%M:%S')})"
            return False
        self.reload_refused = None
        await apply_reload(self, new)
        return True

    # ---- control ---------------------------------------------------------------------------
    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        """The control socket's handler: ``{"cmd": ...}`` -> result dict."""
        return await handle_request(self, request)

    # ---- run ------------------------------------------------------------------------------
    @property
    def store_stats(self) -> StatMap | None:
        """``run --once``: the lstat of every store entry as its reconcile walk read them,
        before anything was captured (None: there was no such walk)."""
        return self.feed.stats_seen if self._wired else None

    async def run_once(self) -> int:
        """``run --once``: reconcile, drain until the queue is empty, exit 0 only when every
        change landed. A SIGTERM/SIGINT starts no new pass; the pass in hand may finish
        within ``drain_deadline_seconds`` (then it is cancelled: its changes stay queued)."""
        self.once = True
        missing = await asyncio.to_thread(data_dir_problem, self.settings.data_dir, waits=False)
        if missing:
            logger.error("run --once: {}", missing)
            return EXIT_FAIL
        stopped_by: list[str] = []

        def on_first(signame: str) -> None:
            stopped_by.append(signame)
            logger.info(
                "{} received: stopping (the pass in hand may finish within {}s)",
                signame,
                self.settings.drain_deadline_seconds,
            )
            self.stop_event.set()

        def on_hup() -> None:  # a reload meant for the daemon (`pkill -HUP akoshad`)
            logger.warning("SIGHUP received: run --once reads its configuration once; ignored")

        with stop_signals(on_first, on_hup=on_hup):
            async with AsyncExitStack() as stack:
                await self.startup(stack)
                refused = self.parts.owners.refused.get(self.parts.primary.name)
                if refused is not None:
                    logger.error("run --once: nothing uploaded: {}", refused)
                    return EXIT_FAIL
                ok, reports = await drain_within_deadline(
                    self.drain_until_empty(),
                    self.stop_event,
                    self.settings.drain_deadline_seconds,
                )
                await self.parts.webhooks.deliver_queued(WEBHOOK_ONCE_SECONDS)
                feed = self.feed
                empty = nothing_selected(self.settings, feed.files_on_disk, feed.files_excluded)
                health = self.stats.target(self.parts.primary.name)
                down = None if health.available else health.last_error
                reads = self.parts.akosha is not None or self.parts.cloud is not None
                return await once_outcome(
                    self.state, ok, reports, stopped_by, empty, down, reads_memories=reads
                )

    async def run_forever(self) -> int:
        def on_first(signame: str) -> None:
            logger.info("{} received: shutting down", signame)
            self.stop()

        with stop_signals(on_first, on_hup=self._hup.set):
            # a socket taken by another daemon refuses the start before anything is
            # written: no state made, no claim on the system id (a stale one is replaced)
            await asyncio.to_thread(check_socket, self.settings.socket_path)
            async with AsyncExitStack() as stack:
                async with self.notifier.extending_start():  # past the unit's start timeout
                    await self.startup(stack)
                await self._serve(stack)
        return self.exit_code

    async def _serve(self, stack: AsyncExitStack) -> None:
        """The control socket, /metrics, the watcher, then every task until a stop."""
        p = self.parts
        # made before the socket answers: a sync --wait waits for what it holds
        watcher = self.watcher = StoreWatcher(
            self.settings.data_dir,
            self.feed.flt,
            self.feed.on_change,
            self.feed.reconcile,
            self.stop_event,
            on_watching=self.feed.catch_up,
        )
        control = ControlServer(self.settings.socket_path, self.handle)
        await control.start()
        stack.push_async_callback(control.close)
        metrics_retry = await self._serve_metrics(stack)
        self.notifier.ready()
        logger.info("akoshad {} watching {} -> {}", __version__, self.settings.data_dir, p.primary)
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(watcher.run(first_reset_done=True), name="watcher"),
                tg.create_task(self.feed.run(self.stop_event), name="debounce"),
                tg.create_task(self.passes.run(), name="drain"),
                tg.create_task(self._reload_loop(), name="reload"),
                tg.create_task(self.watchdog.run(), name="health"),
                tg.create_task(p.webhooks.run(), name="webhooks"),
                tg.create_task(p.health.run(self.stop_event, self.stop), name="watch"),
                tg.create_task(self.alerts.run(self.stop_event), name="alerts"),
                tg.create_task(p.drills.run(), name="drill"),
                tg.create_task(p.prunes.run(), name="prune"),
                tg.create_task(watch_state_dir(p, self.stop), name="state"),
                tg.create_task(control.keep_bound(self.stop_event), name="socket"),
                tg.create_task(
                    self.feed.rescan_every(RESCAN_SECONDS, self.stop_event), name="rescan"
                ),
            ]
            if metrics_retry is not None:
                tasks.append(tg.create_task(metrics_retry, name="metrics"))
            await self.stop_event.wait()
            await self._shutdown(tasks)

    def stop(self, exit_code: int = EXIT_OK) -> None:
        """Start a clean shutdown; ``run_forever`` then returns ``exit_code``."""
        self.exit_code = max(self.exit_code, exit_code)
        self.stop_event.set()
        self.wake.set()
        if self._wired:
            self.feed.stop()

    async def _serve_metrics(self, stack: AsyncExitStack) -> Coroutine[Any, Any, None] | None:
        """Serve /metrics on ``metrics_listen`` (if set) until shutdown. An address that
        cannot be bound is logged and shown in ``status`` (``metrics_error``); backing up
        goes on, and the coroutine returned binds it again every minute (None: nothing to
        retry)."""
        listen = self.settings.metrics_listen
        if not listen:
            return None
        from akoshad.runtime import metrics_server  # aiohttp.web: only here

        server = metrics_server.MetricsServer(self.parts.metrics, self.view.status, listen)

        def report(problem: str | None) -> None:
            self.view.metrics_error = problem

        return await metrics_server.start_metrics(server, listen, report, stack, self.stop_event)

    async def _reload_loop(self) -> None:
        while not self.stop_event.is_set():
            await self._hup.wait()
            self._hup.clear()
            self.notifier.reloading()
            try:
                await self.reload()
            finally:
                self.notifier.ready()

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        """Persist what was seen, let the pass in hand finish within the deadline."""
        deadline = self.settings.drain_deadline_seconds
        self.notifier.stopping(within=deadline + STOP_MARGIN)  # not the unit's, of install
        self.notifier.status("stopping: persisting the work in hand")
        watcher = [t for t in tasks if t.get_name() == "watcher"]  # its last events first
        await asyncio.wait(watcher, timeout=WATCH_STOP_SECONDS)
        await self.feed.flush()
        drain = next(t for t in tasks if t.get_name() == "drain")
        others = [t for t in tasks if t is not drain]
        for t in others:
            t.cancel()
        await finished_within(drain, deadline)
        with suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        logger.info("stopped; {} change(s) stay queued", await self.state.queue_depth())
        if self.feed.unrecorded is not None:  # the next start's walk finds them again
            logger.warning("stopped; {}: the next start finds them again", self.feed.unrecorded)
