"""The disk walk of the store: every store file under ``data_dir``, with what the walk
found that is no store file (refused entries, FIFOs and sockets, links, hard links).
Blocking: callers on the event loop run it in a thread (or the walk child)."""

from __future__ import annotations

import errno
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from akoshad.fastpath import StatMap, stat_entry, stat_tree
from akoshad.pipeline.storefiles import (
    PathFilter,
    is_ignored,
    is_side_file,
    owner_of,
    side_owner,
    to_change,
)


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
    # each file with names the walk did not meet (a hard link from outside data_dir, or
    # from a directory it does not enter): how many
    outside_names: dict[str, int] = field(default_factory=dict)


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
    inodes: dict[str, tuple[int, int, int]] = {}  # (device, inode, number of names)
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
        {k: v[:2] for k, v in inodes.items() if k in kept},
        _outside_names(inodes, kept),
    )


def _outside_names(inodes: dict[str, tuple[int, int, int]], kept: set[str]) -> dict[str, int]:
    """Of the files ``kept`` with other names (``inodes``: every walked file with more than
    one, as (device, inode, names)), those with more names than the walk met, and how many
    more: another name outside data_dir (or in a directory the walk does not enter) reads
    and writes the same bytes, unseen by the watch."""
    met = Counter(v[:2] for v in inodes.values())
    return {
        rel: names - met[(dev, ino)]
        for rel, (dev, ino, names) in inodes.items()
        if rel in kept and names > met[(dev, ino)]
    }


def selects_a_file(root: Path, flt: PathFilter) -> bool:
    """Whether :func:`walk_store` would list a file, stopping at the first plain file the
    filter takes (a store with files answers at once, not after a walk of all of it); only
    a store that has none is walked whole (a side file may then stand for itself).
    Blocking."""
    found: Found = ({}, {})
    for rel, odd in _walk(root, root.resolve(), "", None, len(str(root)) + 1, found):
        if odd is None and not is_ignored(rel) and not is_side_file(rel) and flt.allows(rel):
            return True
    return bool(walk_store(root, flt).files)


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


def _note_names(entry: os.DirEntry[str], rel: str, inodes: dict[str, tuple[int, int, int]]) -> None:
    """Record the (device, inode, names) of a file with other names (hard links). Its ``lstat`` is
    the one ``stats`` read, when they are kept; one that fails records nothing (the file
    is still listed: its capture says why it cannot be read)."""
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:
        return
    if st.st_nlink > 1:
        inodes[rel] = (st.st_dev, st.st_ino, st.st_nlink)


def _list_dir(path: Path) -> tuple[list[os.DirEntry[str]], Odd | None]:
    """The entries of a directory, or none and why it cannot be listed (None when it is
    gone meanwhile: nothing to say)."""
    try:
        return list(os.scandir(path)), None
    except (FileNotFoundError, NotADirectoryError):
        return [], None
    except OSError as exc:
        return [], Odd(f"cannot list the directory: {exc.strerror or exc}")


Found = tuple[dict[str, str], dict[str, tuple[int, int, int]]]


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
            stat_entry(entry, base, stats, rel)  # one that cannot be read is left out
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
