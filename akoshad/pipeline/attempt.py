"""The state of one upload being made (``upload.Uploader``): its plan, what it sent and
made, and how a lost send carries the extras already made."""

from __future__ import annotations

from dataclasses import dataclass, field

from akoshad.pipeline.plan import UploadPlan
from akoshad.pipeline.routes import ExtraObject
from akoshad.pipeline.sealing import Sealing
from akoshad.storage.refs import ChunkRef
from akoshad.store.db import LedgerEntry


@dataclass
class Attempt:
    """One upload being made: its plan, what it sent and made."""

    upload_id: str
    plan: UploadPlan
    table: dict[str, ChunkRef]  # the target's chunk table (in scope) when the attempt began
    sealing: Sealing | None = None
    new_refs: dict[str, ChunkRef] = field(default_factory=dict)
    rows: list[LedgerEntry] = field(default_factory=list)  # of the files sent
    extras: list[ExtraObject] = field(default_factory=list)
    documents: frozenset[str] = frozenset()
    landed: bool = False  # its manifest.json landed: the next start's recovery commits it


class SendFailed(Exception):
    """An upload was lost while sending; carries the extras already made."""

    def __init__(self, error: BaseException, extras: list[ExtraObject]) -> None:
        super().__init__(str(error))
        self.error = error
        self.extras = extras


async def no_extras() -> list[ExtraObject]:
    """No extra object (an upload without memories.json)."""
    return []
