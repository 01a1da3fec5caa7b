"""Memories of a snapshot to Akosha over HTTP, exactly once, and ``memories.json`` for the cloud.

:class:`MemorySync` is the glue between a private snapshot copy of ``reflection.duckdb``,
the state database (what Akosha already has, what was skipped, what a cloud upload
already carries) and :class:`~akoshad.akosha.client.AkoshaClient`.

``deliver(snapshot)``: rows with a usable embedding that the state DB does not list as
delivered are sent in batches (<= 1000 items, < 3 MiB); each confirmed batch is recorded
before the next is sent, so an interruption loses nothing and resends nothing that was
confirmed. ``Duplicate key`` counts as delivered. Ids a ``partial`` result reports as
failed are resent alone (bounded). Only rows Akosha rejects for what they are
(:mod:`akoshad.akosha.rejections`: the embedding checks, ``created_at``; in a call where
it stored others, see :func:`_rejected`), rows without a
usable embedding, and a memory too large to send alone (413, or a connection reset every
time while a small request still goes through) are recorded as skipped, with the reason,
and logged; any other per-item error leaves the memory pending (``report.held``): it is
sent again at the next delivery, never dropped. A batch that is reset twice is split as
for a 413. Rows skipped for a missing/wrong embedding are reconsidered when the row is
fixed. A transient failure (also a batch of which Akosha stored none) raises
:class:`DeliveryInterrupted` (a TransientError) after recording the progress.

``memories.json`` for cloud uploads, and the listing of a copy's rows, come from
:class:`~akoshad.pipeline.cloud_memories.CloudMemories`, which MemorySync extends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from akoshad.akosha.client import AkoshaClient
from akoshad.akosha.encoding import MAX_BATCH_BYTES, MAX_BATCH_ITEMS, Memory
from akoshad.akosha.rejections import REJECTED_PREFIX, TOO_LARGE, final_skip, rejects_row
from akoshad.akosha.results import ConnectionReset, RequestTooLarge, StoreResult
from akoshad.akosha.rows import RowRef, chunks
from akoshad.backoff import exponential
from akoshad.duckdb_commands import Redactions
from akoshad.duckdb_worker import Runner, load_batches
from akoshad.errors import PermanentError, SnapshotError, TransientError
from akoshad.heap import trim
from akoshad.names import copy_of
from akoshad.pipeline.chain import BreakerState, CircuitBreaker
from akoshad.pipeline.cloud_memories import LOAD_BYTES, LOAD_CHUNK, READ_ERRORS, CloudMemories
from akoshad.pipeline.delivery_report import (
    LOGGED_IDS,
    CircuitOpen,
    DeliveryInterrupted,
    DeliveryReport,
    first_reason,
    log_skipped,
)
from akoshad.pipeline.stats import Stats
from akoshad.store.db import StateDB

__all__ = ["REJECTED_PREFIX", "DeliveryInterrupted", "DeliveryReport", "MemorySync"]

METHOD = "http"
RESET_TRIES = 2  # a batch whose request is reset this many times is split (as for a 413)

Sleep = Callable[[float], Awaitable[None]]


def _one_per_id(refs: list[RowRef]) -> list[RowRef]:
    """One row per memory id (the same id in both tables): the sendable one, else the
    first, so that an id's skip reason does not change from one pass to the next."""
    by_id: dict[str, RowRef] = {}
    for ref in refs:
        first = by_id.get(ref.memory_id)
        if first is None or (first.problem is not None and ref.problem is None):
            by_id[ref.memory_id] = ref
    if len(by_id) == len(refs):
        return refs
    return list(by_id.values())


def _rejected(result: StoreResult) -> dict[str, str]:
    """The memories of ``result`` Akosha rejected for what they are (skipped for good): only
    when it stored others of the same call. Rejecting a whole call (every memory an
    'embedding dim mismatch': an Akosha set up for another embedding size) is Akosha
    failing, not the rows: akoshad sends only rows whose embedding it checked."""
    if not result.delivered:
        return {}
    return {m: e for m, e in result.failed.items() if rejects_row(e)}


class MemorySync(CloudMemories):
    """Deliver a snapshot's memories to Akosha once; build ``memories.json`` for uploads.

    ``breaker`` (optional) is the ``http`` target's circuit: ``deliver`` asks it first
    (an open circuit raises TransientError without traffic; half-open: probe
    ``/healthz`` first) and reports every call's outcome to it.
    """

    def __init__(
        self,
        state: StateDB,
        client: AkoshaClient | None,
        system_id: str,
        breaker: CircuitBreaker | None = None,
        *,
        max_items: int = MAX_BATCH_ITEMS,
        max_bytes: int = MAX_BATCH_BYTES,
        item_retries: int = 2,
        retry_backoff: float = 0.5,
        load_chunk: int = LOAD_CHUNK,
        sleep: Sleep = asyncio.sleep,
        redact_secrets: bool = True,
        stats: Stats | None = None,
        duckdb: Runner | None = None,
    ) -> None:
        super().__init__(
            state,
            system_id,
            load_chunk=load_chunk,
            redact_secrets=redact_secrets,
            stats=stats,
            duckdb=duckdb,
        )
        self.client = client
        self.breaker = breaker
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.item_retries = item_retries
        self.retry_backoff = retry_backoff
        self._sleep = sleep
        self._lock = asyncio.Lock()
        # the secrets masked in the loaded memories not yet delivered: counted once they are
        self._masked: Redactions = {}
        # counters since start (status); totals come from the state DB
        self.delivered_since_start = 0
        self.skipped_since_start = 0
        # memories Akosha did not store at the last delivery, sent again later: id -> error
        self.held: dict[str, str] = {}
        self.last_error: str | None = None
        self.last_report: DeliveryReport | None = None
        self.last_success_at: float | None = None

    # ---- HTTP delivery -----------------------------------------------------------------
    async def deliver(self, snapshot_db: Path) -> DeliveryReport:
        """Send the snapshot's not-yet-delivered memories. See the module docstring.

        Raises DeliveryInterrupted (transient; progress kept), PermanentError (Akosha
        refuses the protocol or the tool), SnapshotError (the copy cannot be read).
        """
        async with self._lock:
            report = DeliveryReport()
            started = time.monotonic()
            sent_before = self.client.bytes_sent if self.client is not None else 0
            try:
                await self._deliver(snapshot_db, report)
            except TransientError as exc:
                self.last_error = str(exc)
                if isinstance(exc, DeliveryInterrupted):
                    raise
                raise DeliveryInterrupted(
                    str(exc),
                    report,
                    retry_after=exc.retry_after,
                    circuit_open=isinstance(exc, CircuitOpen),
                ) from exc
            except (PermanentError, SnapshotError) as exc:
                self.last_error = str(exc)
                if isinstance(exc, SnapshotError):
                    await self.unreadable(str(exc))
                raise
            finally:
                self._masked.clear()  # what did not leave is masked again next time
                report.seconds = time.monotonic() - started
                if self.client is not None:
                    report.bytes_sent = self.client.bytes_sent - sent_before
                self.held.update(report.held)
                self.last_report = report
                log_skipped(report.skipped)
                if report.pending:
                    await asyncio.to_thread(trim)  # what the loaded batches left in the heap
            self.held = dict(report.held)  # every pending memory was tried
            self.last_error = None
            self.last_success_at = time.time()
            return report

    async def _deliver(self, snapshot_db: Path, report: DeliveryReport) -> None:
        if self.breaker is not None and self.breaker.state is BreakerState.OPEN:
            raise self._circuit_open()  # before the rows are read: an open circuit costs nothing
        listed = await self._list(snapshot_db)
        report.rows = len(listed)
        refs = _one_per_id(listed)
        ids = [r.memory_id for r in refs]
        delivered = await self.state.delivered_ids(ids)
        reasons = await self.state.memory_skip_reasons(ids)
        report.already = len(delivered & set(ids))

        new_skips: dict[str, str] = {}
        revived: list[str] = []
        pending: list[RowRef] = []
        for ref in refs:
            if ref.memory_id in delivered:
                continue
            known = reasons.get(ref.memory_id)
            if ref.problem is not None:
                if known != ref.problem:
                    new_skips[ref.memory_id] = ref.problem
            elif known is not None and final_skip(known):
                continue  # Akosha refused this row, or it is too large: not sent again
            else:
                if known is not None:
                    revived.append(ref.memory_id)
                pending.append(ref)
        if revived:
            await self.state.unmark_memories_skipped(revived)
        await self._skip(new_skips, report)
        report.pending = len(pending)
        if not pending:
            return
        await self._admit()
        for part in chunks(pending, self.load_chunk, LOAD_BYTES):
            loaded, skipped = await self._load(snapshot_db, part)
            await self._skip(skipped, report)
            for batch in loaded:
                await self._send(batch, report)

    def _client(self) -> AkoshaClient:
        if self.client is None:
            raise PermanentError("akosha_url is not set", fix="set akosha_url to deliver memories")
        return self.client

    def _circuit_open(self) -> TransientError:
        assert self.breaker is not None
        return CircuitOpen(
            f"Akosha circuit open ({self.breaker.last_error}); "
            f"next try in {self.breaker.retry_in():.0f} s",
            retry_after=self.breaker.retry_in(),
        )

    async def _admit(self) -> None:
        """Ask the breaker; on a half-open circuit, probe ``/healthz`` first."""
        client = self._client()
        if self.breaker is None:
            return
        half_open = self.breaker.state is BreakerState.HALF_OPEN
        if not self.breaker.allow():
            raise self._circuit_open()
        if half_open and not await client.probe():
            error = client.last_probe_error or "health probe failed"
            self.breaker.record_failure(error)
            raise TransientError(f"Akosha is still unavailable: {error}")

    async def _send(self, batch: list[Memory], report: DeliveryReport) -> None:
        """One batch: send, record, resend failed ids (bounded), skip rows Akosha rejects;
        the ids still failing stay pending (``report.held``)."""
        todo = batch
        progressed = False
        failed: dict[str, str] = {}
        for attempt in range(self.item_retries + 1):
            if attempt:
                report.retried += len(todo)
                await self._sleep(exponential(attempt - 1, self.retry_backoff))
            result = await self._store(todo, report)
            if result is None:  # split or skipped as too large, handled there
                return
            await self._record(result, report)
            rejected = _rejected(result)
            await self._skip({m: REJECTED_PREFIX + e for m, e in rejected.items()}, report)
            progressed = progressed or bool(result.delivered or rejected)
            failed = {m: e for m, e in result.failed.items() if m not in rejected}
            if not failed:
                return
            todo = [m for m in todo if m["memory_id"] in failed]
        if not progressed:
            # Nothing of this batch went through: Akosha is failing, not these rows.
            sample = next(iter(failed.values()))
            error = TransientError(f"Akosha stored none of {len(todo)} memories: {sample}")
            if self.breaker is not None:
                self.breaker.record_failure(error)
            raise error
        report.held.update(failed)

    async def _store(self, batch: list[Memory], report: DeliveryReport) -> StoreResult | None:
        """One request, tried again when the connection is reset; None when the batch was
        split (or its one memory skipped) as too large instead."""
        reset: ConnectionReset | None = None
        for attempt in range(RESET_TRIES):
            if attempt:
                await self._sleep(exponential(attempt - 1, self.retry_backoff))
            try:
                return await self._call(batch, report)
            except RequestTooLarge as exc:
                await self._too_large(batch, report, str(exc))
                return None
            except ConnectionReset as exc:
                reset = exc
        assert reset is not None
        if not await self._client().answers():  # Akosha is gone, not this batch too large
            self._failed(reset)
            raise reset
        why = f"the connection was reset {RESET_TRIES} times while a small request went through"
        await self._too_large(batch, report, f"{why} ({reset})")
        return None

    async def _too_large(self, batch: list[Memory], report: DeliveryReport, why: str) -> None:
        """Split ``batch`` in two and send each; one memory alone is skipped."""
        if len(batch) == 1:
            await self._skip({batch[0]["memory_id"]: REJECTED_PREFIX + TOO_LARGE + why}, report)
            return
        half = len(batch) // 2
        await self._send(batch[:half], report)
        await self._send(batch[half:], report)

    async def _call(self, batch: list[Memory], report: DeliveryReport) -> StoreResult:
        """One ``batch_store_memories`` call, its outcome told to the breaker (a reset or
        a 413 only by the caller: the batch may be the cause)."""
        report.requests += 1
        try:
            result = await self._client().store(batch)
        except (RequestTooLarge, ConnectionReset):
            raise
        except TransientError as exc:
            self._failed(exc)
            raise
        except PermanentError as exc:
            self._failed(exc, permanent=True)
            raise
        if self.breaker is not None and (result.delivered or not result.failed):
            # an answer that stored none of the batch is no success: _send counts it failed
            self.breaker.record_success()
        return result

    def _failed(self, exc: Exception, *, permanent: bool = False) -> None:
        if self.breaker is not None:
            self.breaker.record_failure(exc, permanent=permanent)

    async def _record(self, result: StoreResult, report: DeliveryReport) -> None:
        if result.delivered:
            await self.state.mark_delivered(result.delivered, METHOD)
            masked = self._masked
            self._count_redactions({m: masked.pop(m) for m in result.delivered if m in masked})
            report.delivered += len(result.delivered)
            for memory_id in result.delivered:
                self.held.pop(memory_id, None)
            report.duplicates += len(result.duplicates)
            self.delivered_since_start += len(result.delivered)

    async def _skip(self, reasons: dict[str, str], report: DeliveryReport) -> None:
        if reasons:
            await self.state.mark_memories_skipped(reasons)
            report.skipped.update(reasons)
            self.skipped_since_start += len(reasons)

    async def _load(
        self, snapshot_db: Path, refs: Sequence[RowRef]
    ) -> tuple[list[list[Memory]], dict[str, str]]:
        """Load ``refs`` and cut them into request-sized batches, in a worker thread."""
        try:
            parts, skipped, found = await asyncio.to_thread(
                load_batches,
                snapshot_db,
                self.system_id,
                refs,
                self.max_items,
                self.max_bytes,
                self.redact_secrets,
                self.duckdb,
            )
        except READ_ERRORS as exc:
            raise SnapshotError(f"cannot read memories from {copy_of(snapshot_db)}: {exc}") from exc
        self._masked.update(found)  # counted when delivered (a retried batch is masked again)
        return parts, skipped

    # ---- status -----------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        """Counters for ``akoshad status``: totals from the state DB plus this run's, the
        memories held back (Akosha did not store them yet) and the last ones skipped."""
        delivered, skipped = await self.state.memory_counts()
        return {
            "delivered": delivered,
            "skipped": skipped,
            "held": len(self.held),
            "held_first": first_reason(self.held),
            "last_skipped": await self.state.recent_memory_skips(LOGGED_IDS),
            "delivered_since_start": self.delivered_since_start,
            "skipped_since_start": self.skipped_since_start,
            "redactions_since_start": self.redactions_since_start,
            "last_error": self.last_error,
            "last_success_at": self.last_success_at,
            "circuit": self.breaker.snapshot() if self.breaker is not None else None,
            "last_delivery": self.last_report.as_dict() if self.last_report else None,
        }
