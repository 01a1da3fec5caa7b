"""One upload: a pass's captures -> packs -> documents -> ``manifest.json`` last -> commit.

Each upload is a point-in-time snapshot of the whole store in bucket format 2: files that
changed (by SHA-256 against the ledger) are cut into chunks, and the chunks the target does
not hold yet are sent in packs (``packing``); unchanged files keep pointing at their chunks
(or, after an upgrade, at the whole objects of earlier format-1 uploads). Packs first, then
the shared documents (index parts, chunk lists) and ``memories.json``, ``manifest.json``
last, then the ledger, the chunk table, the history and the queue in one state
transaction. The attempt is persisted before any byte is sent (its packs as they are
sealed), so a crash is recovered at the next start. With encryption on (a
:class:`~akoshad.pipeline.sealing.SealingSource`), chunks, documents and (with
``encrypt_memories``) ``memories.json`` are sealed, and only chunks sealed under the
target's name key are reused: a file stored otherwise is sent again (``sealing``).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from loguru import logger

from akoshad.errors import PermanentError, TransientError
from akoshad.manifest.layout import current_id_time, new_upload_id, upload_prefix
from akoshad.names import MEMORIES_NAME
from akoshad.pipeline.attempt import Attempt, SendFailed, no_extras
from akoshad.pipeline.capture.snapshot import Captured, CaptureResult, Snapshotter
from akoshad.pipeline.cloud_memories import StreamTo
from akoshad.pipeline.manifest_out import put_manifest
from akoshad.pipeline.packing import PackSender, SentFile, clear_staging, fresh_staging
from akoshad.pipeline.plan import (
    UploadPlan,
    attempt_record,
    captured_paths,
    plan_upload,
    resolve_ledger,
    sent_file,
    sent_rows,
    stored_file,
)
from akoshad.pipeline.recovery import Discarder
from akoshad.pipeline.report import PassReport
from akoshad.pipeline.routes import MemoriesJson
from akoshad.pipeline.sealing import SealingSource, in_scope, label_of
from akoshad.pipeline.send_gate import FirstSend, OwnerRefused, SendGate, held_back
from akoshad.pipeline.stats import Stats
from akoshad.pipeline.upload_failures import UploadFailures, retry_delay
from akoshad.storage.stored import StoredFile
from akoshad.store.db import LedgerEntry, QueueItem, StateDB
from akoshad.targets.base import Target
from akoshad.targets.growing import GrowingTarget


def _stream_to(
    target: Target, attempt: Attempt, first: FirstSend, system_id: str
) -> StreamTo | None:
    """Where ``memories.json`` is sent while it is built: a target that can (S3), unless it
    is sealed (``encrypt_memories``: sealed once whole, then sent)."""
    sealing = attempt.sealing
    if not isinstance(target, GrowingTarget) or (sealing is not None and sealing.encrypt_memories):
        return None
    return StreamTo(target, upload_prefix(system_id, attempt.upload_id) + MEMORIES_NAME, first)


class Uploader(UploadFailures):
    """Runs drain passes against one file target (what settles a failed upload:
    :class:`~akoshad.pipeline.upload_failures.UploadFailures`)."""

    def __init__(
        self,
        *,
        state: StateDB,
        snapshotter: Snapshotter,
        system_id: str,
        stats: Stats,
        staging_dir: Path,
        enable_compression: bool = True,
        enable_deduplication: bool = True,
        retry_backoff_seconds: float = 2.0,
        sealing: SealingSource | None = None,
    ) -> None:
        self.state = state
        self.snap = snapshotter
        self.system_id = system_id
        self.stats = stats
        self.enable_compression = enable_compression
        self.enable_deduplication = enable_deduplication
        self.retry_backoff = retry_backoff_seconds
        self.discarder = Discarder(system_id)
        self.staging_dir = staging_dir  # private pack files of the upload being sent
        self.sealing = sealing
        self._dated_back_logged: float | None = None  # monotonic: the last such warning

    async def _warn_if_dated_back(self, upload_id: str, target: str) -> None:
        """Log (at most once an hour) that ``upload_id`` sorts before an upload made earlier
        to ``target``: the clock went back, and ``restore --latest`` anywhere takes that
        older store."""
        greatest = await self.state.greatest_completed(target)
        now = time.monotonic()
        if greatest is None or upload_id > greatest:
            return
        if self._dated_back_logged is not None and now - self._dated_back_logged < 3600:
            return
        self._dated_back_logged = now
        logger.warning(
            "upload {} sorts before {}, made earlier: this machine's clock went back (set "
            "back, or set right after it ran ahead), so `restore --latest` takes {}, an older "
            "store, wherever the clock has passed its time, until an upload sorts after it; "
            "check the clock",
            upload_id,
            greatest,
            greatest,
        )

    async def upload(
        self,
        target: Target,
        ledger: dict[str, LedgerEntry],
        items: list[QueueItem],
        results: list[CaptureResult],
        report: PassReport,
        memories_json: MemoriesJson | None = None,
        gate: SendGate | None = None,
    ) -> None:
        """Plan the upload of a pass's captures, send it, commit it (or fail it whole).
        ``gate``: asked right before the first request that writes to ``target`` (packs are
        made meanwhile); refused, nothing is sent or recorded and the rows wait."""
        if self.sealing is not None and await self._held_back(gate, items, report):
            return  # the name key may be stored in the target: asked first
        try:
            sealing = await self.sealing.for_target(target) if self.sealing else None
        except (TransientError, PermanentError) as exc:
            await self._no_key(target, items, exc, report)
            return
        full = await self.state.chunks_of(target.name)
        table = await asyncio.to_thread(in_scope, full, sealing)
        usable, stale = resolve_ledger(ledger, table, whole_ok=sealing is None)
        claimed = {r.group for r in results}
        lost = [e for e in stale if e.group_path not in claimed]
        if lost:
            if await self._held_back(gate, items, report):
                return
            _, missing = resolve_ledger({e.path: e for e in lost}, full)
            await self._lost_chunks(target, lost, items, report, missing=bool(missing))
            return
        plan = plan_upload(results, items, usable, deduplicate=self.enable_deduplication)
        sending = {f.path for _, f in plan.send}
        plan.removed.extend(e.path for e in stale if e.path not in sending)
        # a drill or prune found shared documents lost: a new upload writes them all again
        rewrite = await self.state.documents_rewrite_asked(target.name)
        plan.changed = plan.changed or bool(stale) or (rewrite and bool(usable))
        report.deleted.extend(plan.deleted)
        report.skipped.update(plan.skipped)
        report.retrying.update(plan.retrying)
        self.stats.note_captures(plan.retrying, (i.path for i in plan.done))
        report.captures.extend(plan.captured)
        plan.changed = plan.changed or await _memories_again(memories_json, plan.captured)
        if not plan.changed:
            if not await self._held_back(gate, items, report):
                await self._refresh(target, plan, report, label_of(sealing))
            return

        upload_id = new_upload_id(after=await self.state.latest_upload_id(current_id_time()))
        await self._warn_if_dated_back(upload_id, target.name)
        record = attempt_record(plan)
        first = FirstSend(
            gate, lambda: self.state.begin_upload(upload_id, target.name, target.name, record)
        )
        if gate is None:
            await first()  # the attempt is persisted before anything else
        report.upload_id = upload_id
        # every entry of this upload that points at an earlier upload's chunks or object:
        # files not looked at (unchanged on disk) and captured files whose SHA-256 was unchanged
        report.deduplicated = len(plan.kept) + len(plan.reused)
        attempt = Attempt(upload_id, plan, table, sealing)
        sending_now = len(plan.send)  # status's in_flight: the files this upload sends
        self.stats.in_flight += sending_now
        try:
            await self._send_all(target, attempt, report, memories_json, first)
        except SendFailed as failed:
            if memories_json is not None:
                memories_json.failed(upload_id)
            if gate is not None and isinstance(failed.error, OwnerRefused):
                await self._refused(target, upload_id, items, failed.error, report, gate, first)
                return
            await self._failed(target, upload_id, items, failed.error, report, begun=first.begun)
            return
        except Exception as exc:  # not the target's doing (the state refused a write, a
            # bug): the attempt is settled like a lost one, then the error goes on (the
            # drain hands the rows back)
            if memories_json is not None:
                memories_json.failed(upload_id)
            if first.begun and not attempt.landed:  # a landed one: recovery commits it
                await self._abandon(target, upload_id, exc)
            raise
        finally:
            self.stats.in_flight -= sending_now
        await self._commit(target, attempt, report)
        if memories_json is not None:
            await memories_json.committed(upload_id)

    async def _held_back(
        self, gate: SendGate | None, items: list[QueueItem], report: PassReport
    ) -> bool:
        """``send_gate.held_back``; a check the target did not answer counts as a failure."""
        held = await held_back(self.state, gate, items, report)
        if held and not report.waiting:
            self.stats.counters.failures += 1
        return held

    async def _refresh(
        self, target: Target, plan: UploadPlan, report: PassReport, label: str
    ) -> None:
        """Nothing changed (at most new skips of files never uploaded): refresh the stat
        identities, record the skips, finish the queue rows; no upload. Every ledger row
        was usable, so the ledger is sealed as ``label`` says (recorded: a start after a
        change of the encryption that an upload recovered at start already followed does
        not send the store again at every start)."""
        skipped = dict(report.skipped)

        def refresh(c: sqlite3.Connection) -> None:
            StateDB.write_ledger(c, target.name, plan.reused, [])
            StateDB.record_sealing(c, target.name, label)
            StateDB.forget_skipped(c, captured_paths(plan))
            StateDB.record_skipped(c, skipped)

        await self.state.transaction(refresh)
        report.deduplicated = len(plan.reused)  # captured, found unchanged, not sent
        self.stats.counters.deduplicated += report.deduplicated
        await self._finish_items(plan.done, plan.retry, report)

    async def _send_all(
        self,
        target: Target,
        attempt: Attempt,
        report: PassReport,
        memories_json: MemoriesJson | None,
        first: FirstSend,
    ) -> None:
        """Packs (and the extra objects, made meanwhile), then the documents, then
        ``manifest.json`` last; ``first`` before the first request that writes. Raises
        ``SendFailed`` (carrying the extras made) when the upload is lost."""
        staging = await asyncio.to_thread(fresh_staging, self.staging_dir)
        sender = PackSender(
            target=target,
            state=self.state,
            upload_id=attempt.upload_id,
            system_id=self.system_id,
            staging_dir=staging,
            known=attempt.table,
            stats=self.stats,
            report=report,
            compression=self.enable_compression,
            deduplicate=self.enable_deduplication,
            sealing=attempt.sealing,
            before_send=first,
        )
        plan = attempt.plan
        try:
            # the extra objects (memories.json: a thread's work) are made while files go
            # out; both are awaited to their end
            sent, made = await asyncio.gather(
                sender.send(plan.send),
                memories_json.build(
                    plan.captured,
                    attempt.upload_id,
                    _stream_to(target, attempt, first, self.system_id),
                )
                if memories_json
                else no_extras(),
                return_exceptions=True,
            )
            if not isinstance(made, BaseException):
                attempt.extras = made
            if isinstance(sent, BaseException):
                raise sent
            if isinstance(made, BaseException):
                raise made
            attempt.new_refs = sender.new_refs
            await first()  # no pack was sent: the gate is asked here
            await first.again()  # a takeover while the packs went out: no manifest
            await self._put_manifest(target, attempt, sent, report)
        except (TransientError, PermanentError, OSError) as exc:
            raise SendFailed(exc, attempt.extras) from exc
        finally:
            await asyncio.to_thread(clear_staging, staging)

    async def _put_manifest(
        self, target: Target, attempt: Attempt, sent: list[SentFile], report: PassReport
    ) -> None:
        """The extras, the documents and the manifest (last); the sent files' ledger rows
        are made meanwhile, in a thread (the commit needs them, the manifest does not)."""
        table = {**attempt.table, **attempt.new_refs}
        files = [sent_file(s, table) for s in sent]
        for row in [*attempt.plan.kept, *attempt.plan.reused]:
            stored = stored_file(row, table)
            if stored is None:  # resolve_ledger let only resolvable rows through
                raise TransientError(f"{row.path}: its chunks are not in the chunk table")
            files.append(stored)
        rows = asyncio.create_task(
            asyncio.to_thread(sent_rows, target.name, attempt.upload_id, sent, files)
        )
        try:
            await self._put_documents(target, attempt, files, report)
        except BaseException:
            await asyncio.gather(rows, return_exceptions=True)
            raise
        attempt.rows = await rows

    async def _put_documents(
        self, target: Target, attempt: Attempt, files: list[StoredFile], report: PassReport
    ) -> None:
        """The extras, the documents (index parts, chunk lists) and the manifest, last. A
        file whose capture failed (tried again) and that no upload holds yet is listed in
        ``metadata.skipped`` with its reason: the upload says what it lacks."""
        retrying = report.retrying  # a set of these few, not of every path (100,000)
        held = {f.path for f in files if f.path in retrying} if retrying else set()
        never = {p: why for p, why in report.retrying.items() if p not in held}
        skipped = {**never, **await self.state.skipped(), **report.skipped}
        known = await self.state.known_documents(target.name)
        await put_manifest(
            target, self.system_id, attempt, files, report, skipped=skipped, known=known
        )
        attempt.landed = True

    async def _commit(self, target: Target, attempt: Attempt, report: PassReport) -> None:
        """The manifest landed: ledger, chunk table, documents, history and skips in one
        transaction, then the counters move and the queue rows finish."""
        plan, sent_rows = attempt.plan, attempt.rows
        report.files_uploaded = [r.path for r in sent_rows]

        def commit(c: sqlite3.Connection) -> None:
            StateDB.write_ledger(c, target.name, [*plan.reused, *sent_rows], plan.removed)
            StateDB.write_chunks(c, target.name, attempt.new_refs)
            StateDB.record_sealing(c, target.name, label_of(attempt.sealing))
            StateDB.set_documents(c, target.name, attempt.documents)
            StateDB.forget_upload_packs(c, attempt.upload_id)
            StateDB.finish_upload(
                c,
                upload_id=attempt.upload_id,
                outcome="completed",
                files=len(sent_rows),
                bytes_sent=report.bytes_sent,
            )
            StateDB.forget_skipped(c, captured_paths(plan))
            StateDB.record_skipped(c, report.skipped)
            StateDB.prune_history(c)

        await self.state.transaction(commit)
        self.stats.counters.files_uploaded += len(sent_rows)
        self.stats.counters.bytes_uploaded += report.bytes_uploaded
        self.stats.counters.bytes_sent += report.bytes_sent
        self.stats.counters.deduplicated += report.deduplicated
        self.stats.target(target.name).ok()
        self.discarder.ok()
        self.stats.progressed()
        await self._finish_items(plan.done, plan.retry, report)
        logger.info(
            "upload {} to {}: {} file(s) sent, {} unchanged, {} deleted, {} bytes",
            attempt.upload_id,
            target.name,
            len(sent_rows),
            report.deduplicated,
            len(report.deleted),
            report.bytes_sent,
        )

    async def _finish_items(
        self, done: list[QueueItem], retry: list[QueueItem], report: PassReport
    ) -> None:
        if done:
            await self.state.release(done, retry_at=None)
        for item in retry:
            await self.state.release(
                [item],
                retry_at=time.time() + retry_delay(item.attempts, self.retry_backoff),
                error=report.retrying.get(item.path),
            )
        if retry:
            self.stats.counters.retries += len(retry)
        self.stats.progressed()


async def _memories_again(memories_json: MemoriesJson | None, captured: list[Captured]) -> bool:
    """Whether an upload is due for the memories alone: they go up in a new form now
    (``MemoriesJson.at_start``) and ``reflection.duckdb`` is captured."""
    return memories_json is not None and await memories_json.carries_all_again(captured)
