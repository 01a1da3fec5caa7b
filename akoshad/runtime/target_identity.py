"""What the state knows of a target holds only while the target is the same place.

The ledger, the chunk table and the shared documents of a target are kept under its name
(``cloud``, ``local``). Pointing that name at another bucket, endpoint or directory, or
uploading under another ``system_id``, would have the next pass find "nothing changed"
(exit 0) and later uploads point at objects the new place does not hold: no usable backup
there, and every sign of one. So the state records each target's identity (a hash of the
endpoint, bucket or directory and the system id: nothing readable, no credentials). At
start, a target whose identity changed is forgotten for what it was, in one transaction:
its ledger, chunks and documents go, its uploads on record stop counting (status, the
recovery of an interrupted one, the memories its ``memories.json`` carried, the last drill
and prune of the primary target), and the new identity is recorded; the caller then seeds
the primary target's ledger from the newest upload already in the new place (none: every
file is sent). A state without a record (new, or kept by an earlier version) adopts the
current identity.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Iterable

from loguru import logger

from akoshad.akosha.rejections import REJECTED_PREFIX
from akoshad.config import Settings
from akoshad.events import EventBus
from akoshad.pipeline.recovery import Recovery
from akoshad.pipeline.stats import Stats
from akoshad.restore.drill_dirs import KV_LAST as KV_LAST_DRILL
from akoshad.restore.drill_dirs import KV_LAST_GOOD as KV_LAST_GOOD_DRILL
from akoshad.runtime.prune_progress import KV_PROGRESS as KV_PRUNE_PROGRESS
from akoshad.runtime.prune_report import KV_LAST as KV_LAST_PRUNE
from akoshad.store.chunks import KV_REWRITE, ChunkOps
from akoshad.store.db import StateDB
from akoshad.store.ledger import KV_COMPARE_ALL, LedgerOps
from akoshad.store.places import (
    KV_AKOSHA,
    KV_IDENTITY,
    akosha_identity,
    manifest_gone,
    recorded_place,
    target_identity,
)
from akoshad.targets.base import Target
from akoshad.targets.local import LocalTarget

__all__ = [
    "KV_IDENTITY",
    "forget_changed_akosha",
    "forget_changed_targets",
    "keep_outbox_root",
    "outbox_back",
    "seed_ledger",
    "target_identity",
]

# what a drill or a prune of the primary target recorded
PRIMARY_RECORDS = (KV_LAST_DRILL, KV_LAST_GOOD_DRILL, KV_LAST_PRUNE, KV_PRUNE_PROGRESS)
SEED_TIMEOUT = 120.0  # reading the newest manifest and its documents to seed a ledger
SUPERSEDED = "superseded"  # the outcome of an upload record whose target is another place now


def _forget_in(c: sqlite3.Connection, name: str, primary: bool) -> None:
    """Inside a transaction: what the state knew of target ``name`` (module docstring)."""
    ours = "SELECT upload_id FROM uploads WHERE target = ?"
    c.execute(f"DELETE FROM memories_uploaded WHERE upload_id IN ({ours})", (name,))
    c.execute(f"DELETE FROM upload_packs WHERE upload_id IN ({ours})", (name,))
    c.execute(
        "UPDATE uploads SET outcome = ? WHERE target = ? AND outcome IN ('completed', "
        "'in_progress')",
        (SUPERSEDED, name),
    )
    LedgerOps.write_ledger(c, name, [], list(LedgerOps.ledger_rows(c, name)))
    c.execute(
        "INSERT OR REPLACE INTO kv (key, value) VALUES (?, '1')",
        (KV_COMPARE_ALL.format(target=name),),
    )
    ChunkOps.forget_target_chunks(c, name)
    c.execute("DELETE FROM kv WHERE key = ?", (KV_REWRITE.format(target=name),))
    if primary:
        c.executemany("DELETE FROM kv WHERE key = ?", [(k,) for k in PRIMARY_RECORDS])


def _check_in(c: sqlite3.Connection, wanted: dict[str, str], primary: str) -> list[str]:
    """Inside a transaction: the targets of ``wanted`` ({name: identity}) whose recorded
    identity differs (forgotten here); every identity recorded."""
    changed: list[str] = []
    for name, identity in wanted.items():
        known = recorded_place(c, name)
        if known is not None and known != identity:
            _forget_in(c, name, name == primary)
            changed.append(name)
        c.execute(
            "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
            (KV_IDENTITY.format(target=name), identity),
        )
    return changed


async def forget_changed_targets(
    state: StateDB, settings: Settings, names: Iterable[str], primary: str
) -> list[str]:
    """At start, before anything reads the ledger: the targets of ``names`` that are
    another place than the state knew, each forgotten and logged (module docstring)."""
    wanted = {name: target_identity(settings, name) for name in names}
    changed = await state.transaction(lambda c: _check_in(c, wanted, primary))
    for name in changed:
        logger.warning(
            "target {} is another place than the state knew (bucket, endpoint, directory or "
            "system_id changed): what was known of the old one is forgotten, and the next "
            "upload sends every file that the newest upload there (if any) does not hold",
            name,
        )
    return changed


def _akosha_check_in(c: sqlite3.Connection, identity: str) -> int:
    """Inside a transaction: when the state knew another Akosha, what it delivered there
    and Akosha's own refusals are forgotten; the number of memories forgotten (0 also for
    the same Akosha, or a state without a record, which adopts this one)."""
    row = c.execute("SELECT value FROM kv WHERE key = ?", (KV_AKOSHA,)).fetchone()
    forgotten = 0
    if row is not None and str(row[0]) != identity:
        forgotten = int(c.execute("SELECT COUNT(*) FROM memories_delivered").fetchone()[0])
        c.execute("DELETE FROM memories_delivered")
        c.execute(
            "DELETE FROM memories_skipped WHERE substr(reason, 1, ?) = ?",
            (len(REJECTED_PREFIX), REJECTED_PREFIX),
        )
    c.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (KV_AKOSHA, identity))
    return forgotten


async def forget_changed_akosha(state: StateDB, settings: Settings) -> int:
    """At start: with ``akosha_url`` pointing at another endpoint than the memories were
    delivered to (Akosha moved, a new instance), those deliveries are forgotten, so every
    memory goes to this one (one it already holds answers ``Duplicate key``: nothing is
    stored twice); logged. The number of deliveries forgotten."""
    if not settings.akosha_url:
        return 0  # nothing is delivered: the record stays for when it is set again
    identity = akosha_identity(settings.akosha_url)
    forgotten = await state.transaction(lambda c: _akosha_check_in(c, identity))
    if forgotten:
        logger.warning(
            "akosha_url points at another Akosha than the one this machine delivered {} "
            "memories to: every memory is sent to this one",
            forgotten,
        )
    return forgotten


async def forget_if_last_upload_gone(
    state: StateDB, target: Target, system_id: str, events: EventBus | None = None
) -> str | None:
    """At start (and at each drill), the primary target answering: when the manifest of
    the state's last upload there is gone (the same path or bucket now holds other
    contents: a disk swapped, a copy restored, a hand, a lifecycle rule), what the state
    knew of the target is forgotten as for a changed identity; that upload's id then (the
    caller seeds the ledger from the newest upload there), else None. A target that
    cannot say keeps what is known. With ``events``, also a ``failure`` event (kind
    ``target_emptied``): the uploads before may be gone with it."""
    last = await state.transaction(lambda c: LedgerOps.last_upload_in(c, target.name))
    if last is None or not await manifest_gone(target, system_id, last):
        return None
    # the same place: its last drill and prune stay on record (a failed drill stands
    # until one passes)
    await state.transaction(lambda c: _forget_in(c, target.name, False))
    line = (
        f"target {target.name} no longer holds upload {last}, the last one this machine made "
        "there: what was known of the target is forgotten, and the next upload sends every "
        "file that the newest upload there (if any) does not hold"
    )
    logger.warning("{}", line)
    if events is not None:
        events.emit("failure", kind="target_emptied", target=target.name, error=line, failed=0)
    return last


async def forget_if_emptied(
    state: StateDB,
    recovery: Recovery,
    target: Target,
    *,
    primary: Target,
    system_id: str,
    events: EventBus | None = None,
) -> None:
    """Before each pass with work due (a bucket emptied, or deleted and made again, during
    an outage or not; an outbox removed, a disk swapped or remounted): when it no longer
    holds the last upload made there, what was known of it is forgotten and the primary's
    ledger seeded from the newest upload there, so the pass sends every file it lacks
    instead of an upload that points at objects that are gone."""
    gone = await forget_if_last_upload_gone(state, target, system_id, events)
    if gone is not None and target is primary:
        await seed_ledger(recovery, target, available=True)


async def seed_ledger(
    recovery: Recovery, target: Target, available: bool, within: float = SEED_TIMEOUT
) -> None:
    """The ledger seeded from the newest upload in ``target``, ``within`` seconds; a target
    that does not answer (``available`` false, or not in time) leaves it empty: the next
    upload sends every file, and nothing points at what is not there."""
    if available:
        try:
            await asyncio.wait_for(recovery.rebuild_lost_ledger(target), within)
            return
        except TimeoutError:
            pass
    logger.warning(
        "the ledger could not be seeded from {}: it does not answer; the next upload sends "
        "every file",
        target.name,
    )


async def keep_outbox_root(state: StateDB, target: Target, primary: str) -> None:
    """The local outbox's directory is never made again once the state has an upload on
    record there (``LocalTarget.keep_root``): missing, it is a disk not mounted. Only while
    the outbox is the ``primary`` target: with a bucket no upload goes there, and an old
    outbox removed (uploads from before the bucket came) is no outage."""
    outbox = getattr(target, "inner", target)  # the counted target's own
    if isinstance(outbox, LocalTarget) and outbox.name == primary:
        last = await state.transaction(lambda c: LedgerOps.last_upload_in(c, outbox.name))
        outbox.keep_root = outbox.keep_root or last is not None


async def outbox_back(stats: Stats, target: Target) -> None:
    """A local outbox down because its directory was gone (``keep_outbox_root``) is up
    again once the directory is back (its disk mounted again), with nothing to upload
    too: that failure is over. The health watch calls it every second."""
    outbox = getattr(target, "inner", target)  # the counted target's own
    if not isinstance(outbox, LocalTarget):
        return
    health = stats.target(outbox.name)
    error = health.last_error or ""
    if health.available or outbox.root_gone() not in error:
        return
    if await asyncio.to_thread(os.path.exists, outbox.root):
        health.read_again(error)
