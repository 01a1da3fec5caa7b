"""What a released batch of changed paths stands for on the queue: a file for itself; a
directory for the store files below it (walked as the store is, what the walk refuses
returned to be named), and for the ledger's files below it when it was deleted or a
directory took a file's place.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from functools import partial
from pathlib import Path

from loguru import logger

from akoshad.pipeline.debounce import Kind
from akoshad.pipeline.store_links import StoreLinks
from akoshad.pipeline.store_walk import selects_a_file, walk_store
from akoshad.pipeline.storefiles import PathFilter, groups_below, readable_dir
from akoshad.store.db import StateDB

Expanded = tuple[list[tuple[str, str]], dict[str, dict[str, str]]]


async def expand_released(
    released: list[tuple[str, Kind]],
    data_dir: Path,
    flt: PathFilter,
    state: StateDB,
    ledger_target: str,
    links: StoreLinks,
) -> Expanded:
    """Directories stand for the files below them (and the ledger's files there, of
    ``ledger_target``); also returned: each directory walked, with the entries below it
    the walk refused."""
    out: dict[str, str] = {}
    walked: dict[str, dict[str, str]] = {}
    ledger_groups: set[str] | None = None
    below_dir: dict[str, list[str]] = {}  # each directory of the ledger: its groups
    for path, kind in released:
        full = data_dir / path
        is_dir = await asyncio.to_thread(_is_dir, full)
        if is_dir is None:
            continue  # too long to open: the walk of a directory above it names it
        if not is_dir and kind != "deleted":
            out[path] = kind
            continue
        if ledger_groups is None:
            ledger_groups = {e.group_path for e in (await state.ledger(ledger_target)).values()}
            below_dir = await asyncio.to_thread(groups_below, ledger_groups)
        below = below_dir.get(path, ())
        for g in below:
            out.setdefault(g, "modified")
        if is_dir:
            if path in ledger_groups:  # a directory now stands where a file was
                out[path] = "deleted"
            walk = await asyncio.to_thread(partial(walk_store, data_dir, flt, under=path))
            out.update(dict.fromkeys(walk.files, "modified"))
            walked[path] = walk.refused
            continue
        walked[path] = {}  # deleted: nothing below it is refused any more
        # itself too: a file may stand there again (a batch's events come unordered,
        # so a directory replaced by a file can reach the debouncer as a deletion)
        out[path] = kind
    await asyncio.to_thread(links.add_links, out)
    return list(out.items()), walked


def _is_dir(path: Path) -> bool | None:
    """Whether ``path`` is a directory itself (a link to one is not: never entered, as by
    the walk; one to /usr was walked whole), None when it is too long for the system to
    look at (over PATH_MAX)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError as exc:
        return None if exc.errno == errno.ENAMETOOLONG else False


def store_emptied(data_dir: Path, flt: PathFilter, items: list[tuple[str, str]]) -> int | None:
    """When ``items`` name a path that is gone and the store now selects no file at all
    (every file deleted, a disk unmounted under it): how many files include/exclude leave
    out, said in a warning: these changes make no upload (one of no file would empty the
    backup; the last upload stays, as at a reconcile); else None (the items are queued).
    A missing or unreadable ``data_dir`` is None too: the watcher waits for it and no pass
    uploads meanwhile. Blocking."""
    if all(os.path.lexists(data_dir / path) for path, _ in items):
        return None
    if readable_dir(data_dir) is None:
        return None
    if selects_a_file(data_dir, flt):  # the usual answer: at the first file, no walk
        return None
    walk = walk_store(data_dir, flt)
    logger.warning(
        "{} selects no file now: {} change(s) not queued, the last upload is kept as it is",
        data_dir,
        len(items),
    )
    return walk.excluded
