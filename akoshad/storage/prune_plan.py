"""The prune planner: mark and sweep over one system's objects, pure (no I/O).

Live set: ``owner.json`` plus everything a kept manifest references (the manifest itself,
its index parts, chunk lists, the packs its chunks sit in, format-1 whole objects,
``memories.json``). Only the namespaces akoshad writes are swept (``uploads/``, ``packs/``,
``index/``, ``chunklists/``); ``owner.json``, ``keys/`` and unknown keys are never deleted.
An upload folder without a manifest is an upload in progress (the caller names it, or its
id is younger than ``grace`` or carries no time) and is left alone, or a crashed upload whose
objects are garbage (named in ``crashed_uploads`` only when some of them are swept: a dropped
format-1 upload's folder keeps the objects later uploads use).

A kept upload whose manifest or documents could not be read (``ManifestRefs.unreadable``:
one missing or damaged) references what is unknown. Everything it can use was stored before
its manifest (an entry points only at objects of completed uploads or of its own), so the
plan keeps, as if that upload used them, every object stored no later than that manifest
(its stored time plus ``fence_margin``; an object of unknown time counts as stored then),
and every index part and chunk list (small, and written again by later uploads, which moves
their times). None of those is moved by a repack. The rest of the plan goes on: dropped
uploads go, and what later uploads left behind is swept. The plan names each such upload
(``unreadable``). Stored times are trusted only when they follow the writes: should a
readable kept upload use an object (not a document) stored more than ``WRITE_ORDER_SLACK``
after its own manifest, the target's times were not made by its writes (a copy that did not
keep them), and every object is kept.

A pack whose live bytes are below ``repack_ratio`` (0.8) of its size is repacked, and if the
live data would still take more than ``stored_bound`` (1.2x) the bytes it references, the
packs with the lowest live share are repacked too, until the bound holds; one prune moves
at most ``repack_budget`` bytes in its repack (1 GiB: source packs read whole, live bytes
written; the least live packs first), the next prune goes on.

Steps (``PrunePlan.steps``), in this order, each safe to interrupt (``kill -9``): every kept
upload stays restorable at every moment and the next prune finishes the job.
1. ``delete_manifest``: the dropped uploads disappear first (their objects are still there).
2. ``delete_object``: the sweep of objects no kept upload references. It runs before the
   repack, so a new pack orphaned by an interrupted repack is swept before it is rewritten.
   Before deleting a pack (here or in 5) the executor forgets its chunks in the ledger's
   chunk table, so no new upload can dedupe against a deleted chunk.
3. ``write_pack``: each new pack, the concatenation of its sources' live ranges (see
   ``NewPack.layout``); its id is the layout of its pieces, each named by the sha256 of
   its bytes, so two new packs share a key only when they hold the same bytes.
4. ``rewrite_manifest``: for each affected kept upload, write its rewritten chunk lists and
   index parts first (new content, so new keys), then the manifest itself in one PUT (an
   atomic replace on both targets). Chunk locations move with ``NewPack.relocate``. The
   executor updates the ledger's chunk table (still under the daemon's pass lock) before 5.
5. ``delete_replaced``: the old packs, and the chunk lists and index parts the rewrite
   replaced; nothing kept points at them any more.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from akoshad.names import MANIFEST_NAME, SYSTEM_ID_RE
from akoshad.storage.prune_refs import ManifestRefs
from akoshad.storage.repack import (
    REPACK_BUDGET,
    REPACK_RATIO,
    STORED_BOUND,
    NewPack,
    Range,
    choose_repacks,
    group_repacks,
    merge_ranges,
)

OWNER_NAME = "owner.json"
SWEPT_DIRS = ("uploads/", "packs/", "index/", "chunklists/")
PACK_TARGET = 16 * 1024 * 1024
DEFAULT_GRACE = timedelta(hours=24)
# an object's stored time against its upload's manifest's: the clocks of one server's
# nodes may differ a little, and keeping more is the safe side
FENCE_MARGIN = timedelta(hours=1)
DOCUMENT_DIRS = ("index/", "chunklists/")
# how much later than its manifest an object an upload uses may be stored before the
# target's times count as not made by its writes (the clocks of a server's nodes)
WRITE_ORDER_SLACK = timedelta(minutes=1)
_ID_TIME = "%Y%m%dT%H%M%S%fZ"

StepOp = Literal[
    "delete_manifest", "delete_object", "write_pack", "rewrite_manifest", "delete_replaced"
]


@dataclass(frozen=True)
class Step:
    """One step of a plan; ``new_pack`` is set for ``write_pack``."""

    op: StepOp
    key: str = ""
    new_pack: NewPack | None = None


@dataclass(frozen=True)
class PrunePlan:
    """What a prune does; run ``steps()`` in order. Byte counts are from the listing."""

    kept_uploads: tuple[str, ...]
    removed_uploads: tuple[str, ...]
    crashed_uploads: tuple[str, ...]
    delete_manifests: tuple[str, ...]
    delete_objects: tuple[str, ...]
    new_packs: tuple[NewPack, ...]
    rewrite_manifests: tuple[str, ...]
    replaced: tuple[str, ...]
    missing: tuple[str, ...]
    unreadable: tuple[str, ...]
    freed_bytes: int
    repack_freed_bytes: int
    referenced_bytes: int
    live_stored_bytes: int
    listed_bytes: int  # everything under the system's prefix before the prune

    @property
    def stored_after_bytes(self) -> int:
        """What the target holds under the system's prefix after the plan ran, as the run
        counts it (the owner record, the name keys and whatever is left alone included;
        documents rewritten count at their old size)."""
        return self.listed_bytes - self.freed_bytes - self.repack_freed_bytes

    @property
    def old_packs(self) -> frozenset[str]:
        """The packs the repack empties (deleted in step 5)."""
        return frozenset(s.key for p in self.new_packs for s in p.sources)

    @property
    def deleted_count(self) -> int:
        """Every key the plan deletes: dropped manifests, swept objects and what the repack
        replaces (the old packs, rewritten chunk lists and index parts)."""
        return len(self.delete_manifests) + len(self.delete_objects) + len(self.replaced)

    def summary(self) -> dict[str, object]:
        """The figures ``akoshad prune`` prints (and ``--json`` returns)."""
        return {
            "uploads_kept": len(self.kept_uploads),
            "uploads_removed": list(self.removed_uploads),
            "crashed_uploads": list(self.crashed_uploads),
            "objects_deleted": self.deleted_count,
            "packs_repacked": len(self.old_packs),
            "bytes_freed": self.freed_bytes + self.repack_freed_bytes,
            "bytes_referenced": self.referenced_bytes,
            "bytes_stored_after": self.stored_after_bytes,
            "missing": list(self.missing),
            "unreadable": list(self.unreadable),
        }

    def steps(self) -> list[Step]:
        """Every step, in the order they must run (see the module docstring)."""
        out = [Step("delete_manifest", key) for key in self.delete_manifests]
        out += [Step("delete_object", key) for key in self.delete_objects]
        out += [Step("write_pack", f"new-pack-{i}", p) for i, p in enumerate(self.new_packs)]
        out += [Step("rewrite_manifest", key) for key in self.rewrite_manifests]
        out += [Step("delete_replaced", key) for key in self.replaced]
        return out


def upload_id_time(upload_id: str) -> datetime | None:
    """The time in an akoshad upload id (``20261124T085033123456Z-1a2b3c``), or None."""
    try:
        return datetime.strptime(upload_id[:22], _ID_TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


def _folders(prefix: str, listing: Iterable[str]) -> dict[str, list[str]]:
    """Upload id -> its keys, for keys under ``uploads/``."""
    out: dict[str, list[str]] = {}
    base = prefix + "uploads/"
    for key in listing:
        if key.startswith(base) and "/" in key[len(base) :]:
            out.setdefault(key[len(base) :].split("/", 1)[0], []).append(key)
    return out


def _index_manifests(
    prefix: str, manifests: Iterable[ManifestRefs], listing: Collection[str]
) -> dict[str, ManifestRefs]:
    by_id: dict[str, ManifestRefs] = {}
    for refs in manifests:
        if refs.upload_id in by_id:
            raise ValueError(f"upload {refs.upload_id} given twice")
        by_id[refs.upload_id] = refs
    for upload_id in _folders(prefix, listing):
        if f"{prefix}uploads/{upload_id}/{MANIFEST_NAME}" in listing and upload_id not in by_id:
            raise ValueError(f"the manifest of upload {upload_id} was not read")
    return by_id


def _unfinished(
    prefix: str,
    listing: Collection[str],
    with_manifest: Collection[str],
    in_progress: Collection[str],
    now: datetime,
    grace: timedelta,
) -> tuple[set[str], list[str]]:
    """(keys of uploads in progress, ids of crashed uploads) among manifest-less folders."""
    protected: set[str] = set()
    crashed: list[str] = []
    for upload_id, keys in sorted(_folders(prefix, listing).items()):
        if upload_id in with_manifest:
            continue
        started = upload_id_time(upload_id)
        if upload_id in in_progress or started is None or now - started < grace:
            protected.update(keys)
        else:
            crashed.append(upload_id)
    return protected, crashed


def _rewritten_holders(refs: ManifestRefs, moved: Collection[str]) -> set[str]:
    """Holders of ``refs`` that change when the packs in ``moved`` move, with their parents."""
    changed = {h for h, chunks in refs.chunks.items() if any(c.pack in moved for c in chunks)}
    grew = True
    while grew:
        parents = {p for p, kids in refs.children.items() if kids & changed} - changed
        changed |= parents
        grew = bool(parents)
    return changed


def _mark(prefix: str, kept: Iterable[ManifestRefs]) -> tuple[set[str], dict[str, list[Range]]]:
    """(live whole objects, live pack -> ranges used) of the kept uploads."""
    live: set[str] = {prefix + OWNER_NAME}
    pack_ranges: dict[str, list[Range]] = {}
    for refs in kept:
        live |= refs.named()
        for c in refs.chunk_refs():
            pack_ranges.setdefault(c.pack, []).append((c.offset, c.length))
    return live - set(pack_ranges), pack_ranges


def _fenced(
    prefix: str,
    kept: Collection[ManifestRefs],
    listing: Collection[str],
    times: Mapping[str, float],
    margin: timedelta,
) -> set[str]:
    """The keys a kept upload that could not be read may use (module docstring): none
    when there is no such upload."""
    fences = [times.get(r.manifest_key, math.nan) for r in kept if r.unreadable]
    if not fences:
        return set()
    # a time unknown (or not a number) counts as the latest for a manifest, and as the
    # earliest for an object: either way more is kept
    fence = max(t if math.isfinite(t) else math.inf for t in fences) + margin.total_seconds()
    documents = tuple(prefix + d for d in DOCUMENT_DIRS)
    if not _times_follow_writes(documents, kept, times):
        fence = math.inf
    return {
        k
        for k in listing
        if k.startswith(documents) or not times.get(k, math.nan) > fence  # NaN: kept
    }


def _times_follow_writes(
    documents: tuple[str, ...], kept: Iterable[ManifestRefs], times: Mapping[str, float]
) -> bool:
    """False when a readable kept upload uses an object (not a document: those are written
    again) stored more than ``WRITE_ORDER_SLACK`` after its manifest: every upload stores
    what it uses before its manifest, so such times were made by something else."""
    slack = WRITE_ORDER_SLACK.total_seconds()
    for refs in kept:
        written = times.get(refs.manifest_key, math.nan)
        if refs.unreadable or not math.isfinite(written):
            continue
        for key in refs.named(packs=True):
            if not key.startswith(documents) and times.get(key, -math.inf) > written + slack:
                return False
    return True


def _rewrites(kept: Iterable[ManifestRefs], moved: set[str]) -> tuple[list[str], set[str]]:
    """(manifests to rewrite, keys the rewrite replaces) when the packs in ``moved`` move."""
    rewrite: list[str] = []
    replaced: set[str] = set(moved)
    untouched: set[str] = set()
    for refs in kept:
        holders = _rewritten_holders(refs, moved)
        if holders:
            rewrite.append(refs.manifest_key)
            replaced |= holders - {refs.manifest_key}
        else:
            untouched |= refs.named()
    return rewrite, replaced - untouched


def plan_prune(
    system_id: str,
    manifests: Iterable[ManifestRefs],
    listing: Mapping[str, int],
    keep: Collection[str],
    *,
    now: datetime,
    in_progress: Collection[str] = (),
    protected: Collection[str] = (),
    grace: timedelta = DEFAULT_GRACE,
    times: Mapping[str, float] | None = None,
    fence_margin: timedelta = FENCE_MARGIN,
    repack_ratio: float = REPACK_RATIO,
    stored_bound: float = STORED_BOUND,
    pack_target: int = PACK_TARGET,
    repack_budget: int = REPACK_BUDGET,
) -> PrunePlan:
    """Plan a prune of ``systems/{system_id}/`` keeping the uploads in ``keep``.

    ``manifests``: one ``ManifestRefs`` per manifest in the target; a dropped upload may be
    given bare (``ManifestRefs(upload_id, manifest_key)``), only the kept ones need their
    references. ``listing``: every key under that prefix, with its size. ``in_progress``:
    ids of uploads being written now. ``protected``: keys never to delete (e.g. packs the
    upload in progress already wrote). ``times``: each listed key's stored time (seconds
    since the epoch), for the kept uploads marked ``unreadable``; without it those keep
    every object. Raises ``ValueError`` when a listed manifest was not given, or when
    ``keep`` keeps none of the uploads.
    """
    if not SYSTEM_ID_RE.match(system_id):
        raise ValueError(f"invalid system_id {system_id!r}")
    prefix = f"systems/{system_id}/"
    now = now if now.tzinfo is not None else now.replace(tzinfo=UTC)
    by_id = _index_manifests(prefix, manifests, listing)
    kept = [by_id[u] for u in sorted(set(keep) & set(by_id))]
    if by_id and not kept:
        raise ValueError("the plan would remove every upload; refusing")
    removed = sorted(set(by_id) - set(keep))
    live, pack_ranges = _mark(prefix, kept)
    busy, crashed = _unfinished(prefix, listing, by_id, in_progress, now, grace)
    delete_manifests = tuple(by_id[u].manifest_key for u in removed)
    # what an unreadable kept upload may use: neither swept, nor moved, nor replaced
    fenced = _fenced(prefix, kept, listing, times or {}, fence_margin)
    hold = live | set(pack_ranges) | busy | fenced | set(protected) | set(delete_manifests)
    swept = tuple(prefix + d for d in SWEPT_DIRS)
    delete_objects = tuple(k for k in sorted(listing) if k.startswith(swept) and k not in hold)
    # a folder whose objects all stay (those of a dropped format-1 upload that kept ones
    # still use) is no interrupted upload swept
    swept_folders = set(_folders(prefix, delete_objects))
    crashed = [u for u in crashed if u in swept_folders]
    whole_bytes = sum(listing.get(key, 0) for key in live - {prefix + OWNER_NAME})
    # the packs of a sealed upload that cannot be rewritten stay where they are, also
    # those known only from its objects list (``ManifestRefs.movable``)
    fixed = {c.pack for r in kept if not r.movable for c in r.chunk_refs()}
    fixed |= {k for r in kept if not r.movable for k in r.objects} | fenced
    movable = {k: v for k, v in pack_ranges.items() if k not in fixed}
    chosen = choose_repacks(
        movable, listing, whole_bytes, repack_ratio, stored_bound, repack_budget
    )
    rewrite, replaced = _rewrites(kept, {p.key for p in chosen})
    pack_live = sum(n for r in pack_ranges.values() for _, n in merge_ranges(r))
    stored = whole_bytes + sum(listing.get(k, 0) for k in pack_ranges)
    repack_freed = sum(p.size - p.live_bytes for p in chosen)
    missing = (live | set(pack_ranges)) - set(listing) - {prefix + OWNER_NAME}
    return PrunePlan(
        kept_uploads=tuple(r.upload_id for r in kept),
        removed_uploads=tuple(removed),
        crashed_uploads=tuple(crashed),
        delete_manifests=delete_manifests,
        delete_objects=delete_objects,
        new_packs=group_repacks(chosen, pack_target),
        rewrite_manifests=tuple(rewrite),
        replaced=tuple(sorted(replaced - busy - fenced - set(protected))),
        missing=tuple(sorted(missing)),
        unreadable=tuple(f"upload {r.upload_id}: {r.unreadable}" for r in kept if r.unreadable),
        freed_bytes=sum(listing.get(k, 0) for k in (*delete_manifests, *delete_objects)),
        repack_freed_bytes=repack_freed,
        referenced_bytes=whole_bytes + pack_live,
        live_stored_bytes=stored - repack_freed,
        listed_bytes=sum(listing.values()),
    )
