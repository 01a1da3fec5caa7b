"""The stage that feeds the durable queue: watcher events through the debouncer, and the
reconciliation of the disk against the ledger (at start, when ``data_dir`` appears, when
include/exclude change, and every hour: ``rescan_every``).

A released path that is a directory stands for the store files below it (and for the
ledger's files there, when it was deleted). A queue that cannot be written (disk full)
keeps the paths in the debouncer and tries again shortly.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Awaitable, Iterable
from contextlib import suppress
from functools import partial

from loguru import logger

from akoshad.config import Settings
from akoshad.fastpath import MovedSince, StatMap
from akoshad.pipeline.debounce import Debouncer, Kind
from akoshad.pipeline.feed_expand import expand_released, store_emptied
from akoshad.pipeline.sealed_as import read_sealed_label
from akoshad.pipeline.sealing import configured_label
from akoshad.pipeline.stats import Stats
from akoshad.pipeline.store_links import StoreLinks
from akoshad.pipeline.store_walk import WalkResult, walk_store
from akoshad.pipeline.storefiles import (
    PathFilter,
    below_a_link,
    change_of,
    idle_include_line,
    readable_dir,
)
from akoshad.pipeline.watch import reconcile
from akoshad.ratelog import RateLimitedLog
from akoshad.store.db import StateDB
from akoshad.store.ledger import KV_COMPARE_ALL, KV_SEALED_AS
from akoshad.store.records import LedgerEntry
from akoshad.targets.base import Target

ENQUEUE_RETRY_SECONDS = 2.0
# a queue that cannot be written is logged once, then at most once per this many seconds
UNRECORDED_LOG_SECONDS = 60.0


# the daemon reconciles the store this often besides watching it (``rescan_every``)
RESCAN_SECONDS = 3600.0


class ChangeFeed:
    """Changes in: debounced into the queue; ``wake`` is set when the queue grew."""

    def __init__(
        self,
        settings: Settings,
        state: StateDB,
        primary: Target,
        stats: Stats,
        *,
        wake: asyncio.Event | None = None,
    ) -> None:
        self.data_dir = settings.data_dir
        self.sealing_label = configured_label(settings.encryption)
        self.state_dir, self.system_id = settings.state_dir, settings.cloud_sync.system_id
        self.flt = PathFilter.of(settings.include, settings.exclude)
        self.debouncer = Debouncer(settings.debounce_seconds, settings.max_delay_seconds)
        self.state = state
        self.primary = primary
        self.stats = stats
        self.wake = wake or asyncio.Event()  # the drain has work
        self.reconciled = asyncio.Event()
        # the lstat of every store entry, read on the first reconcile's walk (before
        # anything is captured), kept when asked: ``run --once`` records them for its quick
        # check; the daemon compares them with the store once its watch is up (``catch_up``)
        self.keep_stats = False
        self.stats_seen: StatMap | None = None
        self.files_on_disk: int | None = None  # store files selected, at the last reconcile
        self.files_excluded = 0  # and those include/exclude left out
        # why the last changes released could not be put on the queue (None: they were)
        self.unrecorded: str | None = None
        # each batch released while the queue cannot be written fails again every
        # ENQUEUE_RETRY_SECONDS: one line, then one a minute with a count, then "again"
        self._unrecorded_log = RateLimitedLog(UNRECORDED_LOG_SECONDS)
        self._said_not_files: set[str] = set()  # entries that are no file, already said
        self._said_outside: set[str] = set()  # files with names outside, already said
        self.idle_includes: list[str] = []  # include globs selecting no file (said once)
        # refusals already logged: path -> (reason, monotonic time said); said again when
        # the reason changes or an hour later, not at each of the walks that find it again
        self._said_refused: dict[str, tuple[str, float]] = {}
        self.links = StoreLinks(self.data_dir)  # the store's links to its own files
        # a selected file appeared after a reconcile that found none: reconcile again once
        # it is queued, so the files gone meanwhile leave the next upload (``run``)
        self._recount = False
        self._debounce_wake = asyncio.Event()

    def configure(self, settings: Settings) -> None:
        """A reload: new quiet window, max delay and include/exclude."""
        self.debouncer.quiet = settings.debounce_seconds
        self.debouncer.max_delay = settings.max_delay_seconds
        self.flt = PathFilter.of(settings.include, settings.exclude)

    # ---- reconcile -----------------------------------------------------------------------
    async def walk(self) -> tuple[WalkResult, StatMap | None]:
        """The store walked now (in a thread), with the lstat of every entry when they are
        kept (``keep_stats``, first walk only)."""
        seen: StatMap | None = {} if self.keep_stats and self.stats_seen is None else None
        walk = await asyncio.to_thread(walk_store, self.data_dir, self.flt, seen)
        return walk, seen

    async def reconcile(
        self,
        walked: Awaitable[tuple[WalkResult, StatMap | None]] | None = None,
        *,
        quiet: bool = False,
    ) -> int:
        """Queue what changed while akoshad was not looking. Returns the number queued.
        ``walked``: the store's walk (``walk``), begun earlier (``run --once`` begins it
        while its targets start; it is compared with the ledger as it is now). ``quiet``:
        its summary line is DEBUG when it queued nothing (the periodic rescan)."""
        if await asyncio.to_thread(readable_dir, self.data_dir) is None:
            # missing, or not to be listed: not an empty store (the watcher waits for it)
            self.keep_stats = False  # no walk: a catch-up is a full reconcile
            if walked is not None:
                await walked
            self.reconciled.set()
            return 0
        ledger = await self.state.ledger(self.primary.name)
        walk, seen = await (walked if walked is not None else self.walk())
        resend = bool(ledger) and await self._sealed_otherwise(ledger.values())
        result = await asyncio.to_thread(
            partial(reconcile, walk=walk, resend=resend), self.data_dir, self.flt, ledger
        )
        if seen is not None and self.keep_stats and self.stats_seen is None:
            self.stats_seen = seen
        self.files_on_disk, self.files_excluded = result.on_disk, result.excluded
        queued = await self.state.enqueue(result.changes)
        compared = KV_COMPARE_ALL.format(target=self.primary.name)
        await self.state.transaction(
            lambda c: c.execute("DELETE FROM kv WHERE key = ?", (compared,))
        )
        await self._settle_skips(result.refused)
        self._say_not_files(walk.not_files)
        self._say_outside_names(walk.outside_names)
        self._say_idle_includes(self.flt.idle_includes(walk.files) if walk.files else [])
        self.links.found(walk.links, walk.inodes, whole=True)
        logger.log(
            "DEBUG" if quiet and not queued else "INFO",
            "reconciled {} store file(s) with the ledger: {} change(s) queued",
            result.on_disk,
            queued,
        )
        self.reconciled.set()
        if queued:
            self.wake.set()
        return queued

    async def _sealed_otherwise(self, ledger: Iterable[LedgerEntry]) -> bool:
        """Whether the last upload committed to the primary target was sealed otherwise
        than the configuration now says (encryption turned on or off, or other recipients):
        none of its files can be referenced, so the whole store goes up again now, and not
        only once something changes (the newest upload would stay readable only as it was,
        by an identity that may be the reason for the change). A state kept by an akoshad
        that did not record it has it read from the ``ledger`` (``sealed_as``), recorded."""
        name = self.primary.name
        recorded = await self.state.get_kv(KV_SEALED_AS.format(target=name))
        if recorded is None:

            def infer(c: sqlite3.Connection) -> str:
                label = read_sealed_label(c, name, ledger, self.state_dir, self.system_id)
                if label == self.sealing_label:  # known from now on; else the upload
                    StateDB.record_sealing(c, name, label)  # records the new one
                return label

            recorded = await self.state.transaction(infer)
        if recorded == self.sealing_label:
            return False
        if self.sealing_label == "none":  # encrypted before: a privacy change, said louder
            logger.warning(
                "the encryption settings changed since the last upload to {}: the uploads "
                "were encrypted and encryption is off now (no encryption.recipients): every "
                "store file is sent again, NOT encrypted",
                self.primary.name,
            )
            return True
        logger.info(
            "the encryption settings changed since the last upload to {}: every store file "
            "is sent again, under the new settings",
            self.primary.name,
        )
        return True

    async def rescan_every(self, seconds: float, stop: asyncio.Event) -> None:
        """Reconcile the store every ``seconds`` until ``stop`` (0: never): a safety net for
        changes no watcher event reported (a full inotify queue drops events that name no
        path). A failed rescan is logged; the next one comes as planned."""
        while seconds > 0:
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)
                return
            try:
                await self.reconcile(quiet=True)
            except (OSError, sqlite3.Error) as exc:
                logger.warning("the periodic rescan of {} failed: {}", self.data_dir, exc)

    async def _settle_skips(
        self, refused: dict[str, str], under: tuple[str, ...] | None = None
    ) -> None:
        """Record the walk's refusals; forget the skips it did not refuse of files no longer
        on disk (gone while nobody watched: no event would ever clear them) and of
        directories (listed again). ``under``: the walk covered only the paths that start
        with one of these (``dir/``); other skips are left as they are."""
        self._say_refused(refused, under)
        known = [
            p
            for p in await self.state.skipped()
            if p not in refused and (under is None or (p + "/").startswith(under))
        ]
        gone = await asyncio.to_thread(lambda: [p for p in known if self._not_skippable(p)])
        if refused or gone:

            def op(c: sqlite3.Connection) -> None:
                self.state.forget_skipped(c, gone)
                self.state.record_skipped(c, refused)

            await self.state.transaction(op)

    def _say_refused(self, refused: dict[str, str], under: tuple[str, ...] | None) -> None:
        """A warning for each refusal a walk found, unless it was said with the same reason
        within :data:`RESCAN_SECONDS` (status and ``--check`` show every skip meanwhile): a
        store walked again every 30 s, while its watch cannot start, said each 120 times an
        hour. What the walk (of the paths ``under``, or all) no longer refuses is said again
        when it is refused again."""
        now = time.monotonic()
        for path in list(self._said_refused):
            if path not in refused and (under is None or (path + "/").startswith(under)):
                del self._said_refused[path]
        for path, reason in refused.items():
            said = self._said_refused.get(path)
            if said is None or said[0] != reason or now - said[1] >= RESCAN_SECONDS:
                logger.warning("not syncing {}: {}", path, reason)
                self._said_refused[path] = (reason, now)

    def _say_not_files(self, entries: dict[str, str]) -> None:
        """One warning for each selected entry that is no file to back up (a FIFO, a
        socket, a link to nothing), when a walk first finds it: never a silent gap."""
        for path in sorted(entries.keys() - self._said_not_files):
            logger.warning("not syncing {}: {}, not a file to back up", path, entries[path])
        self._said_not_files = set(entries)

    def _say_outside_names(self, entries: dict[str, int]) -> None:
        """One warning for each store file with a name outside the store (a hard link from
        outside data_dir), when a walk first finds it: it is backed up as the store file
        it is, but a write through that other name is seen only at the next rescan."""
        for path in sorted(entries.keys() - self._said_outside):
            logger.warning(
                "{} has {} other name(s) outside data_dir (a hard link): it is backed up, but "
                "a write through that name is seen only at the next rescan (hourly)",
                path,
                entries[path],
            )
        self._said_outside = set(entries)

    def _say_idle_includes(self, idle: list[str]) -> None:
        """One warning when the ``include`` globs that select no file change (a typo would
        otherwise leave out what it names, every upload reported a success)."""
        if idle and idle != self.idle_includes:
            logger.warning("{}", idle_include_line(self.data_dir, idle))
        self.idle_includes = idle

    def _not_skippable(self, rel: str) -> bool:
        """No longer a skip: gone from disk, a directory (only the walk refuses one, and
        it did not this time), or below a linked directory (no store file: the link itself
        is refused when it leads out of data_dir)."""
        path = self.data_dir / rel
        return (
            not os.path.lexists(path)
            or (path.is_dir() and not path.is_symlink())
            or below_a_link(self.data_dir, rel)
        )

    async def catch_up(self) -> int:
        """The watch is in place, begun after the last reconcile's walk: what changed,
        appeared or vanished since that walk goes to the debouncer as the watcher's events
        would have. Without that walk's stats (there was none), a full reconcile. Returns
        the number of store files touched."""
        before, self.stats_seen, self.keep_stats = self.stats_seen, None, False
        if before is None:
            return await self.reconcile()
        now = MovedSince(before)  # compared as walked: no second map of the store
        await asyncio.to_thread(walk_store, self.data_dir, self.flt, now)
        moved = now.moved + list(before)  # changed or new, then gone
        changed = await asyncio.to_thread(self._store_files_of, moved)
        if changed:
            logger.info("{} store file(s) changed before the watch began", len(changed))
            self.on_change((path, "modified") for path in changed)
        return len(changed)

    def _store_files_of(self, entries: list[str]) -> list[str]:
        """The store files the changed ``entries`` stand for (directories left out: their
        files are entries of their own)."""
        out: set[str] = set()
        for rel in entries:
            try:
                rel.encode("utf-8")  # a name that is not UTF-8: the walk reports it
            except UnicodeEncodeError:
                continue
            target = None if rel == "." else change_of(rel, self.flt, self.data_dir)
            if target is not None and not (self.data_dir / target).is_dir():
                out.add(target)
        return sorted(out)

    # ---- changes in ----------------------------------------------------------------------
    def on_change(self, changes: Iterable[tuple[str, Kind]]) -> None:
        """The watcher's callback: touch each path in the debouncer. A selected file written
        after a reconcile that found none: how many there are is not known until the next,
        which ``run`` makes once that file is queued (``_recount_store``)."""
        now = time.monotonic()
        for path, kind in changes:
            self.debouncer.touch(path, kind, now)
            if kind != "deleted" and self.files_on_disk == 0:
                self.files_on_disk, self.files_excluded = None, 0
                self._recount = True
        self._debounce_wake.set()

    async def run(self, stop_event: asyncio.Event) -> None:
        """Move due paths from the debouncer into the durable queue until ``stop_event``."""
        while not stop_event.is_set():
            deadline = self.debouncer.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            self._debounce_wake.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._debounce_wake.wait(), timeout)
            firsts = self.debouncer.firsts()
            due = self.debouncer.due(time.monotonic())
            if due and await self._enqueue(due, firsts) and self._recount:
                await self._recount_store()

    async def _recount_store(self) -> None:
        """A reconcile after a store that selected no file got one again: the ledger's
        files that did not come back are removed from the next upload (else they stayed
        in it until the next start or hourly rescan)."""
        self._recount = False
        try:
            await self.reconcile()
        except (OSError, sqlite3.Error) as exc:
            logger.warning("the reconcile of {} failed: {}", self.data_dir, exc)

    def stop(self) -> None:
        """Let ``run`` see its stop event at once."""
        self._debounce_wake.set()

    async def flush(self) -> None:
        """Persist everything the debouncer holds (shutdown, ``sync``)."""
        firsts = self.debouncer.firsts()
        released = self.debouncer.flush()
        if released:
            await self._enqueue(released, firsts)

    async def _enqueue(
        self, released: list[tuple[str, Kind]], firsts: dict[str, float] | None = None
    ) -> bool:
        """Persist released paths, each dated by its first event in the debouncer
        (``firsts``, monotonic: the age of a change that never went quiet counts from when
        it was seen, not from when ``max_delay_seconds`` released it; a path a directory
        stood for, by the oldest); on failure (disk full, ...) keep them for a retry."""
        try:
            items, walked = await expand_released(
                released, self.data_dir, self.flt, self.state, self.primary.name, self.links
            )
            emptied = partial(store_emptied, self.data_dir, self.flt, items)
            if items and (left_out := await asyncio.to_thread(emptied)) is not None:
                # no file selected now: no upload of none, as at a reconcile (nothing_selected)
                self.files_on_disk, self.files_excluded, items = 0, left_out, []
            if items:
                await self.state.enqueue(items, first_seen=_wall_times(firsts, released))
            if walked:
                await self._settle_dir_skips(walked)
        except (sqlite3.Error, OSError) as exc:
            self.unrecorded = (
                f"{len(released)} change(s) could not be recorded on the queue ({exc})"
            )
            self._unrecorded_log.error("unrecorded", "{}; retrying", self.unrecorded)
            retry_at = time.monotonic() - self.debouncer.quiet + ENQUEUE_RETRY_SECONDS
            seen = firsts or {}  # their age counts on from when they were seen
            for path, kind in released:
                self.debouncer.touch(path, kind, retry_at, seen.get(path))
            return False
        self.unrecorded = None
        self._unrecorded_log.ok("unrecorded", "changes are recorded on the queue again")
        if items:
            self.stats.progressed()
            self.wake.set()
        return True

    async def _settle_dir_skips(self, walked: dict[str, dict[str, str]]) -> None:
        """The walks of directories that changed (``{dir: refused}``): what they refused
        (a directory that cannot be listed, a path too long to open) is named and skipped
        (in status and the next upload), and the skips below them they no longer refuse,
        of entries gone or directories, are forgotten (as the reconcile does)."""
        refused = {p: why for found in walked.values() for p, why in found.items()}
        await self._settle_skips(refused, under=tuple(f"{d}/" for d in walked))


def _wall_times(
    firsts: dict[str, float] | None, released: list[tuple[str, Kind]]
) -> dict[str, float] | None:
    """``firsts`` (monotonic) of the ``released`` paths as wall-clock times, and the oldest
    of them under ``""`` (for the paths a directory stood for)."""
    if not firsts:
        return None
    offset = time.time() - time.monotonic()
    out = {path: firsts[path] + offset for path, _ in released if path in firsts}
    if out:
        out[""] = min(out.values())
    return out
