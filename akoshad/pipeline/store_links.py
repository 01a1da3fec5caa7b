"""Links inside the store to its own files: a link is backed up with its file's content, so
a change of the file is a change of every link to it (the watcher reports the file only)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from pathlib import Path


def links_among(root: Path, rels: Iterable[str]) -> dict[str, str]:
    """Which of the store paths ``rels`` are links to a file inside ``root``, and the
    store path each leads to (blocking: one ``lstat`` a path, a resolve a link)."""
    real_root = root.resolve()
    out: dict[str, str] = {}
    for rel in rels:
        path = root / rel
        if not os.path.islink(path):
            continue
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # dangling, a loop
            continue
        if target.is_relative_to(real_root) and target.is_file():
            out[rel] = target.relative_to(real_root).as_posix()
    return out


class StoreLinks:
    """``{file: links to it}`` for the store under ``root``, learnt from its walks and from
    the changed paths that are links (thread-safe: used from worker threads)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._to: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def found(self, links: dict[str, str], *, whole: bool = False) -> None:
        """Links found (``{link: file}``); ``whole``: by a walk of the whole store, which
        replaces what was known."""
        with self._lock:
            if whole:
                self._to = {}
            for link, target in links.items():
                self._to.setdefault(target, set()).add(link)

    def add_links(self, changed: dict[str, str]) -> None:
        """Add to ``changed`` (``{path: kind}``) the links to its paths, as modified; the
        changed paths that are links are remembered first (blocking)."""
        self.found(links_among(self.root, list(changed)))
        with self._lock:
            links = [link for path in list(changed) for link in self._to.get(path, ())]
        for link in links:
            changed.setdefault(link, "modified")
