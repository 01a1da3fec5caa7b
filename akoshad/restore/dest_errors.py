"""The one-line errors of a restore that could not write its ``--dest``, stopped after
some of its files had landed there, or could not restore some of them; and the checks of
``--dest`` made before anything is written."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from akoshad.errors import AkoshadError, IntegrityError, RestoreError
from akoshad.private import NO_WRITES
from akoshad.restore.destdir import TEMP_PREFIX, dest_conflict, dest_link, open_dest
from akoshad.restore.marker import MARKER, mark, marked
from akoshad.storage.stored import StoredFile

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


class Unrestored(IntegrityError):
    """A restore that went to its end without some of the upload's files: ``problems``
    names each with why (damaged or missing in the target, a name --dest cannot take),
    printed before this line."""

    def __init__(self, message: str, problems: Sequence[str]) -> None:
        super().__init__(message)
        self.problems = list(problems)


def unrestored(problems: Sequence[str], dest: Path, landed: int, total: int) -> Unrestored:
    """The last line of a restore that could not restore the files ``problems`` name
    (printed before it) of its ``total`` files, and restored ``landed``."""
    return Unrestored(
        f"{len(problems)} of the {total} file(s) could not be restored (named above, each "
        f"with why); {dest} holds {landed} of the {total} file(s) (each whole "
        "and checked; a DuckDB database with its WAL or neither): an earlier upload may "
        "hold the others (akoshad uploads lists them; restore them into it with --path "
        "and --force)",
        problems,
    )


def open_dest_or_say(dest: Path) -> int:
    """``destdir.open_dest``; a --dest that cannot be made for another reason than a place
    that takes no writes (a file among its parents, a name too long) is one line saying
    so: nothing was written yet. Blocking."""
    try:
        return open_dest(dest)
    except OSError as exc:
        raise unmade_dest(dest, exc) from None


def check_dest(dest: Path, force: bool) -> None:
    """RestoreError when ``dest`` is a symlink, not a directory, or not empty without
    ``force``. Blocking."""
    try:
        _check_dest_as_is(dest, force)
    except OSError as exc:
        raise unmade_dest(dest, exc) from None


def _check_dest_as_is(dest: Path, force: bool) -> None:
    refused = dest_link(dest)  # checked again when it is opened (O_NOFOLLOW)
    if refused is not None:
        raise RestoreError(refused)
    if dest.exists() and not dest.is_dir():
        raise RestoreError(f"--dest {dest} exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        line = marked(dest)
        if line is not None:
            raise RestoreError(
                f"--dest {dest} holds a restore that did not restore every file "
                f"({MARKER}: {line}): restore again into it with --force, or choose "
                "another --dest"
            )
        raise RestoreError(f"--dest {dest} is not empty (use --force to restore into it)")


def marked_warning(dest: Path, subset: bool) -> str | None:
    """A warning when ``dest`` holds the mark of a restore that did not restore every
    file: this one (with --force) replaces it, or with --path (``subset``: it does not
    bring the whole upload) leaves it. Blocking."""
    line = marked(dest)
    if line is None:
        return None
    then = (
        "this restore of chosen files (--path) leaves that mark"
        if subset
        else "this restore removes that mark once it has restored every file"
    )
    return (
        f"warning: --dest {dest} holds a restore that did not restore every file "
        f"({MARKER}: {line}); {then}"
    )


def mark_or_say(dest_fd: int, dest: Path, upload_id: str) -> None:
    """``marker.mark``; a place that takes no writes is raised as such (``partial_restore``
    says so), any other failure is one line: nothing was restored yet. Blocking."""
    try:
        mark(dest_fd, upload_id)
    except OSError as exc:
        if exc.errno in NO_WRITES:
            raise
        raise RestoreError(
            f"cannot write the restore's mark {dest / MARKER}: {exc.strerror or exc}; "
            f"nothing was restored into {dest}"
        ) from None


def refuse_conflicts(
    dest: Path, files: Sequence[StoredFile], stale: Mapping[str, tuple[str, ...]], force: bool
) -> None:
    """RestoreError, before anything is written, when ``dest`` cannot take the files or
    the side files the restore removes (``destdir.dest_conflict``). Blocking."""
    writes = [f.path for f in files] + [p + s for p, sides in stale.items() for s in sides]
    conflict = dest_conflict(dest, writes, force)
    if conflict is not None:
        raise RestoreError(conflict)
