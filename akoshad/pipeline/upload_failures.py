"""How an upload that will not commit is settled: a begun attempt that is lost, refused
by the owner gate or abandoned to an error fails in the history and what it wrote is
removed; its queue rows are released for a later retry (equal-jitter backoff,
:func:`retry_delay`), or held while another host owns the system id. Without the target's
name key nothing is sent; ledger rows whose chunks are gone (or not stored as this upload
must reference them) are dropped and their files queued to be sent again."""

from __future__ import annotations

import contextlib
import time

from loguru import logger

from akoshad.backoff import half_jitter_delay
from akoshad.errors import PermanentError, SourceChanged, TransientError
from akoshad.pipeline.capture.snapshot import Snapshotter
from akoshad.pipeline.recovery import Discarder, discard_attempt
from akoshad.pipeline.report import PassReport
from akoshad.pipeline.send_gate import FirstSend, OwnerRefused, SendGate, hold
from akoshad.pipeline.stats import Stats
from akoshad.store.db import LedgerEntry, QueueItem, StateDB
from akoshad.targets.base import Target

RETRY_CAP_SECONDS = 300.0
PERMANENT_RETRY_SECONDS = 300.0


def retry_delay(attempts: int, base: float, cap: float = RETRY_CAP_SECONDS) -> float:
    """The wait of a queue entry after ``attempts`` failures (equal jitter)."""
    return half_jitter_delay(attempts - 1, base, cap)


class UploadFailures:
    """The failure paths of :class:`~akoshad.pipeline.upload.Uploader` (a mixin: it reads
    the uploader's state, stats, snapshotter, discarder and retry backoff)."""

    state: StateDB
    snap: Snapshotter
    stats: Stats
    discarder: Discarder
    retry_backoff: float

    async def _refused(
        self,
        target: Target,
        upload_id: str,
        items: list[QueueItem],
        exc: OwnerRefused,
        report: PassReport,
        gate: SendGate,
        first: FirstSend,
    ) -> None:
        """The owner gate refused the upload (another host owns the system id): what it
        sent goes when it was refused before its manifest, and its rows are held."""
        if first.begun:
            await self._discard(target, upload_id, str(exc))
        report.upload_id = ""
        await hold(self.state, gate, items, str(exc), report)
        if not report.waiting:  # the target did not answer the check: a failed pass
            self.stats.counters.failures += 1

    async def _no_key(
        self, target: Target, items: list[QueueItem], exc: Exception, report: PassReport
    ) -> None:
        """The name key of ``target`` could not be loaded or stored: nothing is sent."""
        message = f"encryption: the name key of {target.name} is not available: {exc}"
        report.error = message
        report.permanent = isinstance(exc, PermanentError)
        self.stats.counters.failures += 1
        self.stats.target(target.name).failed(message)
        attempts = max(i.attempts for i in items)
        delay = retry_delay(attempts, self.retry_backoff)
        await self.state.release(items, retry_at=time.time() + delay, error=message)

    async def _lost_chunks(
        self,
        target: Target,
        lost: list[LedgerEntry],
        items: list[QueueItem],
        report: PassReport,
        *,
        missing: bool = True,
    ) -> None:
        """Ledger rows whose chunks are no longer in the chunk table (a pack was pruned),
        or (``missing=False``) are not stored the way this upload must reference them
        (unencrypted, or sealed under another name key), and whose files were not captured
        this pass: no manifest may point at them. Their rows go, their files are queued to
        be sent again from a fresh capture, and this pass is tried again right after. Only
        missing chunks are an error."""
        if missing:
            message = (
                f"{len(lost)} file(s) point at chunks no longer in {target.name} "
                f"(e.g. {lost[0].path}): sending them again"
            )
        else:
            message = (
                f"{len(lost)} file(s) in {target.name} are not stored under the current "
                "encryption settings: sending them again"
            )
        paths = [e.path for e in lost]
        await self.state.transaction(lambda c: StateDB.write_ledger(c, target.name, [], paths))
        now = time.time()
        for group in sorted({e.group_path for e in lost}):
            await self.state.requeue(group, now, message)
        if missing:
            await self.state.release(items, retry_at=now, error=message)
            report.error = message
            logger.warning(message)
        else:
            await self.state.release(items, retry_at=now)
            logger.info(message)

    async def _failed(
        self,
        target: Target,
        upload_id: str,
        items: list[QueueItem],
        exc: BaseException,
        report: PassReport,
        *,
        begun: bool = True,
    ) -> None:
        """A lost upload: its attempt failed and what it wrote removed (``begun``: it was
        persisted, so something may have been sent), the rows retried later."""
        permanent = isinstance(exc, PermanentError)
        message = str(exc) or type(exc).__name__
        report.error = message
        report.permanent = permanent
        report.source_changed = isinstance(exc, SourceChanged)
        if isinstance(exc, SourceChanged) and exc.in_place is not None:
            self.snap.moved_while_sent(exc.in_place)  # copied next time, not read in place
        if not report.source_changed:  # a file that moved is the store's doing: no failure
            self.stats.counters.failures += 1
            self.stats.target(target.name).failed(message)
        if begun:
            await self._discard(target, upload_id, message)
        else:
            report.upload_id = ""
        attempts = max(i.attempts for i in items)
        delay = PERMANENT_RETRY_SECONDS if permanent else retry_delay(attempts, self.retry_backoff)
        if isinstance(exc, TransientError) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        if report.source_changed:  # captured again at once (a copy, not read in place)
            delay = 0.0
        await self.state.release(items, retry_at=time.time() + delay, error=message)
        self.stats.counters.retries += 1

    async def _discard(self, target: Target, upload_id: str, message: str) -> None:
        """A begun attempt that will not land: failed in the history, what it wrote removed.
        When the state refuses to record the failure (its disk full, as a local outbox on
        the same disk would be), what it wrote is removed all the same before that error
        goes on (the next start's recovery settles the attempt's row)."""
        try:
            await self.state.fail_upload(upload_id, message)
        except Exception:
            with contextlib.suppress(Exception):
                await discard_attempt(self.state, self.discarder, target, upload_id)
            raise
        await discard_attempt(self.state, self.discarder, target, upload_id)

    async def _abandon(self, target: Target, upload_id: str, exc: Exception) -> None:
        """An attempt lost to an error that is not the target's: failed in the history and
        what it wrote removed, as far as the state lets (what it refuses, the next start's
        recovery settles); else the attempt stayed in progress while the daemon ran, its
        row and pack records never pruned, its objects kept from prune."""
        with contextlib.suppress(Exception):
            await self.state.fail_upload(upload_id, str(exc) or type(exc).__name__)
        with contextlib.suppress(Exception):
            await discard_attempt(self.state, self.discarder, target, upload_id)
