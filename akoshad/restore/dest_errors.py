"""The one-line errors of a restore that could not write its ``--dest``, or stopped on a
damaged upload after some of its files had landed there."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from akoshad.errors import AkoshadError, IntegrityError, RestoreError
from akoshad.private import NO_WRITES
from akoshad.restore.destdir import TEMP_PREFIX

# a write that failed for want of room: freeing space (or a smaller file) is the fix
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def unmade_dest(dest: Path, exc: OSError) -> OSError | RestoreError:
    """What to raise for ``exc`` met making or looking at ``--dest`` before anything was
    written: itself for a place that takes no writes (``partial_restore`` says so), else
    one line saying --dest cannot be made and why."""
    if exc.errno in NO_WRITES:
        return exc
    name = f" ({exc.filename})" if exc.filename and exc.filename != str(dest) else ""
    return RestoreError(
        f"--dest {dest} cannot be made{name}: {exc.strerror or exc} (choose another --dest)"
    )


def partial_restore(dest: Path, exc: OSError) -> str:
    """The line of a restore that could not write ``dest``: a place that takes no writes
    is named as such; otherwise what failed, and that the files landed before it are
    there (each checked whole; a DuckDB database with its WAL or neither); "free the
    space" only when space is what is missing."""
    name = exc.filename
    if isinstance(name, str) and os.path.basename(name).startswith(TEMP_PREFIX):
        name = os.path.dirname(name)  # our temporary file: the user knows its directory
    where = f" ({name})" if name else ""
    if exc.errno in NO_WRITES:
        within = where if name and name != str(dest) else ""
        return (
            f"--dest {dest} cannot be written{within}: {exc.strerror or exc} "
            "(make it writable or choose another --dest)"
        )
    fix = "free the space" if exc.errno in NO_ROOM else "fix that"
    return (
        f"cannot write the restore{where}: {exc.strerror or exc}; {dest} holds only part of "
        "the upload (each file there is whole and checked; a DuckDB database with its WAL "
        f"or neither): {fix} or choose another --dest, then restore again with --force"
    )


def partly_restored(exc: AkoshadError, dest: Path, landed: int, total: int) -> AkoshadError:
    """``exc`` (a damaged or missing part of the upload, a target that stopped answering),
    saying what ``dest`` holds when files had landed there before it (none: ``exc`` as it
    is). A damaged upload stays an :class:`IntegrityError`; the rest a RestoreError."""
    if not landed:
        return exc
    holds = (
        f"{exc}; {dest} holds {landed} of the {total} file(s) (each whole and checked; a "
        "DuckDB database with its WAL or neither): "
    )
    if isinstance(exc, IntegrityError):
        return IntegrityError(
            holds + "restore another upload (akoshad uploads lists them) into it with "
            "--force, or choose another --dest",
            object_key=exc.object_key,
        )
    return RestoreError(holds + "restore again into it with --force, or choose another --dest")


def inside_store(dest: Path, data_dir: Path) -> str | None:
    """A warning when ``dest`` lies inside ``data_dir`` (resolved paths compared): the
    daemon would back the restored copy up as part of the store, a second copy in every
    upload from then on. ``data_dir`` itself is no mistake (the store brought back)."""
    data = Path(os.path.realpath(data_dir))
    if data not in Path(os.path.realpath(dest)).parents:
        return None
    return (
        f"warning: --dest {dest} is inside data_dir {data_dir}: the daemon will back the "
        "restored copy up with the store (restore elsewhere, or into data_dir itself to "
        "bring the store back)"
    )
