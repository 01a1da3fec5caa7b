"""What a killed akoshad left in its state directory, removed when the next daemon (or
``run --once``) starts, under the state lock.

Plaintext copies of the store live only in akoshad's own private directories (0700, files
0600), each removed after use:

- ``staging/``: the pass's captured copies (and the ``memories.json`` the DuckDB worker
  writes beside the copy of ``reflection.duckdb``, and the ``.duckdb-tmp-*`` directory each
  DuckDB worker spills into), emptied at each pass's start and end;
- ``prune/``: packs a prune is rewriting (``storage.prune_exec.STAGING_NAME``);
- ``packs/``: reserved for the uploader's pack files (format 2);
- ``drill-*``: restore drills (``restore.drill_dirs``), each locked while in use.

Only these names, directly inside ``state_dir``, are touched; a link found there is removed
as a link, never followed. Restores into ``--dest`` clean their own partial files
(``restore.destdir.remove_partials``).
"""

from __future__ import annotations

import os
from pathlib import Path

from akoshad.private import fresh_private_dir
from akoshad.restore.drill_dirs import remove_stale

STAGING_DIR = "staging"
PACK_STAGING_DIR = "packs"
PRUNE_STAGING_DIR = "prune"
_REMOVED_ONLY = (PACK_STAGING_DIR, PRUNE_STAGING_DIR)  # made again by whoever uses them


def clean_leftovers(state_dir: Path, staging: Path | None = None) -> dict[str, int]:
    """Empty ``staging`` (the snapshotter's, default ``state_dir/staging``; recreated
    0700), remove ``prune/``, ``packs/`` and unlocked drill directories. Returns ``{name:
    entries removed}`` for what held anything. The caller holds the state lock (no other
    pass or prune of this state runs). Blocking."""
    removed: dict[str, int] = {}
    n = fresh_private_dir(staging or state_dir / STAGING_DIR)
    if n:
        removed[STAGING_DIR] = n
    for name in _REMOVED_ONLY:
        path = state_dir / name
        if os.path.lexists(path):
            count = fresh_private_dir(path)  # an empty directory: nothing was left in it
            os.rmdir(path)
            if count:
                removed[name] = count
    drills = remove_stale(state_dir)
    if drills:
        removed["drill"] = drills
    return removed


def describe(removed: dict[str, int]) -> str:
    """One log line: ``staging (3), drill (1)``."""
    return ", ".join(f"{name} ({count})" for name, count in removed.items())
