"""The routes a pass sends through, each owning its circuit breaker.

* :class:`CloudRoute` -- the bucket: a read-only check before the first write after a
  start or a failure (so the breaker's half-open probe is that check, never a write), the
  outcome of each pass recorded in its breaker, and ``memories.json`` carried along. A
  request of another part of the daemon (a prune, a drill) that the bucket answered while
  the circuit is open lets the next pass probe it at once (``answered``).
* :class:`AkoshaRoute` -- memories of the captured ``reflection.duckdb`` delivered over
  HTTP; :class:`MemorySync` records each call in the route's breaker.
* :class:`MemoriesJson` -- the builder of ``memories.json`` for a cloud upload, told
  whether the upload committed or failed. It records how the memories went up (readable,
  or sealed to which recipients: ``sealing.memories_label``); a start that finds the
  configuration asks otherwise (``encrypt_memories`` or the recipients changed) has every
  memory carried again, by the next upload, in the new form (:meth:`~MemoriesJson.at_start`).

The local target needs no route: it has no breaker and is always there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from akoshad.backoff import half_jitter_delay
from akoshad.errors import PermanentError, SnapshotError, TransientError
from akoshad.names import MEMORIES_NAME, MEMORY_DB
from akoshad.pipeline.capture.snapshot import Captured, CaptureResult
from akoshad.pipeline.chain import CircuitBreaker
from akoshad.pipeline.cloud_memories import StreamTo
from akoshad.pipeline.delivery_report import DeliveryInterrupted, DeliveryReport
from akoshad.pipeline.memory_sync import MemorySync
from akoshad.pipeline.stats import Stats
from akoshad.ratelog import RateLimitedLog, ReasonLog
from akoshad.store.db import StateDB
from akoshad.targets.base import ReadCheck, Target

# how the memories committed cloud uploads carry went up (``sealing.memories_label``)
KV_MEMORIES_AS = "memories_sealed_as"
TARGET_START_TIMEOUT = 10.0  # a start or bucket check that does not answer: a failure
WAITING_FOR_CLOUD = "waiting for the cloud"  # the queue's error of files an open circuit holds
PERMANENT_RETRY_SECONDS = 300.0
# memories Akosha keeps not storing, for the same reason, are logged again at most this often
# (a busy store delivers a copy at every pass: the warning would come with each)
HELD_LOG_INTERVAL = 3600.0


@dataclass(frozen=True)
class ExtraObject:
    """An object an upload carries besides store files (``memories.json``): a private file
    in the pass's staging directory, streamed to the target as it is (``sent``: the bytes
    already stored while it was built; None: not sent yet)."""

    name: str
    path: Path
    conversation_count: int = 0
    sent: int | None = None


def memory_capture(captures: Iterable[CaptureResult]) -> Captured | None:
    """The capture of ``reflection.duckdb`` among ``captures``, when it is a DuckDB
    database by content (an empty or foreign file there holds no memories to read)."""
    return next(
        (
            c
            for c in captures
            if isinstance(c, Captured) and c.group == MEMORY_DB and c.files[0].kind == "duckdb"
        ),
        None,
    )


class MemoriesJson:
    """``memories.json`` for a cloud upload: ``build`` while the files go out, then
    ``committed`` once the manifest landed or ``failed`` when the upload was lost."""

    def __init__(self, sync: MemorySync, form: str = "none") -> None:
        self.sync = sync
        self.form = form  # how memories go up now (``sealing.memories_label``)
        self._built: set[str] = set()  # uploads whose memories.json was built (or had none)

    async def form_changed(self) -> bool:
        """Whether the memories committed uploads carry went up otherwise than ``form``
        says. Not recorded (a new state, or one of an earlier akoshad, which sealed them as
        its configuration said at each upload): ``form`` is recorded as theirs, so an
        upgrade sends no memory again."""
        recorded = await self.sync.state.get_kv(KV_MEMORIES_AS)
        if recorded is None:
            await self._record_form()
            return False
        return recorded != self.form

    async def _record_form(self) -> None:
        await self.sync.state.transaction(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (KV_MEMORIES_AS, self.form)
            )
        )

    async def carries_all_again(self, captures: Sequence[Captured]) -> bool:
        """Whether an upload of ``captures`` is due even with nothing else changed: it
        captures ``reflection.duckdb`` and memories go up in a new form."""
        return memory_capture(captures) is not None and await self.form_changed()

    async def at_start(self, data_dir: Path) -> bool:
        """When :meth:`form_changed`: every memory is to be carried again (what went up is
        forgotten) and ``reflection.duckdb`` queued, so the next pass makes an upload that
        carries them all in the new form (``Uploader``: even with nothing else changed)."""
        if not await self.form_changed():
            return False
        state = self.sync.state
        await state.transaction(lambda c: c.execute("DELETE FROM memories_uploaded"))
        if await asyncio.to_thread((data_dir / MEMORY_DB).is_file):
            await state.requeue(MEMORY_DB, time.time(), "memories: sent again in a new form")
        logger.info(
            "memories.json is {} now: every memory goes up again with the next upload",
            "encrypted" if self.form != "none" else "not encrypted",
        )
        return True

    async def build(
        self, captures: Sequence[Captured], upload_id: str, stream: StreamTo | None = None
    ) -> list[ExtraObject]:
        """The extra object of this upload (none unless ``reflection.duckdb`` changed);
        with ``stream``, sent there while it is built."""
        memory_db = memory_capture(captures)
        if memory_db is None:
            return []
        staged = memory_db.files[0].staged
        try:
            found = await self.sync.memories_for_cloud(staged, upload_id, stream)
        except SnapshotError as exc:  # logged by ``unreadable`` (not at every pass)
            logger.debug("no memories.json: {}", exc)
            await self.sync.unreadable(str(exc))
            return []
        self._built.add(upload_id)
        if found is None:
            return []
        return [ExtraObject(MEMORIES_NAME, found.path, len(found.ids), found.sent)]

    async def committed(self, upload_id: str) -> None:
        """``upload_id`` committed: what its memories.json carries is recorded, and the
        form memories went up in, when it was built."""
        await self.sync.commit_cloud(upload_id)
        if upload_id in self._built:
            self._built.discard(upload_id)
            await self._record_form()

    def failed(self, upload_id: str) -> None:
        self._built.discard(upload_id)
        self.sync.forget_cloud(upload_id)


def waiting_error(cloud: CloudRoute | None) -> str:
    """The error of a pass whose files an open circuit holds back, with why it opened
    (``sync --wait`` and the MCP tool print it: the reason, not only the circuit)."""
    why = cloud.breaker.last_error if cloud is not None else None
    return f"{WAITING_FOR_CLOUD} (circuit open{f': {why}' if why else ''})"


class CloudRoute:
    """The cloud target, its breaker, and whether the bucket was seen since it failed."""

    def __init__(
        self,
        target: Target,
        breaker: CircuitBreaker,
        stats: Stats,
        memories_json: MemoriesJson | None = None,
    ) -> None:
        self.target = target
        self.breaker = breaker
        self.stats = stats
        self.memories_json = memories_json
        # True once the read-only check passed; any failure clears it, so nothing is
        # written to a bucket that was not just seen to exist
        self.checked = False
        self._log = RateLimitedLog(60.0)
        self.wake: asyncio.Event | None = None  # set when the files held back are due now
        self._back = False  # the bucket answered elsewhere: the files held back are due

    def answered(self) -> None:
        """The bucket answered a request (the target's ``on_answer``): while the circuit
        is open that was another part of the daemon (a prune, a drill), so the next pass
        probes at once, and the files held back for the circuit are due then."""
        if self.breaker.answered_elsewhere():
            logger.debug("target cloud answered a request: the next pass tries it now")
            self._back = True
            if self.wake is not None:
                self.wake.set()

    async def start(self, *, clean_up: bool = True) -> None:
        """Start the target; a failure is recorded and logged, never raised (changes stay
        queued until the bucket answers)."""
        try:
            # a hanging endpoint must not hold up READY: the pipeline retries it later
            await asyncio.wait_for(self.target.start(clean_up=clean_up), TARGET_START_TIMEOUT)
        except (TimeoutError, TransientError, PermanentError) as exc:
            self._failed(exc)
            logger.error("target {} is unavailable: {}", self.target.name, self._why(exc))
            return
        self.stats.target(self.target.name)
        self.checked = True

    async def allowed(self, state: StateDB) -> bool:
        """May this pass write to the cloud? Only when the breaker lets a call through and
        the read-only check passed since the start or the last failure. Checks only when
        the pass has something to claim; a change queued meanwhile waits for the next."""
        if self._back:  # the bucket answered elsewhere: what the circuit held is due now
            self._back = False
            await state.due_now(WAITING_FOR_CLOUD)
        if self.checked or not isinstance(self.target, ReadCheck):
            return self.breaker.allow()
        due = await state.next_due()
        if due is None or due > time.time() or not self.breaker.allow():
            return False
        try:
            await asyncio.wait_for(self.target.check(), TARGET_START_TIMEOUT)
        except (TimeoutError, TransientError, PermanentError) as exc:
            self._failed(exc)
            self._log.error("cloud-check", "target cloud is unavailable: {}", self._why(exc))
            return False
        self._log.ok("cloud-check", "target cloud answers again")
        self.checked = True
        return True

    def retry_at(self) -> float:
        """When files held back by an open circuit are due again."""
        return time.time() + max(1.0, self.breaker.retry_in())

    def record(self, error: str | None, *, permanent: bool, uploaded: bool) -> None:
        """The outcome of a pass that used the cloud."""
        if error:
            self.checked = False
            self.breaker.record_failure(error, permanent=permanent)
        elif uploaded:
            self.breaker.record_success()

    def _failed(self, exc: BaseException) -> None:
        why = self._why(exc)
        self.stats.target(self.target.name).failed(why)
        self.breaker.record_failure(why, permanent=isinstance(exc, PermanentError))

    @staticmethod
    def _why(exc: BaseException) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer within {TARGET_START_TIMEOUT:.0f}s"
        return str(exc)


@dataclass
class MemoryOutcome:
    """What the Akosha route did this pass."""

    report: dict[str, Any] | None = None
    error: str | None = None
    retry_at: float | None = None  # requeue reflection.duckdb for then; None: done
    failed: bool = False  # a delivery that failed (not an open circuit that sent nothing)


class AkoshaRoute:
    """Memories over HTTP to Akosha; the breaker is the one ``MemorySync`` records in."""

    def __init__(
        self, sync: MemorySync, breaker: CircuitBreaker, stats: Stats, retry_backoff: float
    ) -> None:
        self.sync = sync
        self.breaker = breaker
        self.stats = stats
        self.retry_backoff = retry_backoff
        self._down = False  # the last delivery failed: the next that passes says so
        self._held_passes = 0  # passes in a row that left memories Akosha did not store
        self._held_log = ReasonLog(HELD_LOG_INTERVAL)  # their warning, by the first reason

    async def deliver(self, snapshot_db: Path, *, wait: bool = False) -> MemoryOutcome:
        """Deliver the memories of a private copy of ``reflection.duckdb`` (``wait``: the
        plan holds them back, the circuit is open)."""
        if wait:
            return MemoryOutcome(error="waiting for Akosha (circuit open)", retry_at=self._soon())
        try:
            report = await self.sync.deliver(snapshot_db)
        except TransientError as exc:
            failed = self._failed(exc)
            logger.warning("memories not delivered to Akosha: {}", exc)
            return MemoryOutcome(
                report=_partial(exc),
                error=str(exc),
                retry_at=self._soon(exc.retry_after),
                failed=failed,
            )
        except PermanentError as exc:
            self._failed(exc)
            logger.error("memories not delivered to Akosha: {}", exc)
            later = time.time() + max(PERMANENT_RETRY_SECONDS, self.breaker.retry_in())
            return MemoryOutcome(error=str(exc), retry_at=later, failed=True)
        except SnapshotError as exc:
            # not Akosha's fault, and nothing to retry until the file changes; but reported
            # (pass report, ``--once`` exit 1, ``memories.last_error``), never silent; the
            # warning comes from ``MemorySync.unreadable``, not at every pass
            logger.debug("no memories read from {}: {}", MEMORY_DB, exc)
            return MemoryOutcome(error=f"no memories read from {MEMORY_DB}: {exc}")
        self.stats.target("http").ok()
        if self._down:
            self._down = False
            logger.info("target http answers again (Akosha)")
        if report.delivered:
            self.stats.progressed()
            logger.info("delivered {} memories to Akosha", report.delivered)
        if report.held:
            return self._held(report)
        self._held_passes = 0
        self._held_log.ok("the memories Akosha did not store before are stored or skipped now")
        return MemoryOutcome(report=report.as_dict())

    def _failed(self, exc: TransientError | PermanentError) -> bool:
        """A delivery that failed: the target's health and ``counters.failures`` (an open
        circuit, which sent nothing, is no new failure: False)."""
        self.stats.target("http").failed(str(exc))
        if isinstance(exc, DeliveryInterrupted) and exc.circuit_open:
            return False
        self.stats.counters.failures += 1
        self._down = True
        return True

    def _held(self, report: DeliveryReport) -> MemoryOutcome:
        """Akosha answered but did not store some memories (not a rejection of the rows):
        they stay pending and the copy is delivered again, later at each such pass."""
        self._held_passes += 1
        self.stats.counters.failures += 1
        first = min(report.held)
        more = f", and {len(report.held) - 1} more" if len(report.held) > 1 else ""
        error = (
            f"{len(report.held)} memories not stored by Akosha yet, sent again later "
            f"({first}: {report.held[first]}{more})"
        )
        self._held_log.warning(report.held[first], "{}", error)
        wait = half_jitter_delay(self._held_passes - 1, self.retry_backoff, PERMANENT_RETRY_SECONDS)
        retry_at = time.time() + max(wait, self.breaker.retry_in())
        return MemoryOutcome(report=report.as_dict(), error=error, retry_at=retry_at)

    def _soon(self, retry_after: float | None = None) -> float:
        """The next try: after the backoff, the open circuit, and Akosha's own
        ``Retry-After`` (at most :data:`PERMANENT_RETRY_SECONDS`), whichever is last."""
        hint = min(retry_after or 0.0, PERMANENT_RETRY_SECONDS)
        return time.time() + max(self.retry_backoff, self.breaker.retry_in(), hint)


def _partial(exc: TransientError) -> dict[str, Any] | None:
    """What an interrupted delivery did before it stopped (its bytes count as sent)."""
    return exc.report.as_dict() if isinstance(exc, DeliveryInterrupted) else None
