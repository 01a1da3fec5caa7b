"""Large files that moved while their upload read them in place, and that staging has no
room to copy (or whose copy kept changing too): when to read them where they lie (or copy
them) again. The copies' watch is more lenient (a copy is always safe, only costly): a file
unchanged since the look before, or a new file by the name, is copied again.

Read in place while it is still being written, such a file would move again and fail the
whole upload (every other file of it too). So it waits until it has been left alone: its
stat identity (size, mtime, ctime, inode) the same for :data:`QUIET_SECONDS`, as this
process's monotonic clock counts (never its mtime against the wall clock, which a file
copied from a machine whose clock runs ahead, or a clock set back, would hold for ever).
A file that is never left alone for that long is read in place all the same once it has
waited :data:`MAX_WAIT_SECONDS`: at worst one failed upload that often.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from akoshad.fileio import LiveStat

QUIET_SECONDS = 60.0
MAX_WAIT_SECONDS = 3600.0


@dataclass
class _Seen:
    stat: LiveStat
    unchanged_since: float
    waiting_since: float
    copy_failed: bool = False  # a copy met a full disk or a quota: not tried again


class QuietWatch:
    """The large files waiting for a quiet moment (safe to share between capture threads).

    ``quiet_seconds``: how long a file must be seen unchanged (0: unchanged since the look
    before). ``new_file_ready``: another file by the name (a new inode: saved by a rename)
    is ready at once, rather than waiting from the start again."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        quiet_seconds: float = QUIET_SECONDS,
        new_file_ready: bool = False,
    ) -> None:
        self._clock = clock
        self._quiet = quiet_seconds
        self._new_file_ready = new_file_ready
        self._seen: dict[str, _Seen] = {}
        self._lock = threading.Lock()

    def __contains__(self, rel: str) -> bool:
        return rel in self._seen

    def copy_failed(self, rel: str) -> bool:
        """A copy of ``rel`` met a full disk or a quota while it waits: no copy again (the
        free space shown may not count a quota); a file that only found no room is
        checked for room again at each look."""
        seen = self._seen.get(rel)
        return seen is not None and seen.copy_failed

    def add_failed_copy(self, rel: str, stat: LiveStat) -> None:
        """A copy of ``rel`` (as it stands: ``stat``) met a full disk: it waits from now."""
        now = self._clock()
        with self._lock:
            self._seen.setdefault(rel, _Seen(stat, now, now)).copy_failed = True

    def wait(self, rel: str, stat: LiveStat) -> None:
        """``rel`` (as it stands: ``stat``) waits for a quiet moment from now."""
        now = self._clock()
        with self._lock:
            self._seen[rel] = _Seen(stat, now, now)

    def ready(self, rel: str, stat: LiveStat) -> bool:
        """Whether ``rel``, as it stands now (``stat``), may be read in place (or copied):
        unchanged since the look before and for ``quiet_seconds``, or waiting for
        :data:`MAX_WAIT_SECONDS`. A first look waits from now. When it may, it leaves the
        watch (a later move starts over)."""
        now = self._clock()
        with self._lock:
            seen = self._seen.get(rel)
            if seen is None:
                self._seen[rel] = _Seen(stat, now, now)
                return False
            changed = seen.stat != stat
            if seen.stat.inode != stat.inode:  # another file by that name
                if self._new_file_ready:
                    del self._seen[rel]
                    return True
                seen = self._seen[rel] = _Seen(stat, now, now, seen.copy_failed)  # starts over
            elif changed:
                seen.stat, seen.unchanged_since = stat, now
            ready = (not changed and now - seen.unchanged_since >= self._quiet) or (
                now - seen.waiting_since >= MAX_WAIT_SECONDS
            )
            if ready:
                del self._seen[rel]
            return ready

    def discard(self, rel: str) -> None:
        with self._lock:
            self._seen.pop(rel, None)


def copy_watch(clock: Callable[[], float] = time.monotonic) -> QuietWatch:
    """The watch over copies that kept changing: copied again once a look finds the file
    unchanged since the look before, or a new file by the name (an hour at most)."""
    return QuietWatch(clock, quiet_seconds=0.0, new_file_ready=True)
