"""What counts as a store file: side files, temp files, include/exclude, the disk walk.

Paths are POSIX strings relative to ``data_dir``. A DuckDB ``x.wal`` (``x.wal.checkpoint``)
or SQLite ``x-journal``/``x-wal``/``x-shm`` belongs to ``x`` when ``x`` is a file that is
not known to be something else (a database of the other kind, or a plain file:
``side_owner``): a change to it is a change of ``x``; otherwise it is a store file of its
own (a ``notes.wal`` that belongs to no database, ``plain.txt.wal`` beside a text file).
DuckDB temp directories (``*.tmp/``), ``*.tmp`` files and ``.write_test`` are never synced.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from akoshad.fastpath import StatMap, stat_entry, stat_tree

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


@dataclass(frozen=True)
class WalkResult:
    """Store files found on disk, entries refused with a reason, how many store files
    include/exclude left out, and the selected entries that are no file to back up
    (a FIFO, a socket, a device, a link to nothing: ``{path: what}``, said once, no skip)."""

    files: list[str]
    refused: dict[str, str]
    excluded: int = 0
    not_files: dict[str, str] = field(default_factory=dict)
    # each file that is a link inside the store: the store path it leads to
    links: dict[str, str] = field(default_factory=dict)
    # each file that has other names (hard links): its (device, inode)
    inodes: dict[str, tuple[int, int]] = field(default_factory=dict)


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


def walk_store(
    root: Path, flt: PathFilter, stats: StatMap | None = None, *, under: str = ""
) -> WalkResult:
    """List store files under ``root`` (blocking). Symlinked directories are not entered;
    symlinked files are kept only if they resolve inside ``root``; names that are not
    valid UTF-8 are refused (they cannot be named in a manifest). ``under``: only the
    directory of that relative path is walked (its entries still named from ``root``).

    ``stats``: filled, on the same walk, with the lstat of every entry under ``root`` (and
    of ``root``, as ``"."``) exactly as ``fastpath.stat_map`` reads them, also below the
    directories that hold no store file (temp directories): a ``run --once`` records them
    for its quick check, so the store is walked once."""
    files: list[str] = []
    refused: dict[str, str] = {}
    not_files: dict[str, str] = {}
    excluded = 0
    real_root = root.resolve()
    if stats is not None:
        try:
            st = os.lstat(root)
            stats["."] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
        except OSError:
            pass
    prefix = f"{under}/" if under else ""
    links: dict[str, str] = {}
    inodes: dict[str, tuple[int, int]] = {}
    found = (links, inodes)
    on_disk: set[str] = set()  # every file walked, selected or not (side files' owners)
    sides: list[str] = []
    for rel, odd in _walk(root, real_root, prefix, stats, len(str(root)) + 1, found):
        if odd is not None:
            wanted = to_change(rel, flt) is not None
            if odd.kind == NOT_A_FILE:
                if wanted:
                    not_files[rel] = odd.reason
            elif wanted or odd.kind == BAD_NAME:
                refused[rel] = odd.reason
            continue
        on_disk.add(rel)
        if is_ignored(rel):
            continue
        if is_side_file(rel):
            sides.append(rel)  # its database's, unless that is no file (below)
        elif flt.allows(rel):
            files.append(rel)
        else:
            excluded += 1
    for rel in sides:
        if owner_of(rel) in on_disk and side_owner(root, rel):
            continue
        if flt.allows(rel):
            files.append(rel)
        else:
            excluded += 1
    files.sort()
    kept = set(files)
    return WalkResult(
        files,
        refused,
        excluded,
        not_files,
        {k: v for k, v in links.items() if k in kept},
        {k: v for k, v in inodes.items() if k in kept},
    )


# what kind of odd entry ``_walk`` met: a refusal (a skip), a refusal said even for a
# path the filter leaves out (a name that cannot be named in a manifest), or an entry that
# is no file to back up (said once, not a skip)
OddKind = Literal["refused", "bad name", "not a file"]
REFUSED: OddKind = "refused"
BAD_NAME: OddKind = "bad name"
NOT_A_FILE: OddKind = "not a file"


class Odd(NamedTuple):
    """Why ``_walk`` gives an entry that is not a store file, and what kind of case."""

    reason: str
    kind: OddKind = REFUSED


def _not_a_file(entry: os.DirEntry[str]) -> Odd:
    """What a walked entry that is neither a directory nor a regular file is."""
    mode = entry.stat(follow_symlinks=False).st_mode
    if stat.S_ISFIFO(mode):
        return Odd("a FIFO", NOT_A_FILE)
    if stat.S_ISSOCK(mode):
        return Odd("a socket", NOT_A_FILE)
    return Odd("a device or special file", NOT_A_FILE)


def _link(entry: os.DirEntry[str], rel: str, real_root: Path) -> tuple[str, Odd | None] | None:
    """A symlink's walk entry: ``(rel, None)`` for a file inside ``root``, why not
    otherwise, or None for a linked directory (never walked into: loops)."""
    try:
        target = Path(entry.path).resolve()
    except RuntimeError:  # Python before 3.13
        return rel, Odd("symlink loop")
    except OSError as exc:
        return rel, Odd("symlink loop" if exc.errno == errno.ELOOP else f"cannot follow: {exc}")
    if not target.is_relative_to(real_root):
        return rel, Odd("symlink points outside data_dir")
    if target.is_dir():
        return None
    if target.is_file():
        return rel, None
    if not os.path.lexists(target):
        return rel, Odd("a symlink to nothing", NOT_A_FILE)
    if os.path.islink(target):  # a loop that resolve() left unresolved
        return rel, Odd("symlink loop")
    return rel, Odd("a symlink to a FIFO, socket or device", NOT_A_FILE)


def _note_names(entry: os.DirEntry[str], rel: str, inodes: dict[str, tuple[int, int]]) -> None:
    """Record the (device, inode) of a file with other names (hard links). Its ``lstat`` is
    the one ``stats`` read, when they are kept; one that fails records nothing (the file
    is still listed: its capture says why it cannot be read)."""
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return
    if st.st_nlink > 1:
        inodes[rel] = (st.st_dev, st.st_ino)


def _list_dir(path: Path) -> tuple[list[os.DirEntry[str]], Odd | None]:
    """The entries of a directory, or none and why it cannot be listed (None when it is
    gone meanwhile: nothing to say)."""
    try:
        return list(os.scandir(path)), None
    except (FileNotFoundError, NotADirectoryError):
        return [], None
    except OSError as exc:
        return [], Odd(f"cannot list the directory: {exc.strerror or exc}")


Found = tuple[dict[str, str], dict[str, tuple[int, int]]]


def _walk(
    root: Path, real_root: Path, prefix: str, stats: StatMap | None, base: int, found: Found
) -> Iterator[tuple[str, Odd | None]]:
    """The entries below ``prefix``, depth first; ``found``: filled with the links to
    store files and the (device, inode) of files with other names (see ``WalkResult``).
    Each directory's listing is a generator of its own on a stack, not a recursion: a
    tree 1,000 levels deep is walked (Python's recursion limit stopped the daemon)."""
    stack = [_walk_dir(root, real_root, prefix, stats, base, found)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, str):  # a directory to walk in its place
                stack.append(_walk_dir(root, real_root, item, stats, base, found))
                break
            yield item
        else:
            stack.pop()


def _walk_dir(
    root: Path, real_root: Path, prefix: str, stats: StatMap | None, base: int, found: Found
) -> Iterator[tuple[str, Odd | None] | str]:
    """The entries of the directory ``prefix`` (``_walk``), and the prefix of each of its
    directories to walk, in its place."""
    links, inodes = found
    entries, problem = _list_dir(root / prefix if prefix else root)
    if problem is not None and prefix:  # its files cannot be seen: say so
        yield prefix[:-1], problem
    for entry in entries:
        name = entry.name
        rel = f"{prefix}{name}"
        if stats is not None:
            stat_entry(entry, base, stats)  # one that cannot be read is left out
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            if stats is not None and entry.is_dir(follow_symlinks=False):
                stat_tree(entry.path, base, stats)
            yield (
                rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                Odd("name is not valid UTF-8", BAD_NAME),
            )
            continue
        try:
            if entry.is_symlink():
                linked = _link(entry, rel, real_root)
                if linked is not None:
                    if linked[1] is None:  # a file inside: where it leads, for its changes
                        links[rel] = Path(entry.path).resolve().relative_to(real_root).as_posix()
                    yield linked
                continue
            if entry.is_dir(follow_symlinks=False):
                if is_ignored(rel):
                    if stats is not None:
                        stat_tree(entry.path, base, stats)
                    continue
                yield rel + "/"
            elif entry.is_file(follow_symlinks=False):
                _note_names(entry, rel, inodes)
                yield rel, None
            else:  # sockets, FIFOs, devices: not store files (never opened: a FIFO blocks)
                yield rel, _not_a_file(entry)
        except OSError:
            continue
