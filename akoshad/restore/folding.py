"""Store paths a destination's file system takes for one name.

A file system that ignores case (APFS and NTFS by default, an ext4 directory with
casefolding) or Unicode normalization (APFS, HFS+) would land two files of an upload
(``Notes.txt`` and ``notes.txt``; ``café`` in NFC and in NFD) on one name, the second
replacing the first, or a file on the name of a directory. A restore looks for such
paths first (no I/O), and only when there are some asks ``--dest`` with a probe file
whether it tells them apart. Blocking.
"""

from __future__ import annotations

import contextlib
import os
import unicodedata
from collections.abc import Callable, Iterable

from akoshad.restore.destdir import TEMP_PREFIX

Fold = Callable[[str], str]


def fold_all(path: str) -> str:
    """``path`` as a file system that ignores both case and normalization names it."""
    return unicodedata.normalize("NFC", path).casefold()


def clashes(paths: Iterable[str], fold: Fold = fold_all) -> list[tuple[str, str]]:
    """Pairs of different ``paths`` that are one name once folded, or a file and a
    directory of another path (``K`` and ``k/x``)."""
    files: dict[str, str] = {}
    out: list[tuple[str, str]] = []
    every = sorted(paths)
    for path in every:
        first = files.setdefault(fold(path), path)
        if first != path:
            out.append((first, path))
    for path in every:
        parts = path.split("/")
        for n in range(1, len(parts)):
            above = "/".join(parts[:n])
            other = files.get(fold(above))
            if other is not None and other != above:
                out.append((other, path))
                break
    return out


def _same(dir_fd: int, name: str, other: str) -> bool:
    try:
        a = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        b = os.stat(other, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def dest_fold(dest_fd: int) -> tuple[Fold, str] | None:
    """How the file system of ``dest_fd`` folds names (a probe file made and removed), and
    what it ignores; None when it tells case and normalization apart."""
    probe = f"{TEMP_PREFIX}{os.getpid()}-fold-caf\u00e9"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dest_fd))
    except OSError:
        return None  # it takes no writes: the restore's own writes say so
    try:
        case = _same(dest_fd, probe, probe.upper())
        norm = _same(dest_fd, probe, unicodedata.normalize("NFD", probe))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(probe, dir_fd=dest_fd)
    if case and norm:
        return fold_all, "case and Unicode normalization"
    if case:
        return str.casefold, "case"
    if norm:
        return lambda p: unicodedata.normalize("NFC", p), "Unicode normalization"
    return None


def folded_clash(dest_fd: int, dest: str, paths: list[str]) -> str | None:
    """Why ``dest`` cannot take ``paths`` (two of them one name there), else None."""
    if not clashes(paths):
        return None
    found = dest_fold(dest_fd)
    if found is None:
        return None
    fold, what = found
    pairs = clashes(paths, fold)
    if not pairs:
        return None
    first, second = pairs[0]
    same_look = unicodedata.normalize("NFC", first) == unicodedata.normalize("NFC", second)
    a, b = (ascii(n) if same_look else repr(n) for n in pairs[0])  # café in NFC, in NFD
    more = f" (and {len(pairs) - 1} more such pair(s))" if len(pairs) > 1 else ""
    return (
        f"--dest {dest} is on a file system that ignores {what} in names: {a} and {b} "
        f"of the upload would land on one name there, one replacing the other{more}; "
        "nothing was restored: restore into a directory on a file system that tells them "
        "apart, or each of them with --path into a --dest of its own"
    )
