"""Store paths whose names ``--dest``'s file system cannot take.

A name longer than the file system allows (``NAME_MAX``: 255 bytes on most, 143 on
eCryptfs; a manifest made on a file system that took longer names) cannot land: such a
file is one file the restore could not restore, named with why before anything is
fetched, and every other file is restored. Blocking.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from akoshad.storage.stored import StoredFile


def name_max(dir_fd: int) -> int | None:
    """The longest name (bytes) the file system of ``dir_fd`` takes; None when it does
    not say."""
    try:
        limit = os.fpathconf(dir_fd, "PC_NAME_MAX")
    except (OSError, ValueError):
        return None
    return limit if limit > 0 else None


def longest_name(path: str) -> int:
    """The length in bytes of the longest name among ``path``'s components."""
    return max(len(os.fsencode(part)) for part in path.split("/"))


def overlong(files: Sequence[StoredFile], limit: int | None) -> list[tuple[StoredFile, str]]:
    """Each of ``files`` with a name longer than ``limit`` bytes, with why (as a
    restore's problem line)."""
    if limit is None:
        return []
    out = []
    for f in files:
        longest = longest_name(f.path)
        if longest > limit:
            out.append((
                f,
                f"'{f.path}': not restored: a name in its path is {longest} bytes long, "
                f"and the file system of --dest takes names of at most {limit} bytes "
                "(restore it into a --dest on one that takes longer names)",
            ))  # fmt: skip
    return out
