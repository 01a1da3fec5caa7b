"""How restored files land under ``--dest``: durable, whole, and out of the fetch path.

A file is written to a private temporary name (``destdir.FileSink``) and checked; then
:class:`Committer` takes it: a pool of its own fsyncs the file and renames it over its
final name, while the restore goes on fetching. Many fsyncs at once share the file
system's journal commits, and none of them holds a fetch up. At most
:data:`MAX_PENDING` files wait to land (each holds its descriptor), so a slow disk slows
the fetch down instead of opening files without end. :meth:`Committer.finish` waits for
every file, raises the first failure, then fsyncs every directory that changed (new
names, new subdirectories): only then is the restore done. A file that fails to land is
removed; no temporary name outlives the restore.

:class:`DestTree` opens each directory under ``--dest`` once (no-follow, as
``destdir.parent_dir`` does) and shares the descriptor between the files written into it;
at most :data:`MAX_OPEN_DIRS` idle ones stay open (a closed one is fsynced first when it
changed). Everything here but ``finish`` and ``close`` blocks: call it from a thread.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from akoshad.restore.destdir import DestError, FileSink, _open_subdir, remove_stale
from akoshad.storage.stored import StoredFile
from akoshad.threads import to_the_end

SYNC_THREADS = 16  # fsyncs in flight together (the journal commits them in groups)
MAX_PENDING = 128  # checked files waiting to land (each holds a descriptor)
MAX_OPEN_DIRS = 64  # idle directory descriptors kept open
DIRECT_MIN = 4 * 1024 * 1024  # files this large are written past the page cache (direct)


@dataclass
class _Dir:
    fd: int
    refs: int = 0
    changed: bool = False


class DestTree:
    """Directory descriptors under ``dest_fd`` (see the module docstring)."""

    def __init__(self, dest_fd: int, force: bool, max_open: int | None = None) -> None:
        self.force = force
        self.max_open = MAX_OPEN_DIRS if max_open is None else max_open
        self._lock = threading.Lock()
        self._dirs: OrderedDict[str, _Dir] = OrderedDict({"": _Dir(os.dup(dest_fd))})
        self._closed = False

    def acquire(self, path: str) -> tuple[str, int]:
        """The directory that holds the store path ``path`` (made as needed): its key and
        descriptor, valid until :meth:`release`."""
        key = path.rpartition("/")[0]
        with self._lock:
            if self._closed:
                raise DestError("the restore has stopped")
            d = self._open(key)
            d.refs += 1
            self._trim()
            return key, d.fd

    def _open(self, key: str) -> _Dir:
        """The directory ``key``, opened (and made) from its nearest open ancestor down,
        one level at a time, not recursively (a tree 1,000 levels deep); the idle ones
        past ``max_open`` are closed on the way, so a deep path holds no descriptor a
        level."""
        d = self._dirs.get(key)
        if d is not None:
            self._dirs.move_to_end(key)
            return d
        pending: list[str] = []
        head = key
        while head not in self._dirs:  # "" (DIR itself) always is
            pending.append(head)
            head = head.rpartition("/")[0]
        parent = self._dirs[head]
        self._dirs.move_to_end(head)
        for sub in reversed(pending):
            parent.refs += 1  # kept open while its child is opened
            try:
                fd, changed = _open_subdir(parent.fd, sub.rpartition("/")[2], sub, self.force)
            finally:
                parent.refs -= 1
            parent.changed = parent.changed or changed
            parent = self._dirs[sub] = _Dir(fd, refs=1)
            try:
                self._trim()
            finally:
                parent.refs -= 1
        return parent

    def release(self, key: str, changed: bool) -> None:
        """A file in ``key`` is done (``changed``: a name was added there)."""
        with self._lock:
            d = self._dirs[key]
            d.refs -= 1
            d.changed = d.changed or changed
            self._trim()

    def _trim(self) -> None:
        """Close idle directories past ``max_open`` (all of them once closed), oldest
        first, each fsynced first when it changed."""
        for key in list(self._dirs):
            if not self._closed and len(self._dirs) <= self.max_open:
                return
            d = self._dirs[key]
            if d.refs or (key == "" and not self._closed):
                continue
            del self._dirs[key]
            try:
                if d.changed and not self._closed:
                    os.fsync(d.fd)
            finally:
                os.close(d.fd)

    def sync(self) -> None:
        """fsync every open directory that changed."""
        with self._lock:
            for d in self._dirs.values():
                if d.changed:
                    os.fsync(d.fd)
                    d.changed = False

    def close(self) -> None:
        """No new directory from now on; each one is closed once no file holds it."""
        with self._lock:
            self._closed = True
            self._trim()


class LandingSink(FileSink):
    """A :class:`FileSink` whose ``commit`` hands the checked file to a :class:`Committer`
    instead of syncing it in the fetch path."""

    def __init__(
        self,
        committer: Committer,
        key: str,
        dir_fd: int,
        name: str,
        mode: int | None,
        direct: bool = False,
        stale: tuple[str, ...] = (),
        label: str | None = None,
        path: str = "",
        mtime_ns: int | None = None,
    ) -> None:
        super().__init__(dir_fd, name, mode, direct, label, mtime_ns)
        self.committer = committer
        self.key = key
        self.path = path  # the store path
        self.stale = stale  # suffixes of names beside it removed before it lands (old WALs)
        self._held = True

    def commit(self, size: int, shown: str) -> None:
        self.finish(size)
        self.committer.hand(self, shown)

    def discard(self) -> None:
        super().discard()
        self.release(changed=False)

    def release(self, changed: bool) -> None:
        """Let go of the directory (once)."""
        if self._held:
            self._held = False
            self.committer.tree.release(self.key, changed)


class Committer:
    """Lands checked files: fsync, rename, then the directories (module docstring)."""

    def __init__(
        self,
        tree: DestTree,
        threads: int = SYNC_THREADS,
        pending: int = MAX_PENDING,
        stale: Mapping[str, tuple[str, ...]] | None = None,
        dest: Path | None = None,
        wals: Mapping[str, str] | None = None,
        held: Callable[[str, str], None] | None = None,
    ) -> None:
        self.tree = tree
        self.dest = dest  # --dest, to name a file a write error stopped
        # per database path, the side files (suffixes) already beside it that are removed
        # before it lands: its engine would replay them into the restored database
        self.stale = stale or {}
        # DuckDB database path -> its WAL's, both restored: they land together or not at all
        self._partner = dict(wals or {})
        self._wal_paths = frozenset(self._partner.values())
        self._partner |= {w: d for d, w in self._partner.items()}
        self._waiting: dict[str, tuple[LandingSink, str]] = {}  # checked, partner not yet
        self._failed: set[str] = set()  # paths that will not land (damaged, missing)
        # told (path, its partner that failed) when a path is held back (any thread)
        self._held = held or (lambda path, partner: None)
        self.landed = 0  # files renamed into place
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="akoshad-land")
        self._slots = threading.BoundedSemaphore(pending)
        self._idle = threading.Condition()
        self._count = 0
        self._error: BaseException | None = None
        self._closed = False

    def sink(self, f: StoredFile) -> LandingSink:
        """A sink for ``f`` in its directory under ``--dest`` (made as needed)."""
        key, dir_fd = self.tree.acquire(f.path)
        try:
            name = f.path.rsplit("/", 1)[-1]
            stale = self.stale.get(f.path, ())
            label = f.path if self.dest is None else str(self.dest / f.path)
            direct = f.size >= DIRECT_MIN
            return LandingSink(
                self, key, dir_fd, name, f.mode, direct, stale, label, f.path, f.mtime_ns
            )
        except BaseException:
            self.tree.release(key, False)
            raise

    def hand(self, sink: LandingSink, shown: str) -> None:
        """Queue ``sink`` (checked, its size and mode set) to land; waits while
        :data:`MAX_PENDING` files already wait. Raises a failure an earlier file met. A
        DuckDB database and its WAL wait for each other and land together (``_land``)."""
        if self._error is not None:
            raise self._error
        group = [(sink, shown)]
        partner = self._partner.get(sink.path)
        if partner is not None:
            with self._idle:
                alone = partner in self._failed
                other = None if self._closed or alone else self._waiting.pop(partner, None)
                if other is None and not self._closed and not alone:
                    self._waiting[sink.path] = (sink, shown)
                    return
            if alone:  # its partner will not land: neither does it
                sink.discard()
                self._held(sink.path, partner)
                return
            if other is not None:
                group.append(other)
        self._submit(group)  # closed by now: refused (DestError), the sink discarded

    def fail(self, path: str) -> None:
        """``path`` will not land (damaged or missing in the target): its DuckDB partner,
        waiting or still to come, is discarded (told to ``held``) instead of landing alone."""
        partner = self._partner.get(path)
        with self._idle:
            self._failed.add(path)
            other = None if partner is None else self._waiting.pop(partner, None)
        if other is not None and partner is not None:
            other[0].discard()
            self._held(partner, path)

    def _submit(self, group: list[tuple[LandingSink, str]]) -> None:
        self._slots.acquire()
        with self._idle:
            if self._closed:
                self._slots.release()
                for sink, _ in group:
                    sink.discard()
                raise DestError("the restore has stopped")
            self._count += 1
        self._pool.submit(self._land, group)

    def _land(self, group: list[tuple[LandingSink, str]]) -> None:
        """fsync, then rename into place: one file, or a database and its WAL. For the
        pair the WAL already there goes first, then the database, then its WAL: a restore
        stopped on the way leaves a database alone (whole as of its last checkpoint),
        never beside a WAL of another version, which DuckDB would replay or refuse."""
        group.sort(key=lambda item: item[0].path in self._wal_paths)  # the WAL last
        left = list(group)
        try:
            for sink, _ in group:
                sink.sync()
            for sink, shown in group:
                for suffix in sink.stale:
                    remove_stale(sink.dir_fd, sink.name + suffix, shown + suffix)
                if len(group) > 1 and sink is group[0][0]:
                    wal, wal_shown = group[1]
                    remove_stale(wal.dir_fd, wal.name, wal_shown)
                sink.publish(shown)
                left.remove((sink, shown))
                with self._idle:
                    self.landed += 1
                sink.release(changed=True)
        except BaseException as exc:
            for sink, _ in left:
                sink.discard()
            if self._error is None:
                self._error = exc
        finally:
            self._slots.release()
            with self._idle:
                self._count -= 1
                self._idle.notify_all()

    def _wait(self) -> None:
        with self._idle:
            self._idle.wait_for(lambda: self._count == 0)

    async def finish(self) -> None:
        """Wait until every handed file landed (or raise the first failure), then fsync
        the directories that changed."""
        with self._idle:  # a partner that was never handed (not in the restore): alone
            alone = list(self._waiting.values())
            self._waiting.clear()
        for item in alone:
            await asyncio.to_thread(self._submit, [item])
        await asyncio.to_thread(self._wait)
        if self._error is not None:
            raise self._error
        await asyncio.to_thread(self.tree.sync)

    async def close(self) -> None:
        """Refuse new files, let those handed land, stop the pool, release the tree. A
        database or WAL still waiting for its partner (which failed) is not landed."""
        with self._idle:
            if self._closed:
                return
            self._closed = True
            waiting = list(self._waiting.values())
            self._waiting.clear()
        for sink, _ in waiting:
            await to_the_end(sink.discard)

        def close() -> None:
            self._wait()
            self._pool.shutdown(wait=True)
            self.tree.close()

        await to_the_end(close)
