"""Links inside the store to its own files, and files with several names (hard links): a
link is backed up with its file's content, and each name of a file with its content, so a
change of the file is a change of every link and name (the watcher reports one path)."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterable
from pathlib import Path


def look(root: Path, rels: Iterable[str]) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
    """Among the store paths ``rels``: the links to a file inside ``root`` (``{link: store
    path it leads to}``) and the files with other names (``{path: (device, inode)}``).
    Blocking: one ``lstat`` a path, a resolve a link."""
    real_root = root.resolve()
    links: dict[str, str] = {}
    inodes: dict[str, tuple[int, int]] = {}
    for rel in rels:
        path = root / rel
        try:
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                if st.st_nlink > 1:
                    inodes[rel] = (st.st_dev, st.st_ino)
                continue
            if not stat.S_ISLNK(st.st_mode):
                continue
            target = path.resolve(strict=True)
        except (OSError, RuntimeError):  # gone, dangling, a loop
            continue
        if target.is_relative_to(real_root) and target.is_file():
            links[rel] = target.relative_to(real_root).as_posix()
    return links, inodes


class StoreLinks:
    """``{file: links to it}`` and ``{(device, inode): names}`` for the store under
    ``root``, learnt from its walks and from the changed paths (thread-safe: used from
    worker threads)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._to: dict[str, set[str]] = {}
        self._names: dict[tuple[int, int], set[str]] = {}
        self._lock = threading.Lock()

    def found(
        self,
        links: dict[str, str],
        inodes: dict[str, tuple[int, int]] | None = None,
        *,
        whole: bool = False,
    ) -> None:
        """Links found (``{link: file}``) and files with other names (``{path: (device,
        inode)}``); ``whole``: by a walk of the whole store, which replaces what was known."""
        with self._lock:
            if whole:
                self._to, self._names = {}, {}
            for link, target in links.items():
                self._to.setdefault(target, set()).add(link)
            for path, key in (inodes or {}).items():
                self._names.setdefault(key, set()).add(path)

    def add_links(self, changed: dict[str, str]) -> None:
        """Add to ``changed`` (``{path: kind}``), as modified, the links to its paths and
        their other names (hard links); the changed paths that are such are remembered
        first (blocking)."""
        links, inodes = look(self.root, list(changed))
        self.found(links, inodes)
        with self._lock:
            more = [link for path in list(changed) for link in self._to.get(path, ())]
            more += [name for p, key in inodes.items() for name in self._names[key] if name != p]
        for path in more:
            changed.setdefault(path, "modified")
