"""What one upload sends and what it reuses: a pure function of the captures and the ledger.

Given the capture results of a pass, the queue rows they came from and the target's
ledger, :func:`plan_upload` decides, without any I/O:

* which queue rows are done and which go back to be retried;
* which files changed (by SHA-256 against the ledger) and need a new object;
* which are unchanged and keep pointing at an earlier upload's object (their ledger row
  gets the new stat identity; one whose permission bits changed makes an upload, so that
  its manifest, and a restore, have the new mode);
* which ledger entries are removed (vanished, refused for good, no longer part of a
  captured group, or where a captured file shows a directory now is, or the other way
  round) and which are kept as they are (not looked at this pass);
* whether anything changed at all (no change: no upload).

It also maps between ledger rows and :class:`~akoshad.storage.stored.StoredFile`, the one
description of a stored file on the writer side: a row holds a file's chunk identities
(located through the target's chunk table when a manifest is made) or the whole object of
a format-1 upload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from akoshad.manifest.facts import Facts
from akoshad.pipeline.capture.snapshot import (
    Captured,
    CapturedFile,
    CaptureResult,
    LiveStat,
    Skipped,
    Vanished,
)
from akoshad.pipeline.packing import SentFile
from akoshad.pipeline.storefiles import CHECKPOINT_WAL, groups_below, owner_of, side_kind
from akoshad.storage.refs import ChunkRef
from akoshad.storage.stored import Part, StoredFile, WholeCompression, WholeObject
from akoshad.store.db import LedgerEntry, QueueItem
from akoshad.store.records import encode_chunk_ids


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
    owners = {r.group: _kind(r) for r in results if isinstance(r, Captured)}

    for result in results:
        item = item_of[result.group]
        if isinstance(result, Captured) and _side_of(result.group, owners):
            plan.done.append(item)  # captured with its database this pass (_displaced)
            continue
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

    changed_groups.update(_drop_displaced(plan, by_group, item_of))

    for cap in plan.captured:
        for f in cap.files:
            prev = ledger.get(f.path)
            if deduplicate and prev is not None and prev.sha256 == f.sha256:
                plan.reused.append(restat(prev, f, cap.group))
                if mode_changed(prev, f) or prev.kind != f.kind:  # a chmod, a file that is
                    changed_groups.add(cap.group)  # a WAL now: an upload records it
                continue
            changed_groups.add(cap.group)
            plan.send.append((cap.group, f))

    plan.changed = bool(changed_groups)
    removed = set(plan.removed)
    touched = {r.path for r in plan.reused} | {f.path for _, f in plan.send}
    plan.kept = [e for e in ledger.values() if e.path not in removed and e.path not in touched]
    return plan


def _drop_displaced(
    plan: UploadPlan, by_group: Mapping[str, list[LedgerEntry]], item_of: Mapping[str, QueueItem]
) -> list[str]:
    """Remove the ledger's groups the captures show gone (``_displaced``) that no queue
    row of this pass stands for; returns them."""
    gone = [g for g in _displaced(plan.captured, by_group) if g not in item_of]
    for group in gone:
        plan.removed.extend(e.path for e in by_group[group])
        plan.deleted.append(group)
    return gone


def _displaced(
    captured: Sequence[Captured], by_group: Mapping[str, list[LedgerEntry]]
) -> list[str]:
    """The ledger's groups a captured file shows gone: a file by the name of one of its
    directories (``a`` once ``a/b`` is captured: a directory replaced it), the files
    below a captured file's path (``a/b`` once ``a`` is captured), and a file named as a
    side file of a captured one (``a.wal`` backed up on its own while there was no ``a``:
    it is ``a``'s now, captured with it or not at all). No manifest can list both, and
    their own events may come later or never (a directory removed whole)."""
    below = groups_below(by_group)
    out: set[str] = set()
    for cap in captured:
        parts = cap.group.split("/")
        out.update(d for i in range(1, len(parts)) if (d := "/".join(parts[:i])) in by_group)
        out.update(below.get(cap.group, ()))
        held = {f.path for f in cap.files}  # a side file captured with it: its row now
        out.update(s for s in _sides_of(cap) if s in by_group and s not in held)
    return sorted(out)


def _kind(cap: Captured) -> str:
    """The kind of a captured group's own file (``duckdb``, ``sqlite``, ``file``)."""
    return next((f.kind for f in cap.files if f.path == cap.group), "file")


def _sides_of(cap: Captured) -> tuple[str, ...]:
    """The side-file names a captured database holds (a plain file holds none)."""
    suffixes = {"duckdb": (".wal", CHECKPOINT_WAL), "sqlite": ("-journal", "-wal", "-shm")}
    return tuple(cap.group + suffix for suffix in suffixes.get(_kind(cap), ()))


def _side_of(group: str, owners: Mapping[str, str]) -> bool:
    """Whether ``group`` is named as a side file of a database captured this pass (in
    ``owners``, by kind): backed up on its own while no database bore its name (or the file
    by that name was none of its kind), it is that database's now."""
    owner = owner_of(group)
    return owner != group and owners.get(owner) == side_kind(group)


def captured_paths(plan: UploadPlan) -> list[str]:
    """The groups captured this pass and their files: no skip of theirs stands any more
    (a skip the capture made again is in ``plan.skipped``, e.g. a WAL linked out)."""
    return [p for cap in plan.captured for p in (cap.group, *(f.path for f in cap.files))]


def mode_changed(prev: LedgerEntry, f: CapturedFile) -> bool:
    """The file's permission bits differ from those its last upload recorded (a row of an
    earlier akoshad that recorded none is not a change: its next upload records them)."""
    return prev.mode is not None and f.mode is not None and prev.mode != f.mode


def restat(prev: LedgerEntry, f: CapturedFile, group: str | None = None) -> LedgerEntry:
    """An unchanged file's row with its new stat identity, mode, kind, group (``group``)
    and this capture's facts (a DuckDB file's row counts move with its WAL; a file backed
    up on its own may be a database's WAL now)."""
    return replace(
        prev,
        live=f.ledger_live(),
        facts=None if f.facts is None else f.facts.to_json(),
        mode=f.mode,
        kind=f.kind,
        group_path=prev.group_path if group is None else group,
    )


def attempt_record(plan: UploadPlan) -> dict[str, Any]:
    """What recovery needs of an attempt: live stat identities, groups, removals, new."""
    live = {r.path: r.live.as_list() for r in plan.reused}
    groups = {r.path: r.group_path for r in plan.reused}
    for group, f in plan.send:
        live[f.path] = f.ledger_live().as_list()
        groups[f.path] = group
    return {
        "format": 2,
        "live": live,
        "groups": groups,
        "removed": plan.removed,
        "new": [f.path for _, f in plan.send],
    }


def resolve_ledger(
    ledger: Mapping[str, LedgerEntry], table: Mapping[str, ChunkRef], *, whole_ok: bool = True
) -> tuple[dict[str, LedgerEntry], list[LedgerEntry]]:
    """(rows whose chunks are all in the chunk table, rows that point at a chunk the table
    no longer has): the latter must never reach a manifest. ``whole_ok=False`` (an
    encrypted upload): a format-1 whole object is stale too (it is readable)."""
    usable: dict[str, LedgerEntry] = {}
    stale: list[LedgerEntry] = []
    for path, row in ledger.items():
        try:
            ok = (whole_ok or row.chunks is not None) and stored_file(row, table) is not None
        except ValueError:  # a malformed chunks column
            ok = False
        if ok:
            usable[path] = row
        else:
            stale.append(row)
    return usable, stale


def sent_file(sent: SentFile, table: Mapping[str, ChunkRef]) -> StoredFile:
    """The stored description of a file this upload sent (its chunks located)."""
    f = sent.captured
    return StoredFile(
        path=f.path,
        kind=f.kind,
        size=f.size,
        sha256=sent.sha256,
        parts=tuple(table[sha] for sha, _ in sent.chunk_ids),
        mode=f.mode,
        facts=f.facts,
        mtime_ns=f.live.mtime_ns,
    )


def sent_rows(
    target: str, upload_id: str, sent: Sequence[SentFile], files: Sequence[StoredFile]
) -> list[LedgerEntry]:
    """The ledger rows of the files an upload sent (``files`` begins with their stored
    descriptions, in ``sent``'s order). Blocking (CPU: a thread on large uploads)."""
    return [
        ledger_row(
            target,
            f,
            group=s.group,
            live=s.captured.ledger_live(),
            upload_id=upload_id,
            chunk_ids=s.chunk_ids,
        )
        for s, f in zip(sent, files, strict=False)
    ]


def stored_file(row: LedgerEntry, table: Mapping[str, ChunkRef]) -> StoredFile | None:
    """The stored description of a ledger row: its chunks located through ``table`` (the
    target's chunk table), or its format-1 whole object. None when a chunk is not in the
    table (the file must be sent again)."""
    parts: tuple[Part, ...]
    ids = row.chunk_ids
    if ids is None:
        comp: WholeCompression = "gzip" if row.compression == "gzip" else "none"
        parts = (WholeObject(row.key, row.stored_size, comp, row.size, row.sha256),)
    else:
        refs = [table.get(sha) for sha, _ in ids]
        if any(r is None or r.size != size for r, (_, size) in zip(refs, ids, strict=True)):
            return None
        parts = tuple(r for r in refs if r is not None)
    return StoredFile(
        path=row.path,
        kind=row.kind,
        size=row.size,
        sha256=row.sha256,
        parts=parts,
        mode=row.mode,
        facts=Facts.from_json(row.facts),
        name=row.name if ids is None else "",
        mtime_ns=recorded_mtime(row.live),
    )


def recorded_mtime(live: LiveStat) -> int | None:
    """The modification time a ledger row's stat gives the manifest: None for a row
    rebuilt from manifests (size -1) or whose stat was never read (mtime 0), until the
    reconcile reads the file's stat again."""
    return None if live.size < 0 or live.mtime_ns == 0 else live.mtime_ns


def ledger_row(
    target: str,
    f: StoredFile,
    *,
    group: str,
    live: LiveStat,
    upload_id: str,
    chunk_ids: Sequence[tuple[str, int]] | None = None,
) -> LedgerEntry:
    """The ledger row of a file an upload holds (chunk identities only, or the whole
    object of a format-1 upload). ``chunk_ids``: the chunks' identities when they are not
    their sha256 (sealed chunks: their keyed names)."""
    whole = f.whole
    if whole is not None:
        parts = whole.key.split("/")  # systems/{system_id}/uploads/{upload_id}/{name}
        key, stored, comp, chunks = whole.key, whole.stored_size, whole.compression, None
        name = f.name or parts[-1]
        upload_id = parts[3] if len(parts) == 5 else upload_id
    else:
        key, stored, comp, name = "", f.stored_size, "none", ""
        ids = chunk_ids if chunk_ids is not None else [(c.sha256, c.size) for c in f.chunks]
        chunks = encode_chunk_ids(ids)
    return LedgerEntry(
        target=target,
        path=f.path,
        group_path=group,
        size=f.size,
        live=live,
        sha256=f.sha256,
        key=key,
        name=name,
        stored_size=stored,
        compression=comp,
        kind=f.kind,
        upload_id=upload_id,
        facts=None if f.facts is None else f.facts.to_json(),
        mode=f.mode,
        chunks=chunks,
    )
