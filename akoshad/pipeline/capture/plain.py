"""Plain files: a small file read into memory, or a stable copy (unchanged across the
read), or, for a large file, the file where it lies, checked unchanged after the upload
read it."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

from akoshad.errors import SnapshotError
from akoshad.fileio import (
    LinkRefused,
    LiveStat,
    open_resolved,
    read_resolved,
)
from akoshad.manifest.facts import Facts, json_facts, json_facts_of
from akoshad.pipeline.capture.base import CaptureBase
from akoshad.pipeline.capture.files import (
    Captured,
    CapturedFile,
    CaptureResult,
    Vanished,
    _backoff,
    _regular_lstat,
    copy_hashing,
    hash_stream,
    lstat_or_none,
    mode_of,
)
from akoshad.pipeline.storefiles import kind_of_head

HELD_NAME = "held-in-memory"  # the ``staged`` name of a file captured into memory
# free space left beside a large file's copy in staging (the state database shares it)
STAGING_MARGIN = 256 * 1024 * 1024
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# a ``*.json`` file read whole but not parsing is read again up to 3 times (within
# 0.35 s): a writer that rewrites it in place (truncate, then write) leaves it empty or half
# written for a moment; one that still does not parse is captured as it is
TORN_JSON_LOOKS = 4


def _looks_torn(facts: Facts | None, attempt: int, attempts: int) -> bool:
    """Whether a stable read of a file whose ``facts`` say its JSON does not parse is read
    again (``attempt``, 0-based, of ``attempts``)."""
    last = min(attempts, TORN_JSON_LOOKS) - 1
    return facts is not None and facts.json_ok is False and attempt < last


def _read_failed(exc: OSError) -> BaseException:
    """What a failed read of a live file becomes: vanished, refused or denied as they are
    (the caller maps them), anything else worth another try later."""
    if isinstance(exc, FileNotFoundError | PermissionError | LinkRefused):
        return exc
    return SnapshotError(f"read failed: {exc.strerror or exc}", retry=True)


class StagingFull(SnapshotError):
    """A copy into staging met a full file system (or quota, or file size limit)."""


class CopyKeptChanging(SnapshotError):
    """The file changed during every copy into staging."""


class PlainCapture(CaptureBase):
    """Plain files: in memory, a stable copy, or (large) where they lie; see the module."""

    def _capture_in_memory(
        self, rel: str, real: str | Path, first: os.stat_result | None = None
    ) -> CaptureResult | None:
        """A small plain file read once into memory, under the pass's memory budget: its
        stat identity (size, mtime, inode) must be the same before and after the read,
        else it is read again. None: not one (too big, no budget left, or its head says
        DuckDB or SQLite): the caller captures it the usual way. ``first``: the file's own
        ``lstat``, just taken by the caller (a regular file): the first read's "before"."""
        for attempt in range(self.attempts):
            before = first if attempt == 0 and first is not None else _regular_lstat(real)
            size = before.st_size
            if size >= self.memory_max_file or not self.memory.take(size):
                return None
            kept = False
            try:
                try:
                    data = read_resolved(real, size + 1)  # one byte more: a file that grew shows
                except OSError as exc:
                    raise _read_failed(exc) from None
                if kind_of_head(data[:16]) != "file":
                    return None
                after = lstat_or_none(real)
                if after is None:
                    return Vanished(rel)
                live = LiveStat.of(before)
                stable = live.same_content_identity(LiveStat.of(after)) and len(data) == size
                facts = json_facts_of(rel, data) if stable else None
                if stable and not _looks_torn(facts, attempt, self.attempts):
                    captured = CapturedFile(
                        rel,
                        self.held_path,  # never created: the bytes are held
                        size,
                        hashlib.sha256(data).hexdigest(),
                        "file",
                        live,
                        facts=facts,
                        mode=mode_of(before),
                        held=self.memory.keep(data),
                    )
                    kept = True
                    return Captured(rel, (captured,))
            finally:
                if not kept:
                    self.memory.give(size)
            self.sleep(_backoff(attempt))
        raise SnapshotError(f"kept changing during {self.attempts} reads", retry=True)

    def _capture_in_place(self, rel: str, real: Path, hash_if_size: int | None) -> CaptureResult:
        """A large plain file is captured where it lies (no second copy of a big file on
        disk); the upload reads it from there and checks afterwards that it did not change
        (nor became a symlink: its own stat is compared).

        It is hashed here only when it may be a duplicate (its size is ``hash_if_size``, the
        size last uploaded); otherwise the uploader hashes it while sending it, so the file
        is not read once before the upload starts."""
        for attempt in range(self.attempts):
            before = _regular_lstat(real)
            if before.st_size != hash_if_size:
                deferred = CapturedFile(
                    rel,
                    real,
                    before.st_size,
                    None,
                    "file",
                    LiveStat.of(before),
                    True,
                    mode=mode_of(before),
                )
                return Captured(rel, (deferred,))
            try:
                with open_resolved(real) as fh:
                    size, sha = hash_stream(fh)
            except OSError as exc:
                raise _read_failed(exc) from None
            after = lstat_or_none(real)
            if after is None:
                return Vanished(rel)
            if LiveStat.of(before) == LiveStat.of(after) and size == after.st_size:
                captured = CapturedFile(
                    rel, real, size, sha, "file", LiveStat.of(before), True, mode=mode_of(before)
                )
                return Captured(rel, (captured,))
            self.sleep(_backoff(attempt))
        raise SnapshotError(f"kept changing during {self.attempts} reads", retry=True)

    def _capture_stable(self, rel: str, real: Path, hash_if_size: int | None) -> CaptureResult:
        """A stable copy in staging; a large file where it lies, unless it changed while
        its last upload read it there (:meth:`Snapshotter.moved_while_sent`): then copies
        (while it keeps changing, it waits and the other files go up), until one lands.
        When staging has no room for the copy (checked before, or met during one), no copy
        is tried again: the file waits, the other files going up, until it has been left
        alone (``capture.quiet``), and is then read where it lies."""
        st = _regular_lstat(real)
        if st.st_size < self.in_place_min_bytes:
            return self._capture_copy(rel, real)
        if rel not in self.moved_in_place:
            return self._capture_in_place(rel, real, hash_if_size)
        if not self.no_room.copy_failed(rel) and self._room_in_staging(st.st_size):
            return self._copy_moved(rel, real, LiveStat.of(st))
        if not self.no_room.ready(rel, LiveStat.of(st)):  # read in place, it would move
            raise SnapshotError(
                f"still being written, and no room to stage a copy in {self.staging} "
                f"({st.st_size} bytes and {STAGING_MARGIN >> 20} MiB besides): it is "
                "read where it lies once it has been left alone for a minute",
                retry=True,
            )
        self.moved_in_place.discard(rel)
        self.copy_kept_changing.discard(rel)
        return self._capture_in_place(rel, real, hash_if_size)

    def _copy_moved(self, rel: str, real: Path, stat: LiveStat) -> CaptureResult:
        """The copy of a large file that moved while read in place. A copy that kept
        changing is not begun again (each is a full read and write of a large file) until a
        look finds the file unchanged since the look before, or a new file by the name
        (``capture.quiet``): a file written between every two looks is copied once an hour
        at most, not at every retry."""
        busy = self.copy_kept_changing
        if rel in busy and not busy.ready(rel, stat):
            raise SnapshotError(
                "kept changing while it was copied into staging: it is copied again once "
                "it is found unchanged since the look before",
                retry=True,
            )
        try:
            result = self._capture_copy(rel, real)
        except StagingFull:
            self.no_room.add_failed_copy(rel, LiveStat.of(_regular_lstat(real)))
            raise
        except CopyKeptChanging:
            busy.wait(rel, LiveStat.of(_regular_lstat(real)))
            raise
        self.moved_in_place.discard(rel)  # copied: in place again next time
        self.no_room.discard(rel)
        busy.discard(rel)
        return result

    def _room_in_staging(self, size: int) -> bool:
        """Whether staging's file system has ``size`` bytes free, and a margin besides (the
        state database shares it): a copy that cannot fit is not begun."""
        try:
            free = shutil.disk_usage(self.staging).free
        except OSError:
            return False
        return free - size >= STAGING_MARGIN

    def _capture_copy(self, rel: str, real: Path) -> CaptureResult:
        """A copy in staging that is the file as it stood (unchanged across the copy)."""
        staged = self._stage_path(rel)
        for attempt in range(self.attempts):
            before = _regular_lstat(real)
            try:
                size, sha = copy_hashing(real, staged)
            except OSError as exc:
                staged.unlink(missing_ok=True)
                if exc.errno in NO_ROOM:  # the copy's side, not the store file's
                    why = f"no room to stage a copy in {self.staging}: {exc.strerror or exc}"
                    raise StagingFull(why, retry=True) from None
                raise _read_failed(exc) from None
            after = lstat_or_none(real)
            if after is None:
                staged.unlink(missing_ok=True)
                return Vanished(rel)
            live = LiveStat.of(before)
            stable = live.same_content_identity(LiveStat.of(after)) and size == after.st_size
            facts = json_facts(rel, staged) if stable else None
            if stable and not _looks_torn(facts, attempt, self.attempts):
                captured = CapturedFile(
                    rel,
                    staged,
                    size,
                    sha,
                    "file",
                    live,
                    facts=facts,
                    mode=mode_of(before),
                )
                return Captured(rel, (captured,))
            self.sleep(_backoff(attempt))
        staged.unlink(missing_ok=True)
        raise CopyKeptChanging(f"kept changing during {self.attempts} copy attempts", retry=True)
