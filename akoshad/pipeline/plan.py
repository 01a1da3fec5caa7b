"""What one upload sends and what it reuses: a pure function of the captures and the ledger.

Given the capture results of a pass, the queue rows they came from and the target's
ledger, :func:`plan_upload` decides, without any I/O:

* which queue rows are done and which go back to be retried;
* which files changed (by SHA-256 against the ledger) and need a new object;
* which are unchanged and keep pointing at an earlier upload's object (their ledger row
  gets the new stat identity);
* which ledger entries are removed (vanished, refused for good, or no longer part of a
  captured group) and which are kept as they are (not looked at this pass);
* whether anything changed at all (no change: no upload).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from akoshad.manifest.facts import Facts
from akoshad.manifest.layout import FileEntry
from akoshad.pipeline.capture.snapshot import (
    Captured,
    CapturedFile,
    CaptureResult,
    LiveStat,
    Skipped,
    Vanished,
)
from akoshad.store.db import LedgerEntry, QueueItem


@dataclass
class UploadPlan:
    """The outcome of :func:`plan_upload`."""

    done: list[QueueItem] = field(default_factory=list)
    retry: list[QueueItem] = field(default_factory=list)
    captured: list[Captured] = field(default_factory=list)
    # (group, file) of each captured file that needs a new object
    send: list[tuple[str, CapturedFile]] = field(default_factory=list)
    reused: list[LedgerEntry] = field(default_factory=list)  # unchanged: earlier objects
    kept: list[LedgerEntry] = field(default_factory=list)  # not looked at this pass
    removed: list[str] = field(default_factory=list)  # ledger paths that leave
    deleted: list[str] = field(default_factory=list)  # groups gone from disk
    skipped: dict[str, str] = field(default_factory=dict)  # left out for good: why
    retrying: dict[str, str] = field(default_factory=dict)  # try again later: why
    changed: bool = False  # anything to upload at all


def plan_upload(
    results: Sequence[CaptureResult],
    items: Sequence[QueueItem],
    ledger: Mapping[str, LedgerEntry],
    *,
    deduplicate: bool = True,
) -> UploadPlan:
    """Decide one upload from a pass's capture results (one per claimed queue row)."""
    by_group: dict[str, list[LedgerEntry]] = {}
    for entry in ledger.values():
        by_group.setdefault(entry.group_path, []).append(entry)
    item_of = {i.path: i for i in items}
    plan = UploadPlan()
    changed_groups: set[str] = set()

    for result in results:
        item = item_of[result.group]
        old = by_group.get(result.group, [])
        if isinstance(result, Skipped) and result.retry:
            plan.retrying[result.group] = result.reason
            plan.retry.append(item)
            continue
        plan.done.append(item)
        if isinstance(result, Vanished | Skipped):
            if isinstance(result, Skipped):
                plan.skipped[result.group] = result.reason
            if old:
                plan.removed.extend(e.path for e in old)
                changed_groups.add(result.group)
                if isinstance(result, Vanished):
                    plan.deleted.append(result.group)
            continue
        plan.captured.append(result)
        plan.skipped.update(result.refused)  # side files left out (a linked WAL)
        new_paths = {f.path for f in result.files}
        gone = [e.path for e in old if e.path not in new_paths]
        plan.removed.extend(gone)
        if gone:
            changed_groups.add(result.group)

    for cap in plan.captured:
        for f in cap.files:
            prev = ledger.get(f.path)
            if deduplicate and prev is not None and prev.sha256 == f.sha256:
                plan.reused.append(restat(prev, f))
                continue
            changed_groups.add(cap.group)
            plan.send.append((cap.group, f))

    plan.changed = bool(changed_groups)
    removed = set(plan.removed)
    touched = {r.path for r in plan.reused} | {f.path for _, f in plan.send}
    plan.kept = [e for e in ledger.values() if e.path not in removed and e.path not in touched]
    return plan


def restat(prev: LedgerEntry, f: CapturedFile) -> LedgerEntry:
    """An unchanged file's row with its new stat identity, mode and this capture's facts
    (a DuckDB file's row counts move with its WAL)."""
    live: LiveStat = f.live
    return replace(
        prev,
        live_size=live.size,
        mtime_ns=live.mtime_ns,
        ctime_ns=live.ctime_ns,
        inode=live.inode,
        facts=None if f.facts is None else f.facts.to_json(),
        mode=f.mode,
    )


def attempt_record(
    plan: UploadPlan, to_send: list[tuple[LedgerEntry, CapturedFile]]
) -> dict[str, Any]:
    """What recovery needs of an attempt: live stat identities, groups, removals, new."""
    rows = [*plan.reused, *(r for r, _ in to_send)]
    return {
        "live": {r.path: [r.live_size, r.mtime_ns, r.ctime_ns, r.inode] for r in rows},
        "groups": {r.path: r.group_path for r in rows},
        "removed": plan.removed,
        "new": [r.path for r, _ in to_send],
    }


def manifest_entry(row: LedgerEntry) -> FileEntry:
    """The manifest's entry of a file the upload holds, from its ledger row."""
    return FileEntry(
        path=row.path,
        name=row.name,
        key=row.key,
        size=row.size,
        sha256=row.sha256,
        stored_size=row.stored_size,
        compression=row.compression,
        kind=row.kind,
        facts=Facts.from_json(row.facts),
        mode=row.mode,
    )
