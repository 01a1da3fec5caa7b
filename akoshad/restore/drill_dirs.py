"""What the daemon needs of restore drills while none runs: the drill directories a crash
left (removed at start) and the stored result (``status.last_drill``).

Kept apart from ``drill`` so a daemon imports the drill code itself only when a drill runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

from akoshad.private import remove_tree

DRILL_PREFIX = "drill-"
LOCK_NAME = ".lock"
UNLOCKED_GRACE = 60.0  # a drill directory without its lock yet may be just being made
KV_LAST = "last_drill"
KV_LAST_GOOD = "last_good_drill_at"


def remove_stale(state_dir: Path) -> int:
    """Remove drill directories no running drill holds (a crash left them). Blocking."""
    removed = 0
    try:
        names = [n for n in os.listdir(state_dir) if n.startswith(DRILL_PREFIX)]
    except FileNotFoundError:
        return 0
    for name in names:
        path = state_dir / name
        if path.is_symlink() or not path.is_dir():
            continue
        try:
            fd = os.open(path / LOCK_NAME, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            fd = None  # made but never locked: its drill died at once (or is starting)
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime < UNLOCKED_GRACE:
                    continue
        except OSError:
            continue
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a drill (this process or another) is using it
        finally:
            if fd is not None:
                os.close(fd)
        remove_tree(path)
        removed += 1
    return removed


def parse_result(text: str | None) -> dict[str, Any] | None:
    """A stored ``last_drill`` object, or None."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
