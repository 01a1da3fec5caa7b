"""Watching ``data_dir`` (watchfiles) and the startup reconciliation against the ledger."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from loguru import logger
from watchfiles import Change, awatch

from akoshad.backoff import exponential
from akoshad.fastpath import StatMap, racy_stat
from akoshad.pipeline.debounce import Kind
from akoshad.pipeline.store_walk import WalkResult, walk_store
from akoshad.pipeline.storefiles import (
    CHECKPOINT_WAL,
    PathFilter,
    change_of,
    is_ignored,
    readable_dir,
    relpath,
    unreadable,
)
from akoshad.store.db import LedgerEntry

_KIND: dict[Change, Kind] = {
    Change.added: "added",
    Change.modified: "modified",
    Change.deleted: "deleted",
}
DIR_POLL_SECONDS = 1.0
# how often watchfiles' thread looks at what the kernel reported and at the stop event:
# it wakes (and takes the GIL) that often even when nothing happens; events are gathered
# in between, and a change is seen within a step or two
WATCH_STEP_MS = 200
# looks at a stop that watchfiles is told "not yet": the events it gathered in the steps
# before the stop are handed over first (watchfiles drops them when it stops)
LAST_LOOKS = 2
WATCH_STOP_SECONDS = (LAST_LOOKS + 2) * WATCH_STEP_MS / 1000  # the most a stop then takes
# the watch answers at least this often (an empty answer when nothing happened)
WATCH_IDLE_ANSWER_MS = 1000
# the longest a ``sync --wait`` waits for the watch to hand over what was written before it
HANDOVER_TIMEOUT_SECONDS = 5.0
# an answer received this long after a write holds its event (the kernel's queue read)
_HANDOVER_MARGIN_SECONDS = 0.02


class _AfterLastLooks:
    """The stop event as watchfiles sees it: set only after :data:`LAST_LOOKS` looks at
    the set event, so that what it gathered before the stop is handed over, not dropped."""

    def __init__(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self._looks = 0

    def is_set(self) -> bool:
        if not self._stop.is_set():
            return False
        self._looks += 1
        return self._looks > LAST_LOOKS

    def set(self) -> None:
        """What watchfiles does when its task is cancelled: the stop event is set."""
        self._stop.set()


# the longest pause between tries of a watch that cannot be set up (the store is
# reconciled at each)
WATCH_RETRY_MAX_SECONDS = 30.0


@dataclass(frozen=True)
class ReconcileResult:
    """What changed on disk relative to the ledger, and entries refused on the walk."""

    changes: list[tuple[str, Kind]]
    refused: dict[str, str]
    on_disk: int
    excluded: int = 0  # store files include/exclude left out


def _stat_key(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def reconcile(
    data_dir: Path,
    flt: PathFilter,
    ledger: dict[str, LedgerEntry],
    stats: StatMap | None = None,
    walk: WalkResult | None = None,
    *,
    resend: bool = False,
) -> ReconcileResult:
    """Compare the disk with the ledger (blocking): the stat fast path decides; content is
    hashed later, only for what differs. ctime catches a same-size rewrite whose mtime was
    put back. Ledger groups missing from disk are deletions. ``stats``: filled with the
    lstat of every entry on the same walk (``walk_store``); ``walk``: the store walked
    already (then nothing is walked here). ``resend``: every file is a change (what the
    ledger holds cannot be referenced any more: the encryption changed)."""
    groups: dict[str, list[LedgerEntry]] = {}
    for entry in ledger.values():
        groups.setdefault(entry.group_path, []).append(entry)
    if walk is None:
        walk = walk_store(data_dir, flt, stats)
    changes: list[tuple[str, Kind]] = []
    for rel in walk.files:
        entries = groups.get(rel)
        if not entries:
            changes.append((rel, "added"))
            continue
        if resend or _group_changed(data_dir, rel, entries):
            changes.append((rel, "modified"))
    seen = set(walk.files)
    # a store that selects no file at all (emptied, an unmounted disk, a directory made
    # anew, an include typo) does not empty the backup: what was uploaded stays as it is
    # and the status says why; a file gone or now excluded beside others leaves it
    if walk.files:
        changes += [(group, "deleted") for group in sorted(groups) if group not in seen]
    return ReconcileResult(changes, walk.refused, len(walk.files), walk.excluded)


def _group_changed(data_dir: Path, rel: str, entries: list[LedgerEntry]) -> bool:
    live = data_dir / rel
    expected = {rel: _stat_key(live)}
    wal = _stat_key(data_dir / (rel + ".wal"))
    if wal is not None and wal[0] > 0:
        expected[rel + ".wal"] = wal
    recorded = {e.path: e for e in entries}
    kinds = {e.kind for e in entries}
    if "duckdb" in kinds or "duckdb-wal" in kinds:
        # a checkpoint WAL holds commits no capture has: its database is not quiet yet
        if set(expected) != set(recorded) or _stat_key(live.with_name(live.name + CHECKPOINT_WAL)):
            return True
    else:
        expected = {rel: expected[rel]}
        if set(expected) != set(recorded):
            return True
        # SQLite in WAL mode: a -wal newer than the capture may hold commits. Not so a
        # -journal: in the rollback modes a commit writes the database itself (and one a
        # killed writer left half done had written it too), and PERSIST mode leaves one
        # newer than its database after every commit
        st = _stat_key(data_dir / (rel + "-wal"))
        if st is not None and st[0] > 0 and st[1] > recorded[rel].live.mtime_ns:
            return True
    for path, key in expected.items():
        e = recorded[path]
        if key is None or key != (e.live.size, e.live.mtime_ns, e.live.ctime_ns, e.live.inode):
            return True
    return False


async def _called(callback: Callable[[], asyncio.Future[None] | object]) -> None:
    """Call ``callback``; await what it returns when that is awaitable."""
    result = callback()
    if asyncio.isfuture(result) or asyncio.iscoroutine(result):
        await result


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions a (nested) group holds."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class StoreWatcher:
    """Feeds filesystem events of ``data_dir`` to ``on_change(path, kind)``.

    Waits for ``data_dir`` to appear, and starts over (calling ``on_reset``, which should
    reconcile) when the directory is removed or replaced. ``on_reset`` (or, on a start
    whose reconcile was done before, ``on_watching``: catch up with what changed since its
    walk) is called only once the watch is in place, so that nothing written between the
    walk and the watch goes unseen.
    """

    def __init__(
        self,
        data_dir: Path,
        flt: PathFilter,
        on_change: Callable[[Iterable[tuple[str, Kind]]], None],
        on_reset: Callable[[], asyncio.Future[None] | object],
        stop: asyncio.Event,
        on_watching: Callable[[], asyncio.Future[None] | object] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.flt = flt
        self.on_change = on_change
        self.on_reset = on_reset
        self.on_watching = on_watching  # after a start whose reconcile was done before it
        self.stop = stop
        self.watching = False
        self.answered = False  # the current watch gave its first answer (it is set up)
        self._handed_at = 0.0  # when the last answer fully handed over was received
        self._to_begin = True  # made, its watch not begun nor waiting for data_dir yet
        # each side file's (size, mtime_ns, inode) at its last event (``_side_unchanged``)
        self._sides: dict[str, tuple[int, int, int]] = {}

    def set_filter(self, flt: PathFilter) -> None:
        self.flt = flt

    async def handed_over(self, within: float = HANDOVER_TIMEOUT_SECONDS) -> bool:
        """Wait until every change made before this call has been handed to ``on_change``:
        the watch's next answer (a batch, or the empty one it gives when idle) received
        after it is processed. At once when nothing is watched. False when ``within``
        seconds passed first. ``sync --wait`` asks this first: a file written just before it is in
        the watch's hands for up to a step or two, not yet in the queue it drains."""
        since = time.monotonic() + _HANDOVER_MARGIN_SECONDS
        deadline = since + within
        while (self.watching or self._to_begin) and self._handed_at < since:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _wait_for_dir(self) -> tuple[os.stat_result, bool] | None:
        """The directory's stat once it exists, and whether it had to be waited for."""
        announced = False
        while not self.stop.is_set():
            st = await asyncio.to_thread(readable_dir, self.data_dir)
            if st is not None:
                return st, announced
            self._to_begin = False  # no data_dir to watch: nothing to wait for
            if not announced:
                reason = await asyncio.to_thread(unreadable, self.data_dir)
                why = f"to be readable ({reason})" if reason else "to appear"
                logger.log("WARNING" if reason else "INFO", "waiting for {} {}", self.data_dir, why)
                announced = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), DIR_POLL_SECONDS)
        return None

    async def run(self, first_reset_done: bool = True) -> None:
        """Watch until ``stop`` is set."""
        try:
            await self._run(first_reset_done)
        finally:
            self._to_begin = False

    async def _run(self, first_reset_done: bool) -> None:
        need_reset = not first_reset_done
        failures = 0  # watches in a row that failed before their first answer
        while not self.stop.is_set():
            found = await self._wait_for_dir()
            if found is None:
                return
            st, waited = found
            # files written before the watch began: reconciled once it is in place
            first = self.on_reset if need_reset or waited else self.on_watching
            need_reset = True
            self.watching, self.answered, self._to_begin = True, False, False
            try:
                await self._watch(st.st_ino, first)
            except* (RuntimeError, OSError) as group:
                # watchfiles raises from its thread inside a task group (a name that is not
                # UTF-8 fails its whole batch): the watch starts over, reconciling first
                why = "; ".join(str(exc) for exc in _leaves(group))
                if self.answered:
                    failures = 0
                    logger.warning("watching {} stopped: {}; starting over", self.data_dir, why)
                else:
                    failures += 1
                    await self._reconcile_instead(why, failures)
            finally:
                self.watching = False

    async def _reconcile_instead(self, why: str, failures: int) -> None:
        """The watch failed before its first answer (it cannot be set up: a directory
        whose name is not UTF-8 stops watchfiles): the store is reconciled now, and the
        watch tried again after a pause that grows to ``WATCH_RETRY_MAX_SECONDS``, so
        that changes are still found (by these reconciles, which also name what stops the
        watch) and no CPU is spun on retries."""
        if failures == 1:
            logger.warning(
                "cannot watch {}: {}; the store is compared every {:.0f} s at most until it can",
                self.data_dir,
                why,
                WATCH_RETRY_MAX_SECONDS,
            )
        await _called(self.on_reset)
        pause = exponential(failures, 1.0, WATCH_RETRY_MAX_SECONDS)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), pause)

    async def _watch(
        self, inode: int, first: Callable[[], asyncio.Future[None] | object] | None
    ) -> None:
        """Watch ``data_dir`` (of ``inode``); ``first`` is called at the watch's first
        answer (a batch, or its timeout), when its inotify watches are surely set."""
        async for batch in awatch(
            self.data_dir,
            watch_filter=None,
            debounce=100,
            step=WATCH_STEP_MS,
            stop_event=_AfterLastLooks(self.stop),
            rust_timeout=WATCH_IDLE_ANSWER_MS,
            yield_on_timeout=True,
            recursive=True,
            ignore_permission_denied=True,
        ):
            received = time.monotonic()
            self.answered = True
            st = await asyncio.to_thread(readable_dir, self.data_dir)
            if st is None or st.st_ino != inode:
                return  # gone, replaced (start over) or its permissions changed (wait
                # until it can be read, then reconcile)
            if first is not None:
                await _called(first)
                first = None
            if batch:
                out = await asyncio.to_thread(self._changes_of, batch)
                if out:
                    self.on_change(out)
            self._handed_at = received

    def _side_unchanged(self, raw: str) -> bool:
        """Whether the side file ``raw`` (a database's ``-wal``, ``-shm``, ``-journal``,
        ``.wal``) has the size, mtime and inode it had at its last event: that event was no
        write but a reader opening it. SQLite run as root gives each side file it opens its
        database's owner (a chown: a "modified" event), the capture's own reads included;
        taken for a change, a database held open by its writer was captured again after
        every capture, for as long as the writer kept it open. A stat a write could keep
        (coarse timestamps, ``racy_stat``) is never taken for unchanged. Blocking."""
        try:
            st = os.lstat(raw)
        except OSError:
            self._sides.pop(raw, None)
            return False
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        if racy_stat(st.st_mtime_ns, st.st_ctime_ns, time.time_ns()):
            self._sides.pop(raw, None)
            return False
        if self._sides.get(raw) == key:
            return True
        self._sides[raw] = key
        return False

    def _changes_of(self, batch: set[tuple[Change, str]]) -> list[tuple[str, Kind]]:
        """The store files a batch of events stands for (blocking). A directory stands for
        the files below it even when no include pattern names it (the feed filters those
        files): files written into a new directory before its watch was added send no
        event. The watch follows symlinked directories, which the walk never enters: an
        event is named by where its directory really is (a link to a store directory may
        name that directory's events), and one from outside ``data_dir`` is dropped. A
        side file's event that finds it as its last event did is no change."""
        out: list[tuple[str, Kind]] = []
        real_root = Path(os.path.realpath(self.data_dir))
        real_dirs: dict[str, str] = {}
        for change, raw in batch:
            parent, name = os.path.split(raw)
            if parent not in real_dirs:
                real_dirs[parent] = os.path.realpath(parent)
            rel = relpath(real_root, Path(real_dirs[parent], name))
            if rel is None or rel == "." or not _utf8(rel):
                continue  # non-UTF-8 names are reported by the reconcile walk
            target = change_of(rel, self.flt, self.data_dir)
            if target is None and not is_ignored(rel) and os.path.isdir(raw):
                target = rel  # a directory: the feed queues the store files below it
            if target is None:
                continue
            kind: Kind = _KIND.get(change, "modified")
            if target != rel:
                if change == Change.modified and self._side_unchanged(raw):
                    continue
                if change == Change.deleted:
                    self._sides.pop(raw, None)  # the stats kept are of side files there
                kind = "modified"  # a side file moved: its database changed
            out.append((target, kind))
        return out
