"""What counts as a store file: side files, temp files, include/exclude (the disk walk is
``store_walk``).

Paths are POSIX strings relative to ``data_dir``. A DuckDB ``x.wal`` (``x.wal.checkpoint``)
or SQLite ``x-journal``/``x-wal``/``x-shm`` belongs to ``x`` when ``x`` is a file that is
not known to be something else (a database of the other kind, or a plain file:
``side_owner``): a change to it is a change of ``x``; otherwise it is a store file of its
own (a ``notes.wal`` that belongs to no database, ``plain.txt.wal`` beside a text file).
DuckDB temp directories (``*.tmp/``), ``*.tmp`` files and ``.write_test`` are never synced.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

FileKind = Literal["duckdb", "sqlite", "file"]
_SQLITE_SIDES = ("-journal", "-wal", "-shm")
# DuckDB's WAL of the commits made while a checkpoint runs (merged into ``.wal`` when it
# ends; left by a writer killed during one): never captured, its database waits for it to go
CHECKPOINT_WAL = ".wal.checkpoint"
DUCKDB_MAGIC = b"DUCK"
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class PathFilter:
    """include/exclude globs (relative to data_dir); empty include means everything."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def of(cls, include: Sequence[str], exclude: Sequence[str]) -> PathFilter:
        return cls(tuple(include), tuple(exclude))

    @staticmethod
    def _match(rel: str, pattern: str) -> bool:
        if fnmatch.fnmatchcase(rel, pattern):
            return True
        # "dir/**" style and bare directory names match everything below
        stripped = pattern.rstrip("/").removesuffix("/**")
        return rel.startswith(stripped + "/") if stripped and "*" not in stripped else False

    def allows(self, rel: str) -> bool:
        if self.include and not any(self._match(rel, p) for p in self.include):
            return False
        return not any(self._match(rel, p) for p in self.exclude)

    def idle_includes(self, selected: Iterable[str]) -> list[str]:
        """The ``include`` globs that select none of ``selected`` (the store files a walk
        selected): a typo, a path not relative to data_dir, or a file not there yet."""
        idle = list(self.include)
        for rel in selected:
            if not idle:
                break
            idle = [p for p in idle if not self._match(rel, p)]
        return idle


def idle_include_line(data_dir: Path, patterns: Sequence[str]) -> str:
    """The warning for ``include`` globs that select no file while others do: what they
    name is not backed up, and nothing else says so."""
    named = ", ".join(repr(p) for p in patterns)
    return (
        f"include {named} selects no file in data_dir {data_dir} (a typo? globs are relative "
        "to data_dir): what it names is not backed up"
    )


def is_ignored(rel: str) -> bool:
    """Temp files and DuckDB temp directories: never synced, never a change."""
    parts = rel.split("/")
    if any(p.endswith(".tmp") for p in parts):
        return True
    name = parts[-1]
    return name == ".write_test" or ".akoshad-" in name


def owner_of(rel: str) -> str:
    """The store file a path's change belongs to (itself unless it is a side file)."""
    for side in (*_SQLITE_SIDES, CHECKPOINT_WAL):
        if rel.endswith(side):
            return rel[: -len(side)]
    if rel.endswith(".wal"):
        return rel[: -len(".wal")]
    return rel


def is_side_file(rel: str) -> bool:
    return owner_of(rel) != rel


def side_kind(rel: str) -> FileKind | None:
    """The kind of database a side-file name belongs to (``.wal``, ``.wal.checkpoint``:
    DuckDB; ``-journal``, ``-wal``, ``-shm``: SQLite), None for a name that is no side
    file's."""
    if rel.endswith(_SQLITE_SIDES):
        return "sqlite"
    return "duckdb" if rel.endswith((".wal", CHECKPOINT_WAL)) else None


def side_owner(root: Path, rel: str) -> bool:
    """Whether the side-file-named ``rel`` belongs to its database under ``root`` (blocking:
    a stat and at most 16 bytes read): its owner is a file, and its head is not yet written
    (a database being created) or shows the database kind the name belongs to. A
    ``plain.txt.wal`` beside a text file, or a DuckDB ``x-wal``, is a file of its own. An
    owner that cannot be read keeps it (the owner's capture says why)."""
    wanted = side_kind(rel)
    owner = root / owner_of(rel)
    if wanted is None or not os.path.isfile(owner):
        return False
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(owner, flags)  # a link (maybe out of data_dir) is not read
        try:
            head = os.read(fd, 16)
        finally:
            os.close(fd)
    except OSError:
        return True
    return len(head) < 16 or kind_of_head(head) == wanted


def to_change(rel: str, flt: PathFilter) -> str | None:
    """Map a changed path to the store file to queue, or None when it is not synced."""
    if is_ignored(rel):
        return None
    owner = owner_of(rel)
    if is_ignored(owner) or not flt.allows(owner):
        return None
    return owner


def change_of(rel: str, flt: PathFilter, root: Path) -> str | None:
    """``to_change``, for a path seen on disk under ``root``: a side file whose owner is no
    file there is a store file of its own (blocking: one stat, for a side file only)."""
    target = to_change(rel, flt)
    if target is None or target == rel or side_owner(root, rel):
        return target
    return rel if flt.allows(rel) else None


def below_a_link(root: Path, rel: str) -> bool:
    """Whether a directory on ``rel``'s path under ``root`` is a symlink (blocking: one
    ``lstat`` a directory). The walk never enters one: nothing below it is a store file."""
    path = root
    for part in rel.split("/")[:-1]:
        path = path / part
        if path.is_symlink():
            return True
    return False


def kind_of_head(head: bytes) -> FileKind:
    """The kind of a file from its first 16 bytes."""
    if head.startswith(SQLITE_MAGIC):
        return "sqlite"
    if head[8:12] == DUCKDB_MAGIC:
        return "duckdb"
    return "file"


def relpath(root: Path, path: Path) -> str | None:
    """``path`` relative to ``root`` as POSIX, or None when outside it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


def unreadable(directory: Path) -> str | None:
    """Why the directory cannot be listed or entered (its permissions), else None (also
    when it is gone: the caller looks for that). Blocking. A store that cannot be read is
    not an empty store: its files are all still there."""
    try:
        # opened for listing (read permission), not listed: the walk alone lists the store
        os.close(os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)))
        os.stat(os.path.join(directory, "."))  # entering it (search permission)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def readable_dir(directory: Path) -> os.stat_result | None:
    """The stat of ``directory`` when it is there and may be listed and entered, else None
    (blocking: a caller on the event loop runs it in a thread)."""
    try:
        st = directory.stat()
    except OSError:
        return None
    return st if stat.S_ISDIR(st.st_mode) and unreadable(directory) is None else None


def groups_below(groups: Iterable[str]) -> dict[str, list[str]]:
    """Each directory of the store paths ``groups``: the paths below it (at any depth)."""
    below: dict[str, list[str]] = {}
    for group in groups:
        parts = group.split("/")
        for i in range(1, len(parts)):
            below.setdefault("/".join(parts[:i]), []).append(group)
    return below
