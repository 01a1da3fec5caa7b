"""Retention applied: one prune (:func:`prune_target`), for ``akoshad prune`` and the
daemon's prune every ``retention.prune_interval_hours`` (0 = only by hand; the daemon's
schedule is ``prune_scheduler``).

A prune runs on the primary target (the bucket when one is set, else the local outbox)
with ``storage.prune_exec.run_prune``: the uploads the ``retention:`` policy drops lose
their manifests first, then every object no kept upload references is deleted. It runs
only on the owner of the system id (checked against the target right before), under the
daemon's pass lock (no upload is in progress meanwhile; uploads interrupted by a crash are
left alone for a day), or, without a daemon, under the state directory's lock. The whole
objects of format-1 uploads this machine's ledger points at are protected as well (the next
upload points at them); packs are not (a repack must be able to replace them): the chunk
table follows them through the hooks (``ledger_hooks``: a pack's chunks are forgotten before
it is deleted, moved chunks get their new locations), and the known documents are forgotten
before a prune deletes anything (so also when it is killed midway), so the next upload
writes its index parts and chunk lists again.

``retention.enabled: false`` keeps everything: nothing is read or deleted. The outcome of
each prune (not of a dry run) is kept in the state as ``last_prune`` ``{at, ok,
uploads_kept, uploads_removed, objects_deleted, bytes_freed, problems}`` (``status``,
``/metrics``), announced as the ``prune`` event (webhooks) and logged; what a prune
deleted is counted in the state after each batch (``prune_progress``), so that one stopped
part way, or killed before it recorded its outcome, still tells it. A prune that has not
finished within :data:`DEADLINE_SECONDS` (a target answering a byte at a time) stops there,
as a failed prune: it holds the pass lock, and uploads must not wait on it for ever.

Encrypted uploads: a prune reads the readable list of the objects each references
(``metadata.index.objects``), no identity needed. Those of an earlier akoshad have none: it
reads their sealed index parts and chunk lists with the identity
(``encryption.identity_file``). Without it, a prune that meets one deletes nothing and
records ``needs_identity`` (one line saying so); the daemon then tries again only after
the full interval, not every few minutes. Their packs are repacked only when the upload's
documents were written for the recipients configured now (``Resealing``: the rewritten
documents are sealed to the same recipients) and can be opened: with the identity, or
from the copies this machine kept of the documents it sealed (``document_copies``: the
daemon needs no identity for its own uploads); otherwise a pack goes once no kept upload
references it, and an encrypted target may hold more than ``STORED_BOUND`` times what its
kept uploads reference.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from loguru import logger

from akoshad.config import Settings
from akoshad.errors import PermanentError, TransientError
from akoshad.pipeline.ownership import OwnerGate
from akoshad.runtime.prune_progress import PruneProgress, fold_interrupted
from akoshad.runtime.prune_report import disabled_result, other_systems_note
from akoshad.storage.crypto import Identities, IdentityError, IdentityNeeded
from akoshad.storage.document_copies import DocumentCopies
from akoshad.storage.errors import StorageError
from akoshad.storage.name_key import NameKeyCache, find_name_key
from akoshad.storage.owner import NotOwner
from akoshad.storage.refs import ChunkRef
from akoshad.storage.sealed_documents import Resealing
from akoshad.store.db import StateDB
from akoshad.targets import Target

if TYPE_CHECKING:  # the prune engine is imported when the first prune runs
    from akoshad.storage.prune_result import PruneHooks, PruneResult

# A prune holds the pass lock (uploads wait): one that a server answering a byte at a time
# keeps from finishing gives up after this long, as a failed prune (tried again later).
DEADLINE_SECONDS = 3600.0


def _identities(settings: Settings) -> tuple[Identities | None, str]:
    """The identity when ``encryption.identity_file`` is set and readable, else None with
    why it is not usable ("" when none is set): a prune that needs it says so."""
    if settings.encryption.identity_file is None:
        return None, ""
    try:
        return settings.encryption.load_identities(), ""  # its mode is warned of at start
    except IdentityError as exc:
        logger.warning("prune: the identity is not usable: {}", exc)
        return None, str(exc)


async def _resealing(
    settings: Settings, target: Target, identities: Identities | None
) -> Resealing | None:
    """What a repack seals rewritten documents with: the recipients configured now, their
    name key (never made here: the state's, else one the identity opens in the target) and
    the copies of the documents this machine sealed (``document_copies``: they open the
    documents without the identity). None without encryption or the key."""
    enc = settings.encryption
    if not enc.enabled:
        return None
    recipients = enc.parsed_recipients()
    cache = NameKeyCache(settings.state_dir)
    sid = settings.cloud_sync.system_id
    key = await find_name_key(target, sid, recipients, identities, cache)
    copies = DocumentCopies(settings.state_dir, target.name)
    return None if key is None else Resealing(key, recipients, copies)


def ledger_hooks(
    state: StateDB,
    target: str,
    deleting: set[str] | None = None,
    progress: PruneProgress | None = None,
) -> PruneHooks:
    """The prune hooks that keep the chunk table true: a pack's chunks are forgotten before
    the pack is deleted (no new upload dedupes against it), and chunks a repack moved get
    their new locations (ledger rows hold chunk identities only, so they follow); what
    they and the forgotten documents committed is fsynced before each deletion, and
    ``deleting`` gets the target's name once one began; ``progress`` counts (in the state)
    what each batch deleted."""
    from akoshad.storage.prune_result import PruneHooks

    async def forget_pack(pack_key: str) -> None:
        n = await state.forget_pack(target, pack_key)
        logger.debug("prune deletes pack {} ({} chunk(s) forgotten)", pack_key, n)

    async def record_chunks(refs: Mapping[str, ChunkRef]) -> None:
        await state.record_chunks(target, refs)

    async def before_delete() -> None:
        await state.sync()
        if deleting is not None:
            deleting.add(target)

    return PruneHooks(
        forget_pack=forget_pack,
        record_chunks=record_chunks,
        before_delete=before_delete,
        deleted=None if progress is None else progress.deleted,
    )


def _whole_objects(c: sqlite3.Connection, target: str) -> set[str]:
    """The keys of the whole objects (format-1 files: no chunks) the ledger of ``target``
    points at; only those, not the ledger whole (~1 KB a file of a large store)."""
    rows = c.execute(
        "SELECT key FROM ledger WHERE target = ? AND chunks IS NULL AND key IS NOT NULL "
        "AND key != ''",
        (target,),
    )
    return {str(r[0]) for r in rows}


async def prune_target(
    settings: Settings,
    state: StateDB,
    target: Target,
    gate: OwnerGate,
    *,
    dry_run: bool,
    hooks: PruneHooks | None = None,
) -> dict[str, Any]:
    """One prune of ``target`` (the caller holds the pass lock or the state lock): the
    result of ``prune --json``. Raises :class:`NotOwner` (nothing done) when another
    machine owns the system id; any other failure is in the result (``ok`` false,
    ``problems``), and what was done so far leaves every kept upload restorable. The
    caller then has what it found missing sent again (``drill_heal.send_missing_again``)."""
    from akoshad.storage.prune_exec import run_prune

    policy = settings.retention
    if not policy.enabled:
        return {**disabled_result(dry_run), "at": time.time()}
    system_id = settings.cloud_sync.system_id
    whole = await state.transaction(lambda c: _whole_objects(c, target.name))
    in_progress = [u for u, name, _ in await state.in_progress_uploads() if name == target.name]
    finished = await state.transaction(
        lambda c: [
            r[0]
            for r in c.execute(
                "SELECT upload_id FROM uploads WHERE target = ? AND outcome = 'completed'",
                (target.name,),
            )
        ]
    )
    result: dict[str, Any] = {"enabled": True, "dry_run": dry_run, "policy": policy.describe()}
    # one killed before it recorded its outcome: recorded now, with what it deleted
    interrupted = None if dry_run else await fold_interrupted(state)
    progress = PruneProgress(state, system_id)
    if not dry_run:  # before anything is deleted: a prune killed midway must not leave
        # the state naming documents it swept (the next upload would not store them again)
        await state.forget_documents(target.name)
    identities, unusable = await asyncio.to_thread(_identities, settings)
    deadline = asyncio.timeout(DEADLINE_SECONDS)
    deleting: set[str] = set()  # a deletion began: a failure after it stopped part way
    try:
        async with deadline:
            done = await run_prune(
                target,
                system_id,
                policy,
                staging_dir=settings.state_dir,
                dry_run=dry_run,
                ownership=await gate.ownership(target),
                hooks=hooks or ledger_hooks(state, target.name, deleting, progress),
                in_progress=in_progress,
                # whole objects of format-1 uploads the next upload points at; packs are
                # not protected (a repack must be able to replace them): the chunk table
                # follows them through the hooks, and the newest upload, always kept,
                # references them
                protected=whole,
                finished=finished,
                identities=identities,
                resealing=await _resealing(settings, target, identities),
                last_made=await state.transaction(lambda c: StateDB.last_upload_in(c, target.name)),
            )
            await _after_prune(target, result, done, dry_run=dry_run)
            if not done.uploads_kept:  # none of this system id: another one meant?
                note = await other_systems_note(target, system_id)
                result.update({"note": note} if note else {})
    except NotOwner:
        raise
    except IdentityError as exc:
        if unusable and isinstance(exc, IdentityNeeded):  # set, yet it could not be read
            exc = IdentityError(f"{exc.args[0]}, and {unusable}")
        result.update(ok=False, needs_identity=True, problems=[f"{exc}; nothing deleted"])
    except TimeoutError as exc:  # the deadline's, or one a request raised as it is
        late = (
            f"the prune did not finish within {DEADLINE_SECONDS:g} s (the target answers "
            "too slowly?): what it did leaves every kept upload restorable, and the next "
            "prune goes on from there"
        )
        result.update(ok=False, problems=[late if deadline.expired() else str(exc) or late])
    except (StorageError, TransientError, PermanentError, OSError) as exc:
        # PruneError, and any damage a repack meets (a corrupt pack or chunk): recorded as
        # the prune's outcome (last_prune, the log), not lost
        result.update(ok=False, problems=[str(exc)])
    if deleting and "uploads_kept" not in result:  # what it did delete, not "removed 0"
        result.update(progress.counts(), stopped_part_way=True)
    if not dry_run:  # its outcome is recorded by the caller, with these counts
        await progress.done()
    if interrupted is not None:
        result["interrupted_prune"] = interrupted
    result["at"] = time.time()
    return result


async def _after_prune(
    target: Target, result: dict[str, Any], done: PruneResult, *, dry_run: bool
) -> None:
    """Fill ``result`` from a finished prune (``done``: its ``PruneResult``), abort the
    multipart uploads left under the system (not in a dry run), note bucket versioning."""
    result.update(done.to_json())
    problems = [f"a kept upload references {key}, which is missing" for key in done.missing]
    problems += [
        f"kept {line}: it cannot be restored whole; every object stored up to it stays, "
        "so nothing it may still use is deleted, and the rest is pruned"
        for line in done.unreadable
    ]
    result.update(ok=not problems, problems=problems)
    if not dry_run:
        result["multipart_aborted"] = await _abort_leftover_uploads(target)
    versioning = await _bucket_versioning(target)
    if versioning is not None:
        result["bucket_versioning"] = versioning


@runtime_checkable
class _LeftoverUploads(Protocol):
    async def abort_leftover_uploads(self) -> int: ...


async def _abort_leftover_uploads(target: Target) -> int:
    """The owner, between passes (the pass lock, or the state's lock: no upload of this
    machine is in progress): abort the multipart uploads left under its prefix (a lost reply
    to a create, an abort that failed), which a daemon that runs for months would otherwise
    keep paying for until its next start. Best effort: a failure is logged."""
    if not isinstance(target, _LeftoverUploads):
        return 0
    try:
        return await target.abort_leftover_uploads()
    except (TransientError, PermanentError, OSError) as exc:
        logger.warning("prune: could not abort leftover multipart uploads: {}", exc)
        return 0


@runtime_checkable
class _Versioned(Protocol):
    async def bucket_versioning(self) -> str | None: ...


async def _bucket_versioning(target: Target) -> str | None:
    """The bucket's versioning status, if it has one (``Enabled``, ``Suspended``): there
    a delete leaves the object's bytes stored as a noncurrent version. Best effort: a
    server or a policy that does not answer counts as none (logged)."""
    if not isinstance(target, _Versioned):
        return None
    try:
        return await target.bucket_versioning()
    except (TransientError, PermanentError, OSError) as exc:
        logger.debug("prune: the bucket's versioning is unknown: {}", exc)
        return None
