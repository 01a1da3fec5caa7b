"""One drain pass: claim -> capture -> routes -> upload.

:meth:`Drain.run_pass` plans the pass (:func:`~akoshad.pipeline.chain.plan_pass`: which
route the files take, whether memories go over HTTP), claims what is due, and holds the
staging directory for the whole pass: every claimed path is captured into it, the private
copy of ``reflection.duckdb`` goes to the Akosha route, the captures go to the upload, and
the staging directory is emptied when the pass ends, whatever happened.

Each route records its own outcome in its own breaker. What the runtime wants to know of a
pass (events, metrics, health) it learns from the :class:`PassObserver` it gave at wiring.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from akoshad.heap import TRIM_THRESHOLD, trim
from akoshad.names import MEMORY_DB
from akoshad.pipeline.capture.files import MEMORY_MAX_FILE
from akoshad.pipeline.capture.snapshot import Captured, CaptureResult, Snapshotter
from akoshad.pipeline.chain import BreakerState, MemoryRoute, Method, plan_pass
from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.pacing import UploadPacer
from akoshad.pipeline.report import PassReport, drained_ok, moved_only
from akoshad.pipeline.routes import (
    WAITING_FOR_CLOUD,
    AkoshaRoute,
    CloudRoute,
    MemoriesJson,
    memory_capture,
    waiting_error,
)
from akoshad.pipeline.stats import Stats
from akoshad.pipeline.upload import Uploader
from akoshad.pipeline.upload_failures import retry_delay
from akoshad.store.db import LedgerEntry, QueueItem, StateDB
from akoshad.store.ledger import KV_COMPARE_ALL
from akoshad.targets.base import Target

CAPTURE_CONCURRENCY = 2
CAPTURE_RUN = 64  # paths captured per thread hop at most
MANY_PATHS = 2 * CAPTURE_RUN  # a pass of more paths is captured in a lane for small files


@dataclass(frozen=True)
class _Owner:
    """The owner gate of one pass's target (``send_gate.SendGate``)."""

    owners: OwnerGate
    target: Target

    async def refusal(self) -> str | None:
        return await self.owners.refusal(self.target)

    def retry_in(self) -> float:
        return self.owners.retry_in(self.target.name)

    def unreadable(self) -> bool:
        return self.owners.unreadable(self.target.name)


class PassObserver(Protocol):
    """Told of every pass that claimed something."""

    def pass_done(self, report: PassReport, seconds: float) -> None: ...


class Drain:
    """Drain passes over the routes of one configuration."""

    def __init__(
        self,
        *,
        state: StateDB,
        snapshotter: Snapshotter,
        uploader: Uploader,
        stats: Stats,
        local: Target,
        cloud: CloudRoute | None = None,
        akosha: AkoshaRoute | None = None,
        force_method: str = "auto",
        enable_fallback: bool = True,
        retry_backoff: float = 2.0,
        observer: PassObserver | None = None,
        clock: Callable[[], float] = time.time,
        owners: OwnerGate | None = None,
        pacer: UploadPacer | None = None,
    ) -> None:
        self.state = state
        self.snap = snapshotter
        self.uploader = uploader
        self.stats = stats
        self.local = local
        self.cloud = cloud
        self.akosha = akosha
        self.force_method = force_method
        self.enable_fallback = enable_fallback
        self.retry_backoff = retry_backoff
        self.observer = observer
        self.clock = clock
        self.owners = owners  # one writer per system id (None: not checked)
        self.pacer = pacer or UploadPacer(0.0)  # the daemon's loop asks it before a pass
        use_cloud = cloud is not None and force_method != "http"
        self.primary: Target = cloud.target if cloud is not None and use_cloud else local
        self.last_report: PassReport | None = None
        # the store compared with the ledger (the feed's reconcile), asked before a pass
        # when the state forgot the target since the last one (``KV_COMPARE_ALL``)
        self.compare_all: Callable[[], Awaitable[Any]] | None = None
        # asked before each pass with work due: does the target still hold the last
        # upload made there? (when not, the state forgets it: ``KV_COMPARE_ALL``)
        self.check_place: Callable[[Target], Awaitable[None]] | None = None

    # ---- one planned pass ----------------------------------------------------------------
    async def run_pass(
        self, method: str | None = None, enable_fallback: bool | None = None
    ) -> PassReport | None:
        """One pass through the chain (``method``/``enable_fallback``: a one-off sync's).
        None when nothing was due."""
        plan = plan_pass(
            method=cast(Method, method or self.force_method),
            enable_fallback=self.enable_fallback if enable_fallback is None else enable_fallback,
            bucket=self.cloud is not None,
            akosha=self.akosha is not None,
            cloud=self.cloud.breaker.state if self.cloud else BreakerState.CLOSED,
            http=self.akosha.breaker.state if self.akosha else BreakerState.CLOSED,
        )
        target = await self._files_target(plan.files)
        held = target is None and plan.files == "local"  # one-off http: files wait, no fault
        settling = False  # the start's claim settles: capture now, ask before sending
        if target is not None and self.owners is not None and await self._claims_now(target):
            settling = await self.owners.until_settling(target)
            refused = None if settling else await self.owners.refusal(target)
            if refused is not None:
                self._check_unanswered(target, refused)
                return await self._refused(target, refused)
        cloud = self.cloud
        on_cloud = cloud is not None and target is cloud.target
        retry_at = cloud.retry_at() if cloud is not None else self.clock() + 1.0
        self.stats.syncing = True
        began = time.monotonic()
        paced_from = self.pacer.clock()
        try:
            report = await self.drain_once(
                target,
                now=self.clock(),
                memories=plan.memories,
                files_retry_at=retry_at,
                memories_json=cloud.memories_json if cloud is not None and on_cloud else None,
                ask_owner=settling,
                files_held=held,
            )
        finally:
            self.stats.syncing = False
        uploaded = report is not None and bool(report.upload_id) and not report.error
        self.pacer.pass_done(paced_from, uploaded=uploaded)
        if report is None:
            return None
        if cloud is not None and on_cloud and not report.waiting and not report.source_changed:
            cloud.record(report.error, permanent=report.permanent, uploaded=bool(report.upload_id))
        # the pass is over: its captures (a few hundred bytes a file) are not kept beside
        # the report, which the daemon keeps until the next pass and a drain until its end
        report.captures.clear()
        self.last_report = report
        if self.observer is not None:
            self.observer.pass_done(report, time.monotonic() - began)
        return report

    async def _claims_now(self, target: Target) -> bool:
        """Whether the pass asks the owner gate before it begins: not while no machine
        owns the id and nothing is due (the first upload claims it; what a pass sends
        anyway asks the gate first, ``FirstSend``)."""
        assert self.owners is not None
        if not await self.owners.unowned(target):
            return True
        due = await self.state.next_due()
        return due is not None and due <= self.clock()

    async def _look_at_place(self, target: Target | None, now: float | None) -> None:
        """Before a pass with work due: an emptied ``target`` forgotten (one HEAD)."""
        due = await self.state.next_due() if target and self.check_place else None
        if target and self.check_place and due is not None and due <= (now or time.time()):
            await self.check_place(target)

    async def _forgotten(self, target: Target) -> bool:
        """The state forgot ``target`` since the store was last compared with the ledger:
        no pass may be planned from the queue alone."""
        return bool(await self.state.get_kv(KV_COMPARE_ALL.format(target=target.name)))

    async def _refused(self, target: Target, error: str) -> PassReport | None:
        """This machine may not write to ``target``: nothing is captured or sent, what is
        due goes back to the queue until the next ownership check."""
        assert self.owners is not None
        items = await self.state.claim(self.clock())
        if not items:
            return None
        retry_at = self.clock() + self.owners.retry_in(target.name)
        await self.state.release(items, retry_at=retry_at, error=error)
        failed = self._check_failed(target)
        report = PassReport(target=target.name, claimed=len(items), error=error, waiting=not failed)
        self.last_report = report
        if self.observer is not None:
            self.observer.pass_done(report, 0.0)
        return report

    async def _owner_refused(
        self, target: Target, items: Sequence[QueueItem], report: PassReport
    ) -> bool:
        """After a capture made while the start's claim settled: True (the rows back on
        the queue, ``report`` says why) when this machine may not write to ``target``."""
        assert self.owners is not None
        refused = await self.owners.refusal(target)
        if refused is None:
            return False
        retry_at = self.clock() + self.owners.retry_in(target.name)
        await self.state.release(items, retry_at=retry_at, error=refused)
        report.error, report.waiting = refused, not self._check_failed(target)
        return True

    def _check_unanswered(self, target: Target, error: str) -> None:
        """An owner check the bucket did not answer is a failure of the cloud's breaker,
        as an upload's would be: an outage first met there opens the circuit (one probe
        per interval, the read-only check first), not a check every few seconds."""
        assert self.owners is not None
        cloud = self.cloud
        if cloud is not None and target is cloud.target and self.owners.unanswered(target.name):
            cloud.record(error, permanent=False, uploaded=False)

    def _check_failed(self, target: Target) -> bool:
        """The owner check of ``target`` failed (it did not answer): the pass failed, and
        is counted so; another owner's refusal is a wait."""
        assert self.owners is not None
        if not self.owners.unreadable(target.name):
            return False
        self.stats.counters.failures += 1
        return True

    async def until_empty(
        self,
        method: str | None = None,
        enable_fallback: bool | None = None,
        *,
        stop: asyncio.Event | None = None,
        paused: Callable[[], bool] | None = None,
    ) -> tuple[bool, list[PassReport]]:
        """Passes until nothing is due or one fails (or, once ``stop`` is set or
        ``paused()`` says so, no new pass): (every pass ok, reports). A pass stopped by a
        store file that changed while it was sent (the store's doing: its rows are due
        again at once, the file is copied next time) is followed by another, which decides;
        once, not twice in a row."""
        reports: list[PassReport] = []
        while (stop is None or not stop.is_set()) and not (paused is not None and paused()):
            report = await self.run_pass(method, enable_fallback)
            if report is None:
                break
            reports.append(report)
            if moved_only(report) and not (len(reports) > 1 and moved_only(reports[-2])):
                continue
            if report.error or report.retrying or report.memory_error or report.waiting:
                break
        return drained_ok(reports), reports

    async def _files_target(self, route: str) -> Target | None:
        """The target this pass's files go to; None: they wait (circuit open, or a one-off
        http sync while the cloud is the primary)."""
        if route == "local":
            return self.local if self.primary is self.local else None
        if route == "cloud" and self.cloud is not None and await self.cloud.allowed(self.state):
            return self.cloud.target
        return None

    # ---- the pass itself -----------------------------------------------------------------
    async def drain_once(
        self,
        target: Target | None,
        *,
        now: float | None = None,
        memories: MemoryRoute = "none",
        files_retry_at: float | None = None,
        memories_json: MemoriesJson | None = None,
        ask_owner: bool = False,
        files_held: bool = False,
    ) -> PassReport | None:
        """Claim what is due and make (at most) one upload. None when nothing was due.

        ``target`` None: the files wait (their circuit is open): the claimed rows go back
        to the queue until ``files_retry_at``; memories still go to Akosha when
        ``reflection.duckdb`` was among the changes. ``ask_owner``: the ownership of
        ``target`` is asked (``OwnerGate.refusal``) after the capture, before anything is
        delivered or sent (the start's claim settled meanwhile); refused, the rows go back.
        Either way the upload asks it again before its manifest (``FirstSend.again``).
        ``files_held``: ``target`` is None for a one-off http sync: the files wait, no error.
        """
        await self._look_at_place(target, now)
        compare = self.compare_all
        if target is not None and compare is not None and await self._forgotten(target):
            await compare()  # every file that differs is queued first
        items = await self.state.claim(now)
        if not items:
            return None
        report = PassReport(target=target.name if target else "wait", claimed=len(items))
        try:
            await asyncio.to_thread(self.snap.reset_staging)
            ledger = await self.state.ledger(target.name) if target is not None else {}
            results = await self.capture_all([i.path for i in items], ledger)
            gate: _Owner | None = None  # asked by the upload, right before it sends
            if ask_owner and target is not None:
                if self._delivers(results, memories):  # memories go too: asked now
                    if await self._owner_refused(target, items, report):
                        return report
                else:
                    assert self.owners is not None
                    gate = _Owner(self.owners, target)
            elif target is not None and self.owners is not None:
                # asked at the pass's start: asked again before the manifest (a takeover
                # while an upload outlasts the check's interval stops it there)
                gate = _Owner(self.owners, target)
            if target is None:
                retry_at = files_retry_at or time.time() + self.retry_backoff
                await self.state.release(items, retry_at=retry_at, error=WAITING_FOR_CLOUD)
                report.error = None if files_held else waiting_error(self.cloud)
                report.waiting = True
            else:
                await self.uploader.upload(
                    target, ledger, items, results, report, memories_json, gate
                )
            # after the files: an Akosha that takes requests and never answers them holds
            # up only its memories, never the upload of this pass's changes
            memory_retry = await self._memories(results, memories, report)
            if memory_retry is not None:
                await self.state.requeue(MEMORY_DB, memory_retry, "memories not delivered yet")
        except asyncio.CancelledError:
            # shutdown mid-pass: hand the rows back untouched (attempt already counted)
            await asyncio.shield(self.state.release(items, retry_at=0.0, error="interrupted"))
            raise
        except Exception as exc:
            # a failure past the routes (the state refused a write, the disk is full): the
            # rows go back on the backoff, else they would stay claimed until a restart
            retry_at = time.time() + retry_delay(max(i.attempts for i in items), self.retry_backoff)
            with contextlib.suppress(Exception):
                await self.state.release(items, retry_at=retry_at, error=str(exc) or repr(exc))
            raise
        finally:
            await asyncio.to_thread(self.snap.reset_staging)
        if report.bytes_sent >= TRIM_THRESHOLD:  # a large pass: what it freed goes back
            await asyncio.to_thread(trim)
        return report

    def _memory_db(self, results: Sequence[CaptureResult], route: MemoryRoute) -> Captured | None:
        """The capture of ``reflection.duckdb`` this pass delivers to Akosha, if any: only a
        DuckDB database by content (an empty or foreign file there holds no memories)."""
        if route == "none" or self.akosha is None:
            return None
        return memory_capture(results)

    def _delivers(self, results: Sequence[CaptureResult], route: MemoryRoute) -> bool:
        """This pass delivers memories to Akosha (after its upload)."""
        return self._memory_db(results, route) is not None

    async def _memories(
        self, results: Sequence[CaptureResult], route: MemoryRoute, report: PassReport
    ) -> float | None:
        """Hand the private copy of ``reflection.duckdb`` to the Akosha route. Returns when
        to requeue it (None: delivered, or nothing to deliver)."""
        memory_db = self._memory_db(results, route)
        if memory_db is None or self.akosha is None:
            return None
        outcome = await self.akosha.deliver(memory_db.files[0].staged, wait=route == "wait")
        report.memories = outcome.report
        report.memory_error = outcome.error
        report.memory_failed = outcome.failed
        return outcome.retry_at

    async def capture_all(
        self, paths: Sequence[str], ledger: Mapping[str, LedgerEntry] | None = None
    ) -> list[CaptureResult]:
        """Capture ``paths`` (in their order); ``ledger`` (the target's) tells which may be
        duplicates. The paths go to the worker threads in runs (one thread hop per run,
        not per file: 10,000 small files are a few dozen hops), at most
        :data:`CAPTURE_CONCURRENCY` at once. A pass of more than :data:`MANY_PATHS` paths is
        mostly small files, whose capture is per-file work that holds the GIL (two threads
        only fight over it): they go in one lane, and the files last uploaded large (the
        ledger's size) in another, where their copies overlap the small files."""
        ledger = ledger or {}
        sizes = [(p, e.size if (e := ledger.get(p)) is not None else None) for p in paths]
        if not sizes:
            return []
        if len(sizes) > MANY_PATHS:
            large = [i for i, (_, n) in enumerate(sizes) if n is not None and n >= MEMORY_MAX_FILE]
            big = set(large)
            lanes = [[i for i in range(len(sizes)) if i not in big], large]
        else:
            width = -(-len(sizes) // CAPTURE_CONCURRENCY)
            lanes = [
                list(range(k, min(k + width, len(sizes)))) for k in range(0, len(sizes), width)
            ]
        out: list[CaptureResult | None] = [None] * len(sizes)

        def capture_run(run: list[int]) -> None:
            for i in run:
                out[i] = self.snap.capture(*sizes[i])

        async def lane(indices: list[int]) -> None:
            for k in range(0, len(indices), CAPTURE_RUN):
                run = indices[k : k + CAPTURE_RUN]
                self.stats.in_flight += len(run)  # the files being captured now
                try:
                    await asyncio.to_thread(capture_run, run)
                finally:
                    self.stats.in_flight -= len(run)

        await asyncio.gather(*(lane(indices) for indices in lanes if indices))
        return [r for r in out if r is not None]
