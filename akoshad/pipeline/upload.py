"""One upload: a pass's captures -> objects -> ``manifest.json`` last -> commit.

Each upload is a point-in-time snapshot of the whole store: files that changed (by
SHA-256 against the ledger) are written as new objects, unchanged ones point at the
objects of earlier, completed uploads. Objects first, ``manifest.json`` last, then the
ledger, the history and the queue in one state transaction. The attempt is persisted
before any byte is sent, so a crash is recovered at the next start.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import replace

from loguru import logger

from akoshad.backoff import half_jitter_delay
from akoshad.compress import choose_compression
from akoshad.errors import PermanentError, TransientError
from akoshad.manifest.layout import (
    build_manifest,
    encode_manifest,
    manifest_key,
    new_upload_id,
    object_name,
    upload_prefix,
)
from akoshad.names import MEMORIES_NAME
from akoshad.pipeline.capture.snapshot import (
    CapturedFile,
    CaptureResult,
    Snapshotter,
)
from akoshad.pipeline.plan import UploadPlan, attempt_record, manifest_entry, plan_upload
from akoshad.pipeline.recovery import Discarder
from akoshad.pipeline.report import PassReport
from akoshad.pipeline.routes import ExtraObject, MemoriesJson
from akoshad.pipeline.stats import Stats
from akoshad.store.db import LedgerEntry, QueueItem, StateDB
from akoshad.targets.base import StoredObject, Target

# files sent at once: a small file is one request, bound by latency; big ones share the
# target's own bounds (S3: parts in flight, connection pool, memory budget)
UPLOAD_CONCURRENCY = 16
RETRY_CAP_SECONDS = 300.0
PERMANENT_RETRY_SECONDS = 300.0


def retry_delay(attempts: int, base: float, cap: float = RETRY_CAP_SECONDS) -> float:
    """The wait of a queue entry after ``attempts`` failures (equal jitter)."""
    return half_jitter_delay(attempts - 1, base, cap)


class Uploader:
    """Runs drain passes against one file target."""

    def __init__(
        self,
        *,
        state: StateDB,
        snapshotter: Snapshotter,
        system_id: str,
        stats: Stats,
        enable_compression: bool = True,
        enable_deduplication: bool = True,
        retry_backoff_seconds: float = 2.0,
    ) -> None:
        self.state = state
        self.snap = snapshotter
        self.system_id = system_id
        self.stats = stats
        self.enable_compression = enable_compression
        self.enable_deduplication = enable_deduplication
        self.retry_backoff = retry_backoff_seconds
        self.discarder = Discarder(system_id)

    async def upload(
        self,
        target: Target,
        ledger: dict[str, LedgerEntry],
        items: list[QueueItem],
        results: list[CaptureResult],
        report: PassReport,
        memories_json: MemoriesJson | None = None,
    ) -> None:
        """Plan the upload of a pass's captures, send it, commit it (or fail it whole)."""
        plan = plan_upload(results, items, ledger, deduplicate=self.enable_deduplication)
        report.deleted.extend(plan.deleted)
        report.skipped.update(plan.skipped)
        report.retrying.update(plan.retrying)
        report.captures.extend(plan.captured)
        if not plan.changed:
            await self._refresh(target, plan, report)
            return

        upload_id = new_upload_id(after=await self.state.latest_upload_id())
        to_send = await self._rows_to_send(target, plan, upload_id)
        await self.state.begin_upload(
            upload_id, target.name, target.name, attempt_record(plan, to_send)
        )
        report.upload_id = upload_id
        # every entry of this upload that points at an earlier upload's object: files not
        # looked at (unchanged on disk) and captured files whose SHA-256 was unchanged
        report.deduplicated = len(plan.kept) + len(plan.reused)
        extras: list[ExtraObject] = []
        try:
            sent_rows, extras = await self._send_all(
                target, upload_id, plan, to_send, report, memories_json
            )
        except _SendFailed as failed:
            if memories_json is not None and failed.extras:
                memories_json.failed(upload_id)
            await self._failed(target, upload_id, items, failed.error, report)
            return
        await self._commit(target, upload_id, plan, sent_rows, report)
        if memories_json is not None and extras:
            await memories_json.committed(upload_id)

    async def _refresh(self, target: Target, plan: UploadPlan, report: PassReport) -> None:
        """Nothing changed (at most new skips of files never uploaded): refresh the stat
        identities, record the skips, finish the queue rows; no upload."""
        skipped = dict(report.skipped)

        def refresh(c: sqlite3.Connection) -> None:
            StateDB.write_ledger(c, target.name, plan.reused, [])
            StateDB.record_skipped(c, skipped)

        await self.state.transaction(refresh)
        report.deduplicated = len(plan.reused)  # captured, found unchanged, not sent
        self.stats.counters.deduplicated += report.deduplicated
        await self._finish_items(plan.done, plan.retry, report)

    async def _rows_to_send(
        self, target: Target, plan: UploadPlan, upload_id: str
    ) -> list[tuple[LedgerEntry, CapturedFile]]:
        """The ledger rows of the files to send: encoding chosen, object names taken."""
        own_prefix = upload_prefix(self.system_id, upload_id)
        taken: set[str] = set()
        out: list[tuple[LedgerEntry, CapturedFile]] = []
        for group, f in plan.send:
            compression = await asyncio.to_thread(
                choose_compression, f.staged, self.enable_compression
            )
            name = object_name(f.path, compression, taken)
            row = LedgerEntry(
                target=target.name,
                path=f.path,
                group_path=group,
                size=f.size,
                live_size=f.live.size,
                mtime_ns=f.live.mtime_ns,
                ctime_ns=f.live.ctime_ns,
                inode=f.live.inode,
                sha256=f.sha256 or "",  # unhashed in-place files: hashed while sent
                key=own_prefix + name,
                name=name,
                stored_size=-1,
                compression=compression,
                kind=f.kind,
                upload_id=upload_id,
                facts=None if f.facts is None else f.facts.to_json(),
                mode=f.mode,
            )
            out.append((row, f))
        return out

    async def _send_all(
        self,
        target: Target,
        upload_id: str,
        plan: UploadPlan,
        to_send: list[tuple[LedgerEntry, CapturedFile]],
        report: PassReport,
        memories_json: MemoriesJson | None,
    ) -> tuple[list[LedgerEntry], list[ExtraObject]]:
        """Objects, then the extra objects, then ``manifest.json`` last. Raises
        ``_SendFailed`` (carrying the extras made) when the upload is lost."""
        own_prefix = upload_prefix(self.system_id, upload_id)
        extras: list[ExtraObject] = []
        try:
            # the extra objects (memories.json: a thread's work) are made while files go
            # out; both are awaited to their end
            sent, made = await asyncio.gather(
                self._send_objects(target, to_send, report),
                memories_json.build(plan.captured, upload_id) if memories_json else _no_extras(),
                return_exceptions=True,
            )
            if not isinstance(made, BaseException):
                extras = made
            if isinstance(sent, BaseException):
                raise sent
            if isinstance(made, BaseException):
                raise made
            for _, captured_file in to_send:
                if captured_file.in_place and not await asyncio.to_thread(
                    captured_file.still_as_captured
                ):
                    raise TransientError(
                        f"{captured_file.path} changed while it was being uploaded"
                    )
            for extra in extras:  # streamed from its file: never whole in memory
                put = await target.put_file(own_prefix + extra.name, extra.path, "none")
                report.bytes_sent += put.bytes_sent
            entries = [manifest_entry(r) for r in [*plan.kept, *plan.reused, *sent]]
            manifest = build_manifest(
                system_id=self.system_id,
                upload_id=upload_id,
                entries=entries,
                skipped={**await self.state.skipped(), **report.skipped},
                conversation_count=sum(x.conversation_count for x in extras),
                has_memories=any(x.name == MEMORIES_NAME for x in extras),
            )
            report.bytes_sent += await target.put_bytes(
                manifest_key(self.system_id, upload_id),
                encode_manifest(manifest),
                "application/json",
            )
        except (TransientError, PermanentError, OSError) as exc:
            raise _SendFailed(exc, extras) from exc
        return sent, extras

    async def _commit(
        self,
        target: Target,
        upload_id: str,
        plan: UploadPlan,
        sent_rows: list[LedgerEntry],
        report: PassReport,
    ) -> None:
        """The manifest landed: ledger, history and skips in one transaction, then the
        counters move and the queue rows finish."""
        report.files_uploaded = [r.path for r in sent_rows]

        def commit(c: sqlite3.Connection) -> None:
            StateDB.write_ledger(c, target.name, [*plan.reused, *sent_rows], plan.removed)
            StateDB.finish_upload(
                c,
                upload_id=upload_id,
                outcome="completed",
                files=len(sent_rows),
                bytes_sent=report.bytes_sent,
            )
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
            upload_id,
            target.name,
            len(sent_rows),
            report.deduplicated,
            len(report.deleted),
            report.bytes_sent,
        )

    async def _send_objects(
        self,
        target: Target,
        to_send: list[tuple[LedgerEntry, CapturedFile]],
        report: PassReport,
    ) -> list[LedgerEntry]:
        sem = asyncio.Semaphore(UPLOAD_CONCURRENCY)
        failure: list[BaseException] = []

        async def one(row: LedgerEntry, captured: CapturedFile) -> LedgerEntry:
            async with sem:
                if failure:  # one put failed: the upload is lost, start no more
                    raise failure[0]
                self.stats.in_flight += 1
                try:
                    stored = await _put_checked(target, row, captured)
                except BaseException as exc:
                    failure.append(exc)
                    raise
                finally:
                    self.stats.in_flight -= 1
            report.bytes_uploaded += row.size
            report.bytes_sent += stored.bytes_sent
            self.stats.progressed()
            return replace(
                row,
                sha256=stored.sha256,
                stored_size=stored.stored_size,
                compression=stored.compression,
            )

        # Every put is awaited to its end, also when one fails: a put running in a worker
        # thread cannot be cancelled, and its object must not land after the cleanup.
        results = await asyncio.gather(*(one(r, f) for r, f in to_send), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, LedgerEntry)]

    async def _failed(
        self,
        target: Target,
        upload_id: str,
        items: list[QueueItem],
        exc: BaseException,
        report: PassReport,
    ) -> None:
        permanent = isinstance(exc, PermanentError)
        message = str(exc) or type(exc).__name__
        report.error = message
        report.permanent = permanent
        self.stats.counters.failures += 1
        self.stats.target(target.name).failed(message)
        await self.state.fail_upload(upload_id, message)
        await self.discarder.discard(target, upload_id)
        attempts = max(i.attempts for i in items)
        delay = PERMANENT_RETRY_SECONDS if permanent else retry_delay(attempts, self.retry_backoff)
        if isinstance(exc, TransientError) and exc.retry_after:
            delay = max(delay, exc.retry_after)
        await self.state.release(items, retry_at=time.time() + delay, error=message)
        self.stats.counters.retries += 1

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


async def _put_checked(target: Target, row: LedgerEntry, captured: CapturedFile) -> StoredObject:
    """Send one file. The receipt's SHA-256 (taken by the target in the pass that sends the
    file) is the hash of an unhashed (in-place) capture; for a hashed one it must equal the
    capture's, or the bytes sent are not the bytes captured (the upload fails and is tried
    again)."""
    stored = await target.put_file(row.key, captured.staged, row.compression)
    if captured.sha256 is not None and stored.sha256 != captured.sha256:
        raise TransientError(f"{captured.path} changed between its capture and its upload")
    return stored


class _SendFailed(Exception):
    """An upload was lost while sending; carries the extras already made."""

    def __init__(self, error: BaseException, extras: list[ExtraObject]) -> None:
        super().__init__(str(error))
        self.error = error
        self.extras = extras


async def _no_extras() -> list[ExtraObject]:
    return []
