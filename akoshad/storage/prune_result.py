"""What a prune reports (:class:`PruneResult`, the result of ``prune --json``) and the
callbacks its caller gives it (:class:`PruneHooks`); ``prune_exec`` runs it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from akoshad.storage import refs
from akoshad.storage.prune_plan import PrunePlan, Step


@dataclass
class PruneHooks:
    """Callbacks of the caller: ledger updates and a step marker (tests, progress)."""

    forget_pack: Callable[[str], Awaitable[None]] | None = None
    # chunk identity (its sha256, or its keyed name when sealed) -> new location
    record_chunks: Callable[[Mapping[str, refs.ChunkRef]], Awaitable[None]] | None = None
    on_step: Callable[[int, Step], Awaitable[None]] | None = None
    # before each batch is deleted: what the hooks recorded made durable (a power loss
    # must not keep a deletion and lose the ledger's forgetting of what it deleted)
    before_delete: Callable[[], Awaitable[None]] | None = None
    # after each batch is deleted: its keys and their listed bytes (what was really
    # deleted so far outlives a prune stopped part way)
    deleted: Callable[[list[str], int], Awaitable[None]] | None = None


@dataclass
class PruneResult:
    """What a prune did (or, with ``dry_run``, would do): ``to_json`` is ``prune --json``."""

    dry_run: bool
    uploads_kept: int
    uploads_removed: list[str]
    crashed_uploads: list[str]
    objects_deleted: int = 0
    packs_written: int = 0
    packs_repacked: int = 0
    manifests_rewritten: int = 0
    bytes_freed: int = 0
    bytes_referenced: int = 0
    bytes_stored_after: int = 0
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    seconds: float = 0.0
    upload_id: str | None = None  # the newest upload kept

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "upload_id": self.upload_id,
            "uploads_kept": self.uploads_kept,
            "uploads_removed": self.uploads_removed,
            "crashed_uploads": self.crashed_uploads,
            "objects_deleted": self.objects_deleted,
            "packs_written": self.packs_written,
            "packs_repacked": self.packs_repacked,
            "manifests_rewritten": self.manifests_rewritten,
            "bytes_freed": self.bytes_freed,
            "bytes_referenced": self.bytes_referenced,
            "bytes_stored_after": self.bytes_stored_after,
            "missing": self.missing,
            "unreadable": self.unreadable,
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_plan(cls, plan: PrunePlan, *, dry_run: bool) -> PruneResult:
        return cls(
            dry_run=dry_run,
            uploads_kept=len(plan.kept_uploads),
            upload_id=max(plan.kept_uploads, default=None),
            uploads_removed=list(plan.removed_uploads),
            crashed_uploads=list(plan.crashed_uploads),
            objects_deleted=plan.deleted_count,
            packs_written=len(plan.new_packs),
            manifests_rewritten=len(plan.rewrite_manifests),
            packs_repacked=len(plan.old_packs),
            bytes_freed=plan.freed_bytes + plan.repack_freed_bytes,
            bytes_referenced=plan.referenced_bytes,
            bytes_stored_after=plan.stored_after_bytes,
            missing=list(plan.missing),
            unreadable=list(plan.unreadable),
        )
