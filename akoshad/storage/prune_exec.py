"""Run a prune plan on a target, crash-safe, and the whole prune (``run_prune``).

Order (``prune_plan`` explains why each step is safe to interrupt with ``kill -9``):
1. delete the dropped uploads' manifests; 2. sweep unreferenced objects; 3. write the new
packs (the live ranges of the old ones, streamed with ``target.read`` into a ``PackWriter``,
uploaded with ``put_object_file``); 4. rewrite the affected kept manifests (documents first, the
manifest last); 5. delete the old packs and the replaced documents.

Before any pack is deleted (steps 2 and 5) ``hooks.forget_pack(key)`` lets the caller drop
that pack's chunks from its ledger; after step 4 ``hooks.record_chunks`` gets the moved
chunks' new locations. Step 5 deletes only what no kept manifest references once rewritten
(a rewritten document whose content did not change keeps its key, and a new pack that could
not be written leaves its sources in place). ``hooks.on_step(i, step)`` runs before each
step (deletions: before each batch).
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import time
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from akoshad.names import MANIFEST_NAME
from akoshad.storage.crypto import Identities
from akoshad.storage.owner import Ownership
from akoshad.storage.owner_takeover import settle_takeover
from akoshad.storage.packs import PACK_MAX, PackWriter, SealedPack
from akoshad.storage.prune_documents import PruneError
from akoshad.storage.prune_load import PruneInput, load_for_prune
from akoshad.storage.prune_plan import PrunePlan, Step, plan_prune
from akoshad.storage.prune_refs import ManifestRefs
from akoshad.storage.prune_result import PruneHooks, PruneResult
from akoshad.storage.prune_rewrite import RelocationError, Relocator, Rewriter
from akoshad.storage.repack import NewPack
from akoshad.storage.retention import Retention, Upload, apply_retention
from akoshad.storage.sealed_documents import Resealing
from akoshad.targets.base import Target

DELETE_BATCH = 1000
STAGING_NAME = "prune"  # our own subdirectory of the staging dir, emptied at each start
_DELETES = ("delete_manifest", "delete_object", "delete_replaced")


@dataclass
class _Run:
    target: Target
    plan: PrunePlan
    loaded: PruneInput
    staging_dir: Path
    hooks: PruneHooks
    ownership: Ownership | None
    deleted: int = 0
    deleted_bytes: int = 0
    packs_written: int = 0
    relocator: Relocator = field(default_factory=Relocator)
    skipped_sources: set[str] = field(default_factory=set)
    rewriter: Rewriter | None = None
    pack_prefix: str = ""
    live: set[str] = field(default_factory=set)  # referenced after the rewrites (step 5)

    async def delete(self, keys: list[str]) -> None:
        packs = [k for k in keys if k.startswith(self.pack_prefix)]
        if self.hooks.forget_pack is not None:
            for key in packs:  # the ledger forgets a pack before it disappears
                await self.hooks.forget_pack(key)
        if self.hooks.before_delete is not None:
            await self.hooks.before_delete()
        await self.target.delete_keys(keys)
        freed = sum(self.loaded.listing.get(k, 0) for k in keys)
        self.deleted += len(keys)
        self.deleted_bytes += freed
        if self.hooks.deleted is not None:
            await self.hooks.deleted(keys, freed)

    async def write_pack(self, pack: NewPack) -> None:
        if pack.live_bytes > PACK_MAX:
            self.skipped_sources |= {s.key for s in pack.sources}
            return
        sealed = await self._fill(pack)
        try:
            await self.target.put_object_file(sealed.key, sealed.path, sealed.size, sealed.crc32)
        finally:
            await asyncio.to_thread(sealed.path.unlink, missing_ok=True)
        self.relocator.add(pack, sealed.key)
        self.packs_written += 1
        assert self.rewriter is not None
        self.rewriter.written[sealed.key] = sealed.size

    async def _fill(self, pack: NewPack) -> SealedPack:
        """Stream each source pack once, copying its live ranges into one new pack file."""
        writer = PackWriter(self.staging_dir, self.loaded.system_id, PACK_MAX, PACK_MAX)
        sealed: list[SealedPack] = []
        with writer:
            for source in pack.sources:
                ranges = list(source.live_ranges)
                pos = 0
                async for piece in self.target.read(source.key):
                    end = pos + len(piece)
                    while ranges and ranges[0][0] < end:
                        start, length = ranges[0]
                        lo, hi = max(start, pos), min(start + length, end)
                        if hi > lo:
                            sealed += await asyncio.to_thread(
                                _add_named, writer, piece[lo - pos : hi - pos]
                            )
                        if start + length > end:
                            break
                        ranges.pop(0)
                    pos = end
                if ranges:
                    raise PruneError(f"pack {source.key} is shorter than its live chunks")
            last = await asyncio.to_thread(writer.flush)
        sealed += [last] if last is not None else []
        if len(sealed) != 1 or sealed[0].size != pack.live_bytes:
            raise PruneError("a new pack did not come out as planned")
        return sealed[0]

    async def rewrite(self, manifest_key: str) -> None:
        assert self.rewriter is not None
        loaded = self.loaded.by_key()[manifest_key]
        try:
            await self.rewriter.rewrite(manifest_key, loaded.doc, loaded.upload_id)
        except RelocationError as exc:
            raise PruneError(f"rewriting {manifest_key}: {exc}; old packs kept") from None

    def still_live(self) -> set[str]:
        """Every key a kept manifest references after the rewrites."""
        assert self.rewriter is not None
        live: set[str] = set()
        kept = set(self.plan.kept_uploads)
        for m in self.loaded.manifests:
            if m.upload_id not in kept:
                continue
            r = self.rewriter.refs.get(m.key, m.refs)  # rewritten: what it references now
            live |= r.named(packs=True)
        return live


async def execute_plan(
    target: Target,
    plan: PrunePlan,
    loaded: PruneInput,
    *,
    staging_dir: Path,
    hooks: PruneHooks | None = None,
    ownership: Ownership | None = None,
    delete_batch: int = DELETE_BATCH,
    resealing: Resealing | None = None,
) -> PruneResult:
    """Run ``plan`` (made from ``loaded``) on ``target``; ``staging_dir`` (private, 0700)
    holds new packs until they are uploaded. Raises :class:`PruneError`, ``NotOwner`` or the
    target's errors; whatever was done so far leaves every kept upload restorable."""
    started = time.monotonic()
    prefix = f"systems/{loaded.system_id}/"
    own_dir = await asyncio.to_thread(_fresh_dir, staging_dir / STAGING_NAME)
    run = _Run(target, plan, loaded, own_dir, hooks or PruneHooks(), ownership)
    run.pack_prefix = prefix + "packs/"
    run.relocator = Relocator(resealing=resealing)
    run.rewriter = Rewriter(target, loaded.system_id, run.relocator, dict(loaded.documents))
    try:
        await _run_steps(run, plan.steps(), delete_batch)
    finally:
        await asyncio.to_thread(_remove_dir, own_dir)
    return _result(run, started)


async def _run_steps(run: _Run, steps: list[Step], delete_batch: int) -> None:
    """The plan's steps, in order (deletions in batches)."""
    i = 0
    while i < len(steps):
        step = steps[i]
        if step.op == "delete_replaced" and (i == 0 or steps[i - 1].op != step.op):
            await _before_replaced(run)
        if run.hooks.on_step is not None:
            await run.hooks.on_step(i, step)
        if step.op in _DELETES:
            batch = [s.key for s in steps[i : i + delete_batch] if s.op == step.op]
            if step.op == "delete_replaced":
                batch = [k for k in batch if k not in run.live]
            i += sum(1 for s in steps[i : i + delete_batch] if s.op == step.op)
            if batch:
                await run.delete(batch)
            continue
        if step.op == "write_pack" and step.new_pack is not None:
            await run.write_pack(step.new_pack)
        elif step.op == "rewrite_manifest":
            await run.rewrite(step.key)
        i += 1


def _add_named(writer: PackWriter, data: bytes) -> list[SealedPack]:
    """Copy ``data`` into the new pack under the sha256 of its bytes: a pack's id is the
    layout of its named slots, so two new packs share a key only when they hold the same
    bytes (unnamed slots would give every copy of equal lengths the same key, and the
    later pack would overwrite the earlier one's chunks)."""
    return writer.add(hashlib.sha256(data).hexdigest(), data)


def _manifest_gone(loaded: PruneInput, finished: set[str]) -> dict[str, str]:
    """Upload id -> manifest key, for the ``finished`` uploads whose folder is still
    listed without its manifest."""
    base = f"systems/{loaded.system_id}/uploads/"
    out: dict[str, str] = {}
    for key in loaded.listing:
        if key.startswith(base):
            upload_id = key[len(base) :].split("/", 1)[0]
            manifest = f"{base}{upload_id}/{MANIFEST_NAME}"
            if upload_id in finished and manifest not in loaded.listing:
                out[upload_id] = manifest
    return out


def _remove_dir(path: Path) -> None:
    """Remove the run's own directory once it ended (a finished prune leaves nothing that
    the next start would report as left over by an interrupted one)."""
    shutil.rmtree(path, ignore_errors=True)


def _fresh_dir(path: Path) -> Path:
    """``path`` as an empty private directory (what a killed prune left there is removed;
    a link in its place is refused by ``PackWriter``'s own check)."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        if not path.is_symlink() and path.is_dir():
            for child in path.iterdir():
                if child.is_file() and not child.is_symlink():
                    child.unlink()
    return path


async def _before_replaced(run: _Run) -> None:
    """Between the rewrites and the deletion of what they replaced: what is still
    referenced is known, the ledger learns the moved chunks, and this machine must still
    own the system id."""
    run.live = run.still_live() | run.skipped_sources
    if run.hooks.record_chunks is not None and run.relocator.moved:
        await run.hooks.record_chunks(dict(run.relocator.moved))
    if run.ownership is not None:
        await run.ownership.check(force=True)


def _result(run: _Run, started: float) -> PruneResult:
    assert run.rewriter is not None
    result = PruneResult.from_plan(run.plan, dry_run=False)
    written = sum(run.rewriter.written.values())
    replaced_manifests = sum(run.loaded.listing.get(k, 0) for k in run.rewriter.refs)
    stored_before = sum(run.loaded.listing.values())
    stored_after = stored_before - run.deleted_bytes + written - replaced_manifests
    result.objects_deleted = run.deleted
    result.packs_written = run.packs_written
    result.packs_repacked = len(run.plan.old_packs - run.skipped_sources)
    result.manifests_rewritten = len(run.rewriter.refs)
    result.bytes_freed = stored_before - stored_after
    result.bytes_stored_after = stored_after
    result.seconds = time.monotonic() - started
    return result


async def run_prune(
    target: Target,
    system_id: str,
    policy: Retention,
    *,
    staging_dir: Path,
    now: datetime | None = None,
    dry_run: bool = False,
    ownership: Ownership | None = None,
    hooks: PruneHooks | None = None,
    in_progress: Collection[str] = (),
    protected: Collection[str] = (),
    finished: Collection[str] = (),
    delete_batch: int = DELETE_BATCH,
    identities: Identities | None = None,
    resealing: Resealing | None = None,
    last_made: str | None = None,
) -> PruneResult:
    """The whole prune: check ownership, load, apply ``policy``, plan, execute (or, with
    ``dry_run``, report the plan). Call under the daemon's pass lock. Within
    ``TAKEOVER_QUIET`` of this machine's takeover only a dry run goes on.

    ``finished``: ids of uploads known to have completed (the writer's own history). A
    folder of one whose manifest is gone is what an interrupted prune left: it is swept now,
    not taken for an upload in progress until the planner's grace has passed.
    ``identities`` open the sealed documents of encrypted uploads; with ``resealing`` too
    (the recipients and name key configured now) the packs of those it named may be
    repacked, their documents rewritten sealed. ``last_made``: the last upload this
    machine made in ``target`` (its ledger's files), kept whatever its id: after a clock
    that ran ahead was set right, it sorts before the uploads dated ahead, yet holds the
    store as it is now."""
    started = time.monotonic()
    when = now or datetime.now(UTC)
    if ownership is not None:
        record = await ownership.check(force=True, claim=not dry_run)
        if record is not None and not dry_run:
            settle_takeover(record, system_id, datetime.now(UTC))

    def retained(uploads: list[Upload]) -> frozenset[str]:
        # the newest upload is the one with the greatest id (``restore --latest``, the
        # writer's ledger): kept even when a clock set back dated it before older ones
        newest = {max(u.upload_id for u in uploads)} if uploads else set()
        ours = {u.upload_id for u in uploads if u.upload_id == last_made}
        return apply_retention(uploads, policy, now=when).keep_ids | newest | ours

    loaded = await load_for_prune(
        target, system_id, keep=retained, identities=identities, resealing=resealing
    )
    keep = set(retained(loaded.uploads())) | set(loaded.untimed())
    gone = _manifest_gone(loaded, set(finished) - set(in_progress))
    try:
        plan = plan_prune(
            system_id,
            loaded.refs() + [ManifestRefs(u, key) for u, key in gone.items()],
            loaded.listing,
            keep,
            now=when,
            in_progress=in_progress,
            protected=protected,
            times=loaded.times,
        )
    except ValueError as exc:
        raise PruneError(f"prune stopped, nothing deleted: {exc}") from None
    if gone:  # removed already: only their objects are left to sweep
        plan = replace(
            plan,
            removed_uploads=tuple(u for u in plan.removed_uploads if u not in gone),
            delete_manifests=tuple(k for k in plan.delete_manifests if k in loaded.listing),
        )
    if dry_run:
        result = PruneResult.from_plan(plan, dry_run=True)
        result.seconds = time.monotonic() - started
        return result
    if ownership is not None and plan.steps():  # a takeover before the listing: its first
        # upload's packs may be listed, its manifest not (swept); one after: none listed
        await ownership.check(force=True, claim=False)
    result = await execute_plan(
        target,
        plan,
        loaded,
        staging_dir=staging_dir,
        hooks=hooks,
        ownership=ownership,
        delete_batch=delete_batch,
        resealing=resealing,
    )
    result.seconds = time.monotonic() - started
    return result
