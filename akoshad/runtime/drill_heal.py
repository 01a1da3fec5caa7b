"""After a drill found stored objects missing or damaged, or a prune found objects that kept
uploads reference missing (a lifecycle rule or a hand that deleted them, a disk of the
server that lost them): the files that used them are sent again, so that the next upload
is whole again.

Without this, every later upload would keep pointing at the lost objects (the chunk table
says they are stored, so nothing is sent again), and only uploads made before the loss
could ever show the files. Here, in one transaction: the chunk rows of every object found
missing or damaged go (all the chunks stored in it, also those of other files: a chunk
that is in fact intact is only sent once more), and the ledger rows that no longer
resolve (and those of format-1 whole objects found missing); their groups are queued. The
shared documents (index parts, chunk lists: named by their content) are all PUT again by
the next upload, none taken as stored, so that one lost or damaged is written again; that
upload is made even when no file changed (a drill that could not read the upload's
documents asks for this alone, and one small file is queued to make it). Uploads made
before the loss stay as they are, unless they share a document written again:
``verify --all`` names them.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Collection, Iterable
from typing import Any

from loguru import logger

from akoshad.pipeline.plan import resolve_ledger
from akoshad.store.chunks import ChunkOps
from akoshad.store.db import LedgerEntry, StateDB
from akoshad.store.ledger import LedgerOps
from akoshad.store.queue import QueueOps


def _forget(
    c: sqlite3.Connection, target: str, keys: Collection[str], documents: bool = False
) -> tuple[int, int] | None:
    """Inside a transaction: the module's forgetting and queueing; returns the ledger rows
    dropped and the groups queued, or None when ``keys`` name nothing known any more (an
    older upload's loss, healed already: a prune reports it until that upload expires).
    Objects no file of the ledger uses are only forgotten (no later upload dedupes against
    them); nothing is queued or rewritten for them, unless ``documents`` (a document of
    the upload, a chunk list, was found lost too)."""
    dropped = sum(ChunkOps.forget_pack_in(c, target, key) for key in keys)
    ledger = LedgerOps.ledger_rows(c, target)
    lost = {e.path: e for e in ledger.values() if e.chunks is None and e.key in keys}
    _, stale = resolve_ledger(ledger, ChunkOps.chunk_table(c, target))
    lost.update((e.path, e) for e in stale)
    if keys and not lost and not documents:
        return None if not dropped else (0, 0)
    ChunkOps.rewrite_documents_in(c, target)
    LedgerOps.write_ledger(c, target, [], list(lost))
    groups = {e.group_path for e in lost.values()}
    if not groups and ledger:  # documents only: one small group queued makes the upload
        groups = {_smallest_group(ledger.values())}
    QueueOps.enqueue_in(c, [(g, "modified") for g in sorted(groups)], time.time())
    return len(lost), len(groups)


def _smallest_group(rows: Iterable[LedgerEntry]) -> str:
    """The group of the fewest bytes (a plain file before a database and its WAL): the
    cheapest to capture again."""
    sizes: dict[str, int] = {}
    for e in rows:
        sizes[e.group_path] = sizes.get(e.group_path, 0) + e.size
    return min(sizes, key=lambda g: (sizes[g], g))


async def send_again(
    state: StateDB, target: str, keys: Collection[str], documents: bool = False
) -> tuple[int, int] | None:
    """Forget what ``target`` was thought to hold in the objects ``keys`` and queue the
    files that used them, in one transaction (module docstring); returns the files (ledger
    rows) to send again and the groups queued, None when the keys name nothing known (and
    no ``documents`` are to be written again)."""
    wanted = frozenset(keys)
    return await state.transaction(lambda c: _forget(c, target, wanted, documents))


async def heal(
    state: StateDB, target: str, keys: Collection[str], found_by: str, documents: bool = False
) -> tuple[int, int] | None:
    """:func:`send_again` (the caller holds the pass lock), logged as a WARNING naming
    ``found_by``; its outcome (files to send again, groups queued: the drain has work when
    groups were queued). No ``keys``: only the shared documents are written again, by the
    next upload (one small file is queued for it); ``documents``: so are they, whatever
    ``keys`` name."""
    outcome = await send_again(state, target, keys, documents)
    if outcome is None:
        return None
    files = outcome[0]
    if keys and not files:
        logger.info(
            "{}: {} object(s) missing in {} are used by no file of the newest upload: "
            "forgotten (no later upload uses them)",
            found_by,
            len(keys),
            target,
        )
    elif keys:
        logger.warning(
            "{}: {} stored object(s) missing or damaged in {}: {} file(s) that used them "
            "are sent again with the next upload (uploads before it keep the damage: "
            "akoshad verify --all names them)",
            found_by,
            len(keys),
            target,
            files,
        )
    if documents or not keys:
        logger.warning(
            "{}: the upload's index or chunk lists could not be read from {}: the next "
            "upload writes every shared document again",
            found_by,
            target,
        )
    return outcome


async def send_missing_again(
    state: StateDB, target: str, result: dict[str, Any], *, dry_run: bool
) -> bool:
    """After a prune (under the same lock): the files that used objects it found missing
    are queued again (``drill_heal``), and their number is the result's ``sent_again`` (a
    prune by hand prints it); a failure to do so is one more problem of the prune's result.
    True when files were queued (the drain has work)."""
    missing = result.get("missing") or []
    if dry_run or not missing:
        return False
    try:
        outcome = await heal(state, target, missing, "prune")
    except sqlite3.Error as exc:
        line = f"the files that used the missing objects could not be queued again: {exc}"
        result.update(ok=False, problems=[*result.get("problems", []), line])
        return False
    if outcome is None:
        return False
    result["sent_again"] = outcome[0]
    return outcome[1] > 0
