"""DuckDB: the database and its WAL copied as one pair while they hold still, the copy
validated in a child process."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING

from akoshad.errors import SnapshotError
from akoshad.fileio import (
    OUTSIDE,
    LinkRefused,
    LiveStat,
    resolve_under,
)
from akoshad.manifest.facts import Facts
from akoshad.pipeline.capture.base import CaptureBase
from akoshad.pipeline.capture.files import (
    Captured,
    CapturedFile,
    CaptureResult,
    Vanished,
    _backoff,
    _regular_lstat,
    _same_wal,
    copy_hashing,
    copy_hashing_if,
    lstat_or_none,
    mode_of,
)
from akoshad.pipeline.storefiles import CHECKPOINT_WAL

if TYPE_CHECKING:
    from akoshad.duckdb_worker import Runner

NOT_REGULAR = "not a regular file"


def _checkpointing(real: Path) -> bool:
    """Whether DuckDB's checkpoint WAL is beside the database: a checkpoint is under way
    (the commits made meanwhile are in it, not in the pair) or a writer killed during one
    left it (its database opened again merges it)."""
    return lstat_or_none(real.with_name(real.name + CHECKPOINT_WAL)) is not None


class DuckDBCapture(CaptureBase):
    """DuckDB: the database and its WAL copied as one pair while they hold still, the copy
    validated by ``duckdb`` (the long-lived child; None: a child per copy)."""

    duckdb: Runner | None

    def _wal_of(self, live: Path) -> tuple[Path | None, str | None]:
        """The resolved ``.wal`` of the DuckDB file ``live`` (named as the writer names it),
        or (None, reason) when it is a symlink out of data_dir or not a regular file (a
        directory, a FIFO): never read, then (the database is captured without it)."""
        try:
            wal = resolve_under(self.data_dir.resolve(), live.with_name(live.name + ".wal"))
        except LinkRefused as exc:
            return None, exc.strerror or OUTSIDE
        st = lstat_or_none(wal)
        if st is not None and not stat.S_ISREG(st.st_mode):
            return None, NOT_REGULAR
        return wal, None

    def _capture_duckdb(
        self, rel: str, live: Path, real: Path, hash_if_size: int | None = None
    ) -> CaptureResult:
        """Capture a DuckDB file and its WAL as one consistent pair; the database's copy is
        hashed only when its size is ``hash_if_size`` (its last upload's: it may be a
        duplicate), the WAL's always."""
        wal, refused = self._wal_of(live)
        staged_db = self._stage_path(rel)
        staged_wal = staged_db.with_name(staged_db.name + ".wal")
        try:
            return self._copy_duckdb_pair(
                rel, real, (wal, refused), (staged_db, staged_wal), hash_if_size
            )
        except BaseException:
            staged_db.unlink(missing_ok=True)
            staged_wal.unlink(missing_ok=True)
            raise

    def _copy_duckdb_pair(
        self,
        rel: str,
        real: Path,
        wal_of: tuple[Path | None, str | None],
        staged: tuple[Path, Path],
        hash_if_size: int | None,
    ) -> CaptureResult:
        wal, refused = wal_of
        staged_db, staged_wal = staged
        checkpointing = False
        for attempt in range(self.attempts):
            checkpointing = _checkpointing(real)
            if checkpointing:  # the pair lacks commits, and moves: not copied now
                self.sleep(_backoff(attempt))
                continue
            db_before = _regular_lstat(real)
            wal_before = lstat_or_none(wal) if wal is not None else None
            db_size, db_sha = copy_hashing_if(real, staged_db, hash_if_size)
            wal_entry: tuple[int, str] | None = None
            if wal is not None and wal_before is not None and wal_before.st_size > 0:
                try:
                    wal_entry = copy_hashing(wal, staged_wal)
                except FileNotFoundError:
                    self.sleep(_backoff(attempt))  # checkpointed away mid-copy: again
                    continue
            else:
                staged_wal.unlink(missing_ok=True)
            db_after = lstat_or_none(real)
            wal_after = lstat_or_none(wal) if wal is not None else None
            if db_after is None:
                staged_wal.unlink(missing_ok=True)
                staged_db.unlink(missing_ok=True)
                return Vanished(rel)
            if not (
                LiveStat.of(db_before).same_content_identity(LiveStat.of(db_after))
                and _same_wal(wal_before, wal_after)
                and not _checkpointing(real)
            ):
                self.sleep(_backoff(attempt))
                continue
            note, facts = self._validate_duckdb(staged_db) if self.validate_duckdb else (None, None)
            files = [
                CapturedFile(
                    rel,
                    staged_db,
                    db_size,
                    db_sha,
                    "duckdb",
                    LiveStat.of(db_before),
                    facts=facts,
                    mode=mode_of(db_before),
                )
            ]
            if wal_entry is not None and wal_before is not None:
                files.append(
                    CapturedFile(
                        rel + ".wal",
                        staged_wal,
                        wal_entry[0],
                        wal_entry[1],
                        "duckdb-wal",
                        LiveStat.of(wal_before),
                        mode=mode_of(wal_before),
                    )
                )
            side = ((rel + ".wal", refused),) if refused is not None else ()
            if refused is not None:
                note = f"{rel}.wal not captured: {refused}" + (f"; {note}" if note else "")
            return Captured(rel, tuple(files), note, side)
        if checkpointing:
            raise SnapshotError(
                f"a DuckDB checkpoint is unfinished ({real.name}{CHECKPOINT_WAL} holds commits "
                "the pair lacks): captured once that file is gone (the checkpoint ends, or the "
                "database is opened again)",
                retry=True,
            )
        raise SnapshotError(
            f"DuckDB pair kept changing during {self.attempts} copy attempts", retry=True
        )

    def _validate_duckdb(self, staged_db: Path) -> tuple[str | None, Facts | None]:
        """Open the private copy read-only (with its WAL), in a child process so DuckDB is
        never loaded here. Returns a note and the row count of every table, or raises
        SnapshotError (also when the check crashed or hung)."""
        from akoshad.duckdb_worker import validate_copy

        return validate_copy(staged_db, self.duckdb)
