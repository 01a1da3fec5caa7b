"""Short folders for AF_UNIX socket paths, which may be at most 107 bytes long (pytest's
``tmp_path`` can be longer). They all live in one folder per test run,
``/tmp/ak-<pid>-XXXXXXXX``, which conftest removes when the run ends: the suite leaves
nothing in the system temp folder. Everything else uses ``tmp_path``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

_root: Path | None = None
made: list[Path] = []  # every root folder made by this process (tests check they are gone)


def short_dir() -> Path:
    """A new empty folder with a short path (removed at the end of the test run)."""
    global _root
    if _root is None or not _root.is_dir():
        _root = Path(tempfile.mkdtemp(prefix=f"ak-{os.getpid()}-", dir="/tmp"))
        made.append(_root)
    return Path(tempfile.mkdtemp(prefix="", dir=_root))


def remove_all() -> None:
    """Remove every folder ``short_dir`` made in this process."""
    global _root
    root, _root = _root, None
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)
