"""Consistent private copies of store files, taken without disturbing the live writer.

* DuckDB: the database and its ``.wal`` are copied as one pair; size, mtime_ns and inode of
  both are compared before and after, and the copy is retried with backoff while they move.
  The private copy is then opened read-only with duckdb (never the live file: that would
  take a lock and break the writer), in a short-lived child process
  (:mod:`akoshad.duckdb_worker`). A newer storage version is "cannot validate".
* SQLite: the backup API (a reader's view, consistent by SQLite's own locking).
* Anything else: a small file is read into memory (under a budget per pass, given back
  by ``reset_staging``), a larger one gets a stable copy (unchanged across the read).

Everything here blocks: call it from a worker thread. The SHA-256 is computed while copying.
"""

from __future__ import annotations

import os
import stat
import time
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

from akoshad.errors import SnapshotError, classify_open_error
from akoshad.fileio import (
    OUTSIDE,
    LinkRefused,
    LiveStat,
    resolve_under,
)
from akoshad.pipeline.capture.duckdb import DuckDBCapture
from akoshad.pipeline.capture.files import (
    IN_PLACE_MIN_BYTES,
    MEMORY_BUDGET,
    MEMORY_MAX_FILE,
    STABLE_ATTEMPTS,
    Captured,
    CapturedFile,
    CaptureResult,
    MemoryBudget,
    Skipped,
    Sleep,
    Vanished,
    detect_kind,
)
from akoshad.pipeline.capture.plain import HELD_NAME, NO_ROOM, PlainCapture
from akoshad.pipeline.capture.quiet import QuietWatch, copy_watch
from akoshad.pipeline.capture.sqlite import SqliteCapture
from akoshad.pipeline.storefiles import PathFilter, unreadable
from akoshad.private import fresh_private_dir

if TYPE_CHECKING:
    from akoshad.duckdb_worker import Runner

__all__ = [
    "IN_PLACE_MIN_BYTES",
    "CaptureResult",
    "Captured",
    "CapturedFile",
    "LiveStat",
    "Skipped",
    "Snapshotter",
    "Vanished",
    "classify_open_error",
]


class Snapshotter(PlainCapture, DuckDBCapture, SqliteCapture):
    """Captures store files from ``data_dir`` into ``staging`` (a private directory)."""

    def __init__(
        self,
        data_dir: Path,
        staging: Path,
        *,
        attempts: int = STABLE_ATTEMPTS,
        sleep: Sleep = time.sleep,
        validate_duckdb: bool = True,
        memory_budget: int = MEMORY_BUDGET,
        duckdb: Runner | None = None,
        path_filter: PathFilter | None = None,
    ) -> None:
        self.data_dir = data_dir
        # include/exclude (a reload replaces it): a file excluded since it was queued is
        # taken out of the snapshot, never read
        self.path_filter = path_filter or PathFilter()
        self.staging = staging
        self.attempts = attempts
        self.sleep = sleep
        self.validate_duckdb = validate_duckdb
        self.duckdb = duckdb  # the DuckDB child that validates copies (None: one per copy)
        self.in_place_min_bytes = IN_PLACE_MIN_BYTES  # read at construction (tests lower it)
        self.memory_max_file = MEMORY_MAX_FILE  # 0: every plain file is staged
        self.memory = MemoryBudget(memory_budget)
        self.held_path = staging / HELD_NAME
        self.moved_in_place: set[str] = set()
        self.no_room = QuietWatch()
        self.copy_kept_changing = copy_watch()
        self._root_real: Path | None = None  # data_dir resolved, for one pass
        self._dirs: dict[str, str] = {}  # store directories resolved, for one pass
        self._n = 0

    def moved_while_sent(self, rel: str) -> None:
        """``rel``, a large plain file read in place, changed while its upload read it: its
        next capture is a stable copy in staging (tried a few times, then left for later
        with the old version kept), so that a file written all the time never holds back
        the upload of every other file."""
        self.moved_in_place.add(rel)

    def _forget_moved(self, rel: str) -> None:
        """``rel`` vanished: what was kept about its moves goes with it."""
        self.moved_in_place.discard(rel)
        self.no_room.discard(rel)
        self.copy_kept_changing.discard(rel)

    def reset_staging(self) -> int:
        """Remove everything staged (also what a crash left) and recreate the directory
        (0700, a link in its place removed, never followed); the bytes held in memory are
        released. Returns the entries removed."""
        self.memory.release()
        self._root_real = None
        self._dirs.clear()
        return fresh_private_dir(self.staging)

    def _resolve(self, live: str, plain: bool = False) -> str:
        """``resolve_under`` for a store file, its directories' resolution kept for the pass
        (10,000 files are not each resolved component by component: a directory costs one
        ``lstat``). A directory swapped for a link later is still caught: ``open_resolved``
        checks the descriptor's own path. ``plain``: the caller's ``lstat`` of ``live``
        found no link there (no second look when ``live`` is its own resolved path; a link
        swapped in after that ``lstat`` is refused by ``open_resolved``'s ``O_NOFOLLOW``)."""
        root = self._root_real
        if root is None:
            root = self._root_real = self.data_dir.resolve()
        base = f"{self.data_dir}/"
        rel = live[len(base) :]
        if not live.startswith(base) or ".." in rel.split("/"):
            return str(resolve_under(root, Path(live)))
        head, _, name = rel.rpartition("/")
        real = f"{self._resolve_dir(head, root) if head else root}/{name}"
        if plain and real == live:
            return real
        if os.path.islink(real):  # a link inside data_dir: where it leads must stay inside
            return str(resolve_under(root, Path(live)))
        return real

    def _resolve_dir(self, rel: str, root: Path) -> str:
        """The resolved path of the store directory ``rel`` (each directory on its path
        kept for the pass; resolved from the nearest one kept, not recursively: a tree
        1,000 levels deep)."""
        pending: list[str] = []
        head = rel
        while head and head not in self._dirs:
            pending.append(head)
            head = head.rpartition("/")[0]
        got = self._dirs[head] if head else str(root)
        for key in reversed(pending):
            got = f"{got}/{key.rpartition('/')[2]}"
            if os.path.islink(got):
                got = str(resolve_under(root, self.data_dir / key))
            self._dirs[key] = got
        return got

    def _under_a_link(self, rel: str) -> bool:
        """Whether a directory on ``rel``'s path is a symlink (blocking: one ``lstat`` a
        directory, kept for the pass). The walk never enters one, so what is below it is
        no store file: a link to a store directory reaches that directory's files, each
        backed up under its own path, and one out of ``data_dir`` is refused itself."""
        head = rel.rpartition("/")[0]
        if not head:
            return False
        root = self._root_real
        if root is None:
            root = self._root_real = self.data_dir.resolve()
        try:
            return self._resolve_dir(head, root) != f"{root}/{head}"
        except LinkRefused:  # a link out of data_dir (refused itself, under its own name)
            return True

    def _live(self, rel: str) -> str:
        """The live path of the store file ``rel`` (a plain join when ``rel`` is clean)."""
        parts = rel.split("/")
        if rel and not any(p in ("", ".", "..") for p in parts):
            return f"{self.data_dir}/{rel}"
        return str(self.data_dir / rel)

    @staticmethod
    def _first_look(rel: str, live: str) -> tuple[os.stat_result, bool] | CaptureResult:
        """(the stat of a regular file, whether it was reached through a link), or what
        the capture of ``rel`` is without reading it. The entry's own ``lstat`` first; a
        link is followed."""
        try:
            st = os.lstat(live)
            linked = stat.S_ISLNK(st.st_mode)
            if linked:  # a link inside data_dir: what it leads to
                st = os.stat(live)
        except (FileNotFoundError, NotADirectoryError):  # also: a file where its directory was
            return Vanished(rel)
        except PermissionError:
            return Skipped(rel, "permission denied")
        except OSError as exc:
            if exc.errno == 40:  # ELOOP
                return Skipped(rel, "symlink loop")
            return Skipped(rel, f"cannot stat: {exc.strerror}")
        if spelled_otherwise(live, len(live) - len(rel)):
            return Vanished(rel)  # renamed to another case or normalization of its name
        if stat.S_ISDIR(st.st_mode):
            return Vanished(rel)  # a directory now stands where a file was
        if not stat.S_ISREG(st.st_mode):  # a socket, FIFO or device: not a store file (the
            return Vanished(rel)  # walk leaves them out too); never opened (a FIFO blocks)
        return st, linked

    def _linked_out(self, rel: str, live: str) -> Skipped | None:
        """For an entry that is no store file: a link out of data_dir (to a directory, as
        the walk refuses it), else None."""
        if not os.path.islink(live):
            return None
        try:
            self._resolve(live)
        except LinkRefused as exc:
            return Skipped(rel, OUTSIDE) if exc.strerror == OUTSIDE else None
        except OSError:
            return None
        return None

    def _store_unreadable(self, result: CaptureResult) -> CaptureResult:
        """A file refused because ``data_dir`` itself cannot be read (its permissions
        flipped, a mount not ready) is tried again later, its last upload kept: only a
        file of its own that cannot be read is left out."""
        if not isinstance(result, Skipped) or result.reason != "permission denied":
            return result
        reason = unreadable(self.data_dir)
        if reason is None:
            return result
        return Skipped(result.group, f"data_dir cannot be read ({reason})", retry=True)

    def capture(self, rel: str, hash_if_size: int | None = None) -> CaptureResult:
        """Capture one store file (blocking). Never raises for a vanished/unreadable file.

        ``hash_if_size``: the size of the file's last upload, if any; a large plain file or a
        DuckDB database of another size cannot be a duplicate and is left unhashed
        (``sha256`` None: its upload hashes it). A file
        that include/exclude leave out counts as gone (it leaves the snapshot), unread."""
        if not self.path_filter.allows(rel) or self._under_a_link(rel):
            self._forget_moved(rel)
            return Vanished(rel)
        live = self._live(rel)
        look = self._first_look(rel, live)
        if not isinstance(look, tuple):
            if isinstance(look, Vanished):
                self._forget_moved(rel)
                return self._linked_out(rel, live) or look
            return self._store_unreadable(look)
        st, linked = look
        try:
            resolved = self._resolve(live, plain=not linked)
            # the lstat above is the file's own when it is no link: the first "before"
            small = self._capture_in_memory(rel, resolved, None if linked else st)
            if small is not None:
                return small
            real = Path(resolved)
            kind = detect_kind(real)
            if kind == "duckdb":
                return self._capture_duckdb(rel, Path(live), real, hash_if_size)
            if kind == "sqlite":
                return self._capture_sqlite(rel, real)
            return self._capture_stable(rel, real, hash_if_size)
        except (FileNotFoundError, NotADirectoryError):
            self._forget_moved(rel)
            return Vanished(rel)
        except PermissionError:
            return self._store_unreadable(Skipped(rel, "permission denied"))
        except LinkRefused as exc:  # a link out of data_dir, or one swapped in mid-capture
            reason = exc.strerror or "symlink refused"
            return Skipped(rel, reason, retry=reason != OUTSIDE)
        except SnapshotError as exc:
            return Skipped(rel, str(exc), retry=exc.retry)
        except OSError as exc:  # staging full, I/O error: try again later
            why = exc.strerror or str(exc)
            if exc.errno in NO_ROOM:  # the copy's side (state_dir), not the store's disk
                why = f"no room to stage a copy in {self.staging}: {why}"
            return Skipped(rel, f"capture failed: {why}", retry=True)


def spelled_otherwise(live: str, base: int) -> bool:
    """Whether the file system finds ``live`` only under another spelling: one that ignores
    case or Unicode normalization (APFS, NTFS, an ext4 casefold directory) still answers
    for ``Notes.txt`` (or ``Dir/a``) once it was renamed ``notes.txt`` (``dir``), and the
    old path, gone from its directory, must leave the snapshot. One more ``lstat`` per file
    (its name's other case; for a non-ASCII name its other normalizations too); only where
    that finds the same file are the directories from ``live[:base]`` (``data_dir/``) down
    listed. Blocking."""
    head, name = os.path.split(live)
    others = {name.swapcase(), unicodedata.normalize("NFC", name)}
    if not name.isascii():
        others.add(unicodedata.normalize("NFD", name))
    others.discard(name)
    try:
        own = os.lstat(live)
    except OSError:
        return False
    for other in others:
        try:
            st = os.lstat(os.path.join(head, other))
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
            return _unlisted(live, base)
    return False


def _unlisted(live: str, base: int) -> bool:
    """Whether a name of ``live`` below ``live[:base]`` is not in its directory's listing."""
    parent = live[: base - 1] if base > 0 else "."
    for part in live[base:].split("/"):
        try:
            if part not in os.listdir(parent):
                return True
        except OSError:
            return False
        parent = os.path.join(parent, part)
    return False
