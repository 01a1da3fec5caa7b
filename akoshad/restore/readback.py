"""``akoshad restore`` and ``akoshad verify``: read uploads back from a target and check them.

Both work from the target alone (a new machine with an empty state can restore): the
newest upload is the greatest ``upload_id`` with a manifest under ``systems/{system_id}/``.
Either manifest format is read (``manifest.read.load_files``); every file is fetched by
``storage.fetch.fetch_file`` (a whole object, or its chunks read from packs by ranged
reads), decoded, and its SHA-256 checked, chunk by chunk and whole; a file that meets a missing or
damaged chunk is fetched once more from where the upload's documents, loaded again, put it
now (``reload``: a daemon's prune may have repacked it meanwhile); one still damaged or
missing then (or whose chunk list is) is named and the restore goes on with the others
(``restore_jobs``), ending with exit 1 and what ``--dest`` holds. The checks of
``verify`` live in :mod:`akoshad.restore.verify`. An encrypted upload is read with the
identity (``--identity`` or ``encryption.identity_file``); without it, or with one that is
not a recipient, one line says so (exit 1). Unencrypted uploads need none.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path

from akoshad.config import Settings
from akoshad.errors import AkoshadError, RestoreError
from akoshad.manifest.layout import in_future
from akoshad.manifest.read import (
    latest_upload,
    list_uploads,
    load_files,
    load_manifest,
)
from akoshad.manifest.skipped import skipped_files, skipped_warning
from akoshad.names import printable
from akoshad.restore.dest_errors import (
    check_dest,
    inside_store,
    mark_or_say,
    marked_warning,
    open_dest_or_say,
    partial_restore,
    partly_restored,
    refuse_conflicts,
    unrestored,
)
from akoshad.restore.destdir import DestError, FileSink, parent_dir
from akoshad.restore.folding import folded_clash
from akoshad.restore.groups import Unit, work_units
from akoshad.restore.interrupt import cancelled_by_signals, interrupted_line, tell
from akoshad.restore.landing import Committer, DestTree
from akoshad.restore.listing import no_uploads
from akoshad.restore.marker import refused, unmark
from akoshad.restore.name_limit import name_max, overlong
from akoshad.restore.parallel import fetch_all
from akoshad.restore.reload import Load, Reloader
from akoshad.restore.restore_jobs import Found, RestoreJobs
from akoshad.restore.select import pick_at, select_entries, stale_sides, wal_pairs
from akoshad.restore.verify import print_ledger_check, range_reader, verify_upload
from akoshad.storage.chunk_decode import chunk_decoder
from akoshad.storage.crypto import Identities, IdentityError
from akoshad.storage.format2_read import Unreadable
from akoshad.storage.stored import StoredFile
from akoshad.targets import Target, make_target
from akoshad.targets.local import LocalTarget
from akoshad.threads import to_the_end


async def restore_upload(
    target: Target,
    system_id: str,
    upload_id: str,
    dest: Path,
    *,
    force: bool = False,
    globs: Sequence[str] = (),
    identities: Identities | None = None,
    problems: list[str] | None = None,
    say: Callable[[str], None] | None = None,
) -> int:
    """Write the store as of ``upload_id`` (only the paths ``globs`` match, when given)
    into ``dest``; returns the number of files. Several files are fetched at once
    (``parallel``). A file that cannot be restored (its chunk list, a chunk or its object
    missing or damaged) is one of ``problems`` (each told to ``say`` as it is found) and
    the others are restored (``restore_files``).

    The manifest's entries (index parts and chunk lists included) are all checked before
    anything is written; every directory and file is then made under a descriptor for
    ``dest`` without following a symlink. A file's chunks are read within its weight of
    the restore's memory budget (``parallel``)."""
    await asyncio.to_thread(check_dest, dest, force)
    earlier = await asyncio.to_thread(marked_warning, dest, bool(globs))
    if earlier is not None:
        print(f"akoshad: {printable(earlier)}", file=sys.stderr)
    # with --path, an earlier restore's mark stays: these files do not make DIR whole
    mark_as = None if globs and earlier is not None else upload_id
    # with --path, only the chosen files' chunk lists are read: one lost elsewhere is no bar
    keep = partial(select_entries, globs=globs) if globs else None
    lost: list[Unreadable] = []
    manifest, chosen = await load_files(target, system_id, upload_id, identities, keep, lost)
    left_out = skipped_warning(upload_id, await skipped_files(target, manifest, identities), globs)

    async def files_now() -> list[StoredFile]:
        return (await load_files(target, system_id, upload_id, identities, keep, []))[1]

    unreadable = [(u.file, u.reason) for u in lost]
    try:
        count = await restore_files(
            target, chosen, dest, force=force, identities=identities, reload=files_now,
            unreadable=unreadable, problems=problems, say=say, upload_id=mark_as,
        )  # fmt: skip
    finally:
        if left_out is not None:
            print(f"akoshad: {printable(left_out)}", file=sys.stderr)
    return count


async def restore_files(
    target: Target,
    files: Sequence[StoredFile],
    dest: Path,
    *,
    force: bool = False,
    identities: Identities | None = None,
    reload: Load | None = None,
    unreadable: Sequence[tuple[StoredFile, str]] = (),
    problems: list[str] | None = None,
    say: Callable[[str], None] | None = None,
    upload_id: str | None = None,
) -> int:
    """Fetch ``files`` into ``dest``: several units at once within the byte budget, small
    files of one pack together (``groups.work_units``: one read, then one worker thread
    decodes, checks and writes them all). Each checked file lands (fsync, rename) in the
    background (``landing.Committer``); this returns once every file and directory is on
    disk. A file that meets a missing or damaged chunk is fetched again from where
    ``reload`` (the upload's files loaded again, once) puts it now, when that moved.

    A file still damaged or missing then, or among ``unreadable`` (``(entry, why)``: its
    chunk list lost), is appended to ``problems`` (why, naming it) and told to ``say`` at
    once; the others go on (a DuckDB database and its WAL land together or neither: the
    partner of such a file is a problem too); once all are done,
    :class:`~.dest_errors.Unrestored` says what ``dest`` holds. A target or a disk that
    fails stops the restore. With ``upload_id``, ``dest`` holds the mark of a restore of
    it that has not restored every file (``marker``) until every file has landed."""
    found = Found(problems if problems is not None else [], say)
    every = [*files, *(f for f, _ in unreadable)]
    stale = stale_sides(every)
    dest_fd = await asyncio.to_thread(open_dest_or_say, dest)
    ranges = range_reader(target)
    decode = chunk_decoder(identities)
    try:  # a name --dest cannot take (or the mark's): that file's problem, not the restore's
        left_out = overlong(files, await asyncio.to_thread(name_max, dest_fd)) + refused(files)
        if left_out:
            left = {id(f) for f, _ in left_out}
            files = [f for f in files if id(f) not in left]
            unreadable = [*unreadable, *left_out]
        await asyncio.to_thread(refuse_conflicts, dest, files, stale, force)
        folded = await asyncio.to_thread(folded_clash, dest_fd, str(dest), [f.path for f in files])
        if folded is not None:
            raise RestoreError(folded)
        if upload_id is not None:  # removed once every file has landed (``marker``)
            await to_the_end(partial(mark_or_say, dest_fd, dest, upload_id))
        tree = DestTree(dest_fd, force)
    finally:
        os.close(dest_fd)
    pairs = wal_pairs(every)
    committer = Committer(tree, stale=stale, dest=dest, wals=pairs, held=found.held)
    reloader = Reloader(reload)
    for f, why in unreadable:
        found.add(why)
        committer.fail(f.path)

    jobs = RestoreJobs(target, ranges, committer, reloader, decode, identities, found)
    total = len(every)
    await _fetch_and_land(work_units(files, ranges), jobs.unit, committer, dest, total)
    if found.lines:
        raise unrestored(found.lines, dest, committer.landed, total)
    if upload_id is not None:
        await to_the_end(partial(unmark, dest))
    return len(files)


async def _fetch_and_land(
    units: list[Unit],
    job: Callable[[Unit], Awaitable[None]],
    committer: Committer,
    dest: Path,
    total: int,
) -> None:
    """Run ``job`` on every unit, then wait for every file to land; a target that stops
    answering says what ``dest`` holds by then."""
    try:
        await fetch_all(units, job, lambda u: u.stored_size)
        await committer.finish()
    except DestError as exc:
        raise RestoreError(str(exc)) from None
    except AkoshadError as exc:  # the upload damaged, the target gone, ...
        await committer.close()  # what was handed has landed: count it
        raise partly_restored(exc, dest, committer.landed, total) from None
    finally:
        await committer.close()


def sink_for(dest_fd: int, f: StoredFile, force: bool) -> FileSink:
    """A sink for ``f`` under the restore destination (no symlink followed)."""
    dir_fd = parent_dir(dest_fd, f.path, force)
    try:
        return FileSink(dir_fd, f.path.rsplit("/", 1)[-1], f.mode, mtime_ns=f.mtime_ns)
    except BaseException:
        os.close(dir_fd)
        raise


def _target_for(args: argparse.Namespace, settings: Settings) -> Target:
    choice = getattr(args, "target", "auto")
    if choice == "auto":
        choice = settings.primary_target  # where run uploads (force_method counts)
    if choice == "cloud" and not settings.bucket_configured:
        raise RestoreError("no cloud_sync.cloud_bucket is configured")
    return make_target(choice, settings)


async def start_reading(target: Target) -> None:
    """Start ``target`` for reading: no clean-up (a daemon may be uploading at this moment);
    an outbox directory that is not there is an error, not "no uploads". On failure the
    target is closed (a missing bucket: its client too, no noise after the error)."""
    try:
        await target.start(clean_up=False)
        absent = target.absent() if isinstance(target, LocalTarget) else None
        if absent is not None:
            raise RestoreError(absent)
    except BaseException:
        await target.close()
        raise


async def _with_target(settings: Settings, args: argparse.Namespace) -> tuple[Target, str]:
    target = _target_for(args, settings)
    await start_reading(target)
    system_id = args.system_id or settings.cloud_sync.system_id
    return target, system_id


def of_upload(text: str, upload_id: str | None) -> str:
    """An identity error's ``this upload is ...`` said of ``upload_id``: restore --latest
    or --at, and a drill, pick the upload, so the user is told which one needs which key."""
    if upload_id is None:
        return text
    if text.startswith("this upload "):
        return f"upload {upload_id} {text[len('this upload ') :]}"
    return f"upload {upload_id}: {text}"


def identities_of(settings: Settings) -> Identities | None:
    """The identity (``--identity`` is ``encryption.identity_file`` by now), or None when
    none is set; a set one that cannot be read is one line, exit 1. Blocking."""
    return settings.encryption.identities_if_set(
        warn=lambda line: print(printable(f"akoshad: warning: {line}"), file=sys.stderr)
    )


async def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    identities = await asyncio.to_thread(identities_of, settings)
    target, system_id = await _with_target(settings, args)
    try:
        uploads = await list_uploads(target, system_id)
        if not uploads:
            raise RestoreError(await no_uploads(target, system_id))
        if args.all:
            chosen = uploads
        elif args.upload_id:
            chosen = [args.upload_id]
        else:
            newest = latest_upload(uploads)
            future = [u for u in uploads if in_future(u)]
            chosen = ([newest] if newest is not None else []) + future
        failed = False
        damaged: list[str] = []  # verified with problems (listed): the ledger check says so
        for upload_id in chosen:
            try:
                report = await verify_upload(target, system_id, upload_id, identities)
            except IdentityError as exc:  # sealed to other keys: the others are still checked
                if len(chosen) == 1:
                    raise type(exc)(of_upload(str(exc.args[0]), upload_id), fix=exc.fix) from None
                print(printable(f"{upload_id}: not verified: {exc}"))
                failed = True
                continue
            for problem in report.problems:
                print(printable(f"{upload_id}: {problem}"))
            print(f"{upload_id}: {report.checked} file(s) verified, {report.status}")
            failed = failed or bool(report.problems)
            if report.problems:
                damaged.append(upload_id)
        if system_id == settings.cloud_sync.system_id:
            checked = await print_ledger_check(
                target, system_id, settings, chosen, identities, damaged=damaged
            )
            failed = checked or failed
        return 1 if failed else 0
    finally:
        await target.close()


def warn_future(uploads: Sequence[str]) -> None:
    """One line on stderr when ``--latest`` skips uploads dated in the future: on a machine
    whose clock is behind, they are the newest data."""
    future = [u for u in uploads if in_future(u)]
    if future:
        print(
            f"akoshad: warning: {len(future)} upload(s) dated in the future skipped, the "
            f"newest {future[-1]}; if this machine's clock is behind, that is the latest "
            f"(restore it with --upload-id {future[-1]})",
            file=sys.stderr,
        )


def warn_picked_future(upload_id: str, uploads: Sequence[str]) -> None:
    """One line on stderr when ``--at`` (a TIME after now) takes an upload dated in the
    future: a clock that ran ahead dated it, so it may hold an older store than the
    uploads ``--latest`` takes (which skips it)."""
    if in_future(upload_id):
        latest = latest_upload(list(uploads))
        then = f"; --latest takes {latest}, the newest dated by now" if latest else ""
        print(
            f"akoshad: warning: upload {upload_id} is dated in the future (a clock that ran "
            f"ahead dated it, or this machine's clock is behind){then}",
            file=sys.stderr,
        )


def _say_problem(line: str) -> None:
    """One file the restore could not restore, on stderr as it is found."""
    print(f"akoshad: {printable(line)}", file=sys.stderr, flush=True)


def dest_path(text: str) -> Path:
    """``--dest`` as a shell would read it: ``~`` and ``~user`` expanded."""
    return Path(os.path.expanduser(text))


async def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    identities = await asyncio.to_thread(identities_of, settings)
    target, system_id = await _with_target(settings, args)
    try:
        if args.latest:
            uploads = await list_uploads(target, system_id)
            latest = latest_upload(uploads)
            warn_future(uploads)
            if latest is None and uploads:  # this clock is behind theirs (warned above)
                raise RestoreError(
                    f"every upload of system {system_id} in {target.name} is dated in the "
                    "future (see the warning above): restore one with --upload-id"
                )
            if latest is None:
                raise RestoreError(await no_uploads(target, system_id))
            upload_id = latest
        elif getattr(args, "at", None) is not None:
            uploads = await list_uploads(target, system_id)
            shown = f"system {system_id} in {target.name}"
            load = partial(load_manifest, target, system_id)
            upload_id, _ = await pick_at(uploads, args.at, load, shown)
            warn_picked_future(upload_id, uploads)
        else:
            upload_id = args.upload_id
        dest = dest_path(args.dest)
        nested = inside_store(dest, settings.data_dir)
        if nested is not None:
            print(f"akoshad: {printable(nested)}", file=sys.stderr)
        globs = getattr(args, "path", None) or ()
        gc.freeze()  # what is loaded by now stays: collections scan only the restore's objects
        with cancelled_by_signals() as caught:
            try:  # each file that cannot be restored is named as it is found, before the end
                count = await restore_upload(
                    target, system_id, upload_id, dest, force=args.force, globs=globs,
                    identities=identities, say=_say_problem,
                )  # fmt: skip
            except OSError as exc:  # the disk, not the target: its files stay as they landed
                raise RestoreError(partial_restore(dest, exc)) from None
            except IdentityError as exc:
                raise type(exc)(of_upload(str(exc.args[0]), upload_id), fix=exc.fix) from None
            except asyncio.CancelledError:  # Ctrl-C, SIGTERM, SIGHUP: cleaned up by now
                tell(interrupted_line(dest, upload_id))  # one scandir: no await, none to cut
                if not caught:
                    raise  # Ctrl-C: asyncio.run makes it a KeyboardInterrupt, exit 130
                return 128 + caught[0]
        print(f"restored {count} file(s) of upload {upload_id} into {args.dest}")
        return 0
    finally:
        await target.close()
