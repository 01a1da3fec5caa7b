"""What a prune has really deleted so far, kept in the state after each batch of
deletions (``prune_progress``): a prune that stops part way (a target error, its deadline)
reports those counts, and one that never got to record its outcome (killed, a power loss,
the daemon stopped meanwhile) is recorded as ``last_prune`` with them by the next prune
or the daemon's next start (:func:`fold_interrupted`)."""

from __future__ import annotations

import json
import sqlite3
import time
from typing import Any

from akoshad.names import MANIFEST_NAME
from akoshad.runtime.prune_report import KV_LAST, parse_last
from akoshad.store.db import StateDB

KV_PROGRESS = "prune_progress"
INTERRUPTED = (
    "the prune was interrupted before it could record its outcome (the process was "
    "stopped or killed, or the machine went down); every kept upload stays restorable, "
    "and the next prune finishes the job"
)


class PruneProgress:
    """The counts of one prune's deletions, saved in the state after each batch."""

    def __init__(self, state: StateDB, system_id: str) -> None:
        self.state = state
        self.at = time.time()
        self.manifests = f"systems/{system_id}/uploads/"
        self.uploads_removed: list[str] = []
        self.objects_deleted = 0
        self.bytes_freed = 0

    async def deleted(self, keys: list[str], freed: int) -> None:
        """One batch deleted: ``keys`` and their ``freed`` bytes (a removed upload counts
        once its manifest went)."""
        for key in keys:
            rest = key[len(self.manifests) :] if key.startswith(self.manifests) else ""
            upload_id, _, name = rest.partition("/")
            if name == MANIFEST_NAME:
                self.uploads_removed.append(upload_id)
        self.objects_deleted += len(keys)
        self.bytes_freed += freed
        await self.state.set_kv(KV_PROGRESS, json.dumps(self.counts() | {"at": self.at}))

    def counts(self) -> dict[str, Any]:
        """The result fields of what was deleted so far."""
        return {
            "uploads_removed": list(self.uploads_removed),
            "objects_deleted": self.objects_deleted,
            "bytes_freed": self.bytes_freed,
        }

    async def done(self) -> None:
        """The prune recorded its outcome itself: nothing to fold later."""
        await _forget(self.state)


def _recorded_since(last: dict[str, Any] | None, saved: dict[str, Any]) -> bool:
    """Whether ``last`` (``last_prune``) was recorded after the interrupted prune began: by
    an older akoshad, which leaves this progress record alone (a downgrade, then this one
    again), whose prune finished the job; folding it in would put a failure over it."""
    began, ended = saved.get("at"), (last or {}).get("at")
    if not isinstance(began, int | float) or not isinstance(ended, int | float):
        return False
    return float(ended) > float(began)


async def _forget(state: StateDB) -> None:
    await state.transaction(lambda c: c.execute("DELETE FROM kv WHERE key = ?", (KV_PROGRESS,)))


async def fold_interrupted(state: StateDB) -> dict[str, Any] | None:
    """The ``last_prune`` of a prune that deleted something and then never recorded its
    outcome (its progress is still in the state), recorded now in place of the one
    before it; None when there is none. Call while no prune runs."""
    saved = parse_last(await state.get_kv(KV_PROGRESS))
    if saved is None:
        return None
    if _recorded_since(parse_last(await state.get_kv(KV_LAST)), saved):
        await _forget(state)  # an akoshad that keeps no progress pruned since: it stands
        return None
    removed = saved.get("uploads_removed")
    last = {
        "at": saved.get("at"),
        "ok": False,
        "upload_id": None,
        "uploads_kept": None,
        "uploads_removed": len(removed) if isinstance(removed, list) else 0,
        "objects_deleted": saved.get("objects_deleted", 0),
        "bytes_freed": saved.get("bytes_freed", 0),
        "problems": [INTERRUPTED],
        "stopped_part_way": True,
    }
    text = json.dumps(last)

    def op(c: sqlite3.Connection) -> None:
        c.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (KV_LAST, text))
        c.execute("DELETE FROM kv WHERE key = ?", (KV_PROGRESS,))

    await state.transaction(op)
    return last
