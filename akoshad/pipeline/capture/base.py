"""What every kind of capture needs of the snapshotter: where the store and the staging
directory are, how often to try, how to wait, and a fresh private name in staging."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from akoshad.pipeline.capture.files import MemoryBudget, Sleep

if TYPE_CHECKING:
    from akoshad.pipeline.capture.quiet import QuietWatch


class CaptureBase:
    """The snapshotter's settings, shared by the plain, DuckDB and SQLite captures."""

    data_dir: Path
    staging: Path
    attempts: int
    sleep: Sleep
    validate_duckdb: bool
    in_place_min_bytes: int
    memory_max_file: int  # plain files below this size are captured into memory
    memory: MemoryBudget
    held_path: Path  # the ``staged`` name of a file captured into memory (never created)
    # large plain files that changed while their upload read them in place: copied next time
    moved_in_place: set[str]
    # of those, the ones staging has no room to copy: read in place once left alone
    # (``capture.quiet.QuietWatch``)
    no_room: QuietWatch
    # of those, the ones whose copy kept changing: copied again once left alone
    copy_kept_changing: QuietWatch
    _n: int

    def _stage_path(self, rel: str) -> Path:
        self._n += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", rel)[-80:]
        return self.staging / f"{self._n:06d}-{safe}"
