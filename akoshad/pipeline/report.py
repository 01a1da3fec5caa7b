"""What one drain pass did: the report status, metrics and ``sync --wait`` read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from akoshad.pipeline.capture.snapshot import Captured


@dataclass
class PassReport:
    """What one drain pass did."""

    target: str
    claimed: int = 0
    upload_id: str | None = None
    files_uploaded: list[str] = field(default_factory=list)
    bytes_uploaded: int = 0
    bytes_sent: int = 0
    deduplicated: int = 0
    deleted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    retrying: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    permanent: bool = False
    source_changed: bool = False  # the error: a store file moved while it was sent
    waiting: bool = False
    memories: dict[str, Any] | None = None
    memory_error: str | None = None
    memory_failed: bool = False  # the delivery to Akosha failed (``failure`` event)
    captures: list[Captured] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.error is None
            and self.memory_error is None
            and not self.skipped
            and not self.retrying
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "upload_id": self.upload_id,
            "files_uploaded": self.files_uploaded,
            "bytes_uploaded": self.bytes_uploaded,
            "bytes_sent": self.bytes_sent,
            "deduplicated": self.deduplicated,
            "deleted": self.deleted,
            "skipped": self.skipped,
            "retrying": self.retrying,
            "error": self.error,
            "source_changed": self.source_changed,
            "memories": self.memories,
            "memory_error": self.memory_error,
        }


def moved_only(report: PassReport) -> bool:
    """The pass failed only because a store file changed while it was sent (its rows are
    due again at once)."""
    return report.source_changed and report.error is not None and report.memory_error is None


def superseded(reports: list[PassReport]) -> list[PassReport]:
    """``reports`` without the passes a store file's change stopped and a later pass
    followed (what that one did decides)."""
    last = len(reports) - 1
    return [r for i, r in enumerate(reports) if not (moved_only(r) and i < last)]


def drained_ok(reports: list[PassReport]) -> bool:
    """Every pass that decides was ok (:func:`superseded` left out)."""
    return all(r.ok for r in superseded(reports))
