"""``akoshad restore`` and ``akoshad verify``: read uploads back from a target and check them.

Both work from the target alone (a new machine with an empty state can restore): the
newest upload is the greatest ``upload_id`` with a manifest under ``systems/{system_id}/``.
Every file is decoded and its SHA-256 checked against the manifest.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from akoshad.compress import DecodeError, Decoder
from akoshad.config import Settings
from akoshad.errors import IntegrityError, RestoreError
from akoshad.fileio import CHUNK
from akoshad.manifest.layout import (
    FileEntry,
    entries_of,
    in_future,
)
from akoshad.manifest.read import latest_upload, list_uploads, load_manifest
from akoshad.restore.destdir import DestError, FileSink, open_dest, parent_dir
from akoshad.restore.parallel import fetch_all, owned_in_thread, read_ahead
from akoshad.restore.select import pick_at, select_entries
from akoshad.store.db import STATE_FILE, LedgerView, StateError, read_ledger
from akoshad.targets import Target, make_target


def _damaged(entry: FileEntry, why: str) -> IntegrityError:
    return IntegrityError(f"{entry.path}: object {entry.key} is damaged: {why}")


async def fetch_entry(target: Target, entry: FileEntry, sink: FileSink | None) -> tuple[int, str]:
    """Stream one object, decode it, hash it (and write it to ``sink``); (size, sha256).

    Decoding stops as soon as the output passes the entry's declared size, and reading as
    soon as the stored bytes pass its ``stored_size``: a small object that inflates to
    gigabytes costs at most one decoded piece more than the file it claims to be."""
    try:
        decoder = Decoder(entry.compression)
    except DecodeError as exc:
        raise _damaged(entry, str(exc)) from None
    digest = hashlib.sha256()
    size = 0
    stored = 0
    try:
        try:
            async for chunk in read_ahead(target.read(entry.key)):
                stored += len(chunk)
                if stored > entry.stored_size:
                    raise _damaged(entry, f"more than its listed {entry.stored_size} bytes")
                size = await asyncio.to_thread(_consume, decoder, chunk, digest, sink, size, entry)
            tail = decoder.finish()
        except KeyError:
            raise IntegrityError(f"{entry.path}: object {entry.key} is missing") from None
        except DecodeError as exc:
            raise _damaged(entry, f"cannot be decoded: {exc}") from None
        size = await asyncio.to_thread(_take, digest, sink, size, entry, tail)
        if stored != entry.stored_size:
            raise _damaged(entry, f"{stored} stored bytes, listed {entry.stored_size}")
        sha = digest.hexdigest()
        if size != entry.size or sha != entry.sha256:
            raise IntegrityError(
                f"{entry.path}: content does not match the manifest "
                f"(size {size} vs {entry.size}, sha256 {sha[:12]} vs {entry.sha256[:12]})"
            )
        if sink is not None:
            await asyncio.to_thread(sink.commit, size, entry.path)
    except BaseException:
        if sink is not None:
            await asyncio.to_thread(sink.discard)
        raise
    return size, sha


def _consume(
    decoder: Decoder,
    chunk: bytes,
    digest: Any,
    sink: FileSink | None,
    size: int,
    entry: FileEntry,
) -> int:
    """Decode one stored chunk in bounded pieces: hash them and write them (sparse); the
    new decoded size. Stops past the entry's declared size."""
    for plain in decoder.feed_iter(chunk, CHUNK):
        size = _take(digest, sink, size, entry, plain)
    return size


def _take(digest: Any, sink: FileSink | None, size: int, entry: FileEntry, plain: bytes) -> int:
    size += len(plain)
    if size > entry.size:
        raise _damaged(entry, f"decodes to more than its declared {entry.size} bytes")
    digest.update(plain)
    if sink is not None:
        sink.write(plain)
    return size


@dataclass
class VerifyReport:
    upload_id: str
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "ok" if not self.problems else f"{len(self.problems)} problem(s)"


async def _object_problem(target: Target, path: str, key: str, stored_size: int) -> str | None:
    """Why the object ``key`` (holding ``path``) is not as listed, or None."""
    stored = await target.head(key)
    if stored is None:
        return f"{path}: object {key} is missing"
    if stored != stored_size:
        return f"{path}: stored size {stored} differs from manifest {stored_size}"
    return None


def compare_ledger(ledger: LedgerView, manifest: dict[str, Any]) -> list[str]:
    """What differs between this machine's ledger and the manifest of the upload it was
    last committed with (they must describe the same objects)."""
    upload_id = ledger.last_upload
    listed = {e.path: e for e in entries_of(manifest)}
    problems: list[str] = []
    for path in sorted(ledger.entries.keys() | listed.keys()):
        row, entry = ledger.entries.get(path), listed.get(path)
        if entry is None:
            problems.append(f"ledger: {path} is not in the manifest of {upload_id}")
        elif row is None:
            problems.append(f"ledger: {path} of the manifest of {upload_id} is not in it")
        else:
            differ = [
                name
                for name in ("key", "size", "sha256", "stored_size", "compression")
                if getattr(row, name) != getattr(entry, name)
            ]
            if differ:
                problems.append(
                    f"ledger: {path}: {', '.join(differ)} differ from the manifest of {upload_id}"
                )
    return problems


async def verify_ledger(
    target: Target, system_id: str, ledger: LedgerView, verified: Collection[str] = ()
) -> VerifyReport:
    """The ledger against its last upload's manifest, whose objects must all be there
    (not looked at again when that upload is among ``verified`` and the two agree)."""
    if ledger.last_upload is None:
        report = VerifyReport("ledger")
        if ledger.entries:
            report.problems.append("ledger: it lists files but no completed upload")
        return report
    report = VerifyReport(ledger.last_upload)
    try:
        manifest = await load_manifest(target, system_id, ledger.last_upload)
    except RestoreError as exc:
        report.problems.append(f"ledger: its last upload is unreadable: {exc}")
        return report
    report.problems.extend(compare_ledger(ledger, manifest))
    if report.problems or ledger.last_upload not in verified:
        for path, row in sorted(ledger.entries.items()):
            problem = await _object_problem(target, path, row.key, row.stored_size)
            if problem is not None:
                report.problems.append(f"ledger: {problem}")
    report.checked = len(ledger.entries)
    return report


async def _verify_ledger(
    target: Target, system_id: str, settings: Settings, verified: Collection[str]
) -> bool:
    """Print the ledger check; True when it found problems."""
    path = settings.state_dir / STATE_FILE
    try:
        ledger = await asyncio.to_thread(read_ledger, path, target.name)
    except StateError as exc:
        print(f"ledger: {exc}")
        return True
    if ledger is None:
        print(f"ledger: none on this machine ({path}): checked the manifests only")
        return False
    report = await verify_ledger(target, system_id, ledger, verified)
    for problem in report.problems:
        print(problem)
    checked = f"{report.checked} file(s) checked against upload {report.upload_id}"
    print(f"ledger: {checked}, {report.status}")
    return bool(report.problems)


async def verify_upload(target: Target, system_id: str, upload_id: str) -> VerifyReport:
    """Every file of the upload: present, stored size and SHA-256 match. A damaged object
    is a problem of its file; the others are still checked."""
    report = VerifyReport(upload_id)
    if in_future(upload_id):
        report.problems.append("dated in the future: restore --latest skips it")
    try:
        manifest = await load_manifest(target, system_id, upload_id)
    except RestoreError as exc:
        report.problems.append(str(exc))
        return report
    for entry in entries_of(manifest):
        problem = await _object_problem(target, entry.path, entry.key, entry.stored_size)
        if problem is not None:
            report.problems.append(problem)
            continue
        try:
            await fetch_entry(target, entry, None)
        except IntegrityError as exc:
            report.problems.append(str(exc))
            continue
        report.checked += 1
    return report


async def restore_upload(
    target: Target,
    system_id: str,
    upload_id: str,
    dest: Path,
    *,
    force: bool = False,
    globs: Sequence[str] = (),
) -> int:
    """Write the store as of ``upload_id`` (only the paths ``globs`` match, when given)
    into ``dest``; returns the number of files. Several files are fetched at once
    (``parallel``).

    The manifest's entries are all checked before anything is written; every directory
    and file is then made under a descriptor for ``dest`` without following a symlink."""
    await asyncio.to_thread(_check_dest, dest, force)
    manifest = await load_manifest(target, system_id, upload_id)
    entries = select_entries(entries_of(manifest), globs)
    dest_fd = await asyncio.to_thread(open_dest, dest)

    async def one(entry: FileEntry) -> None:
        sink = await owned_in_thread(lambda: sink_for(dest_fd, entry, force), _drop_sink)
        try:
            await fetch_entry(target, entry, sink)
        finally:
            os.close(sink.dir_fd)

    try:
        await fetch_all(entries, one, lambda e: e.stored_size)
    except DestError as exc:
        raise RestoreError(str(exc)) from None
    finally:
        os.close(dest_fd)
    return len(entries)


def _drop_sink(sink: FileSink) -> None:
    sink.discard()
    os.close(sink.dir_fd)


def sink_for(dest_fd: int, entry: FileEntry, force: bool) -> FileSink:
    """A sink for ``entry`` under the restore destination (no symlink followed)."""
    dir_fd = parent_dir(dest_fd, entry.path, force)
    try:
        return FileSink(dir_fd, entry.path.rsplit("/", 1)[-1], entry.mode)
    except BaseException:
        os.close(dir_fd)
        raise


def _check_dest(dest: Path, force: bool) -> None:
    if dest.exists() and not dest.is_dir():
        raise RestoreError(f"--dest {dest} exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise RestoreError(f"--dest {dest} is not empty (use --force to restore into it)")


def _target_for(args: argparse.Namespace, settings: Settings) -> Target:
    choice = getattr(args, "target", "auto")
    if choice == "auto":
        choice = "cloud" if settings.bucket_configured else "local"
    if choice == "cloud" and not settings.bucket_configured:
        raise RestoreError("no cloud_sync.cloud_bucket is configured")
    return make_target(choice, settings)


async def _with_target(settings: Settings, args: argparse.Namespace) -> tuple[Target, str]:
    target = _target_for(args, settings)
    await target.start(clean_up=False)  # a daemon may be uploading at this moment
    system_id = args.system_id or settings.cloud_sync.system_id
    return target, system_id


async def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    target, system_id = await _with_target(settings, args)
    try:
        uploads = await list_uploads(target, system_id)
        if not uploads:
            raise RestoreError(f"no uploads for system {system_id} in {target.name}")
        if args.all:
            chosen = uploads
        elif args.upload_id:
            chosen = [args.upload_id]
        else:
            newest = latest_upload(uploads)
            future = [u for u in uploads if in_future(u)]
            chosen = ([newest] if newest is not None else []) + future
        failed = False
        for upload_id in chosen:
            report = await verify_upload(target, system_id, upload_id)
            for problem in report.problems:
                print(f"{upload_id}: {problem}")
            print(f"{upload_id}: {report.checked} file(s) verified, {report.status}")
            failed = failed or bool(report.problems)
        if system_id == settings.cloud_sync.system_id:
            failed = await _verify_ledger(target, system_id, settings, chosen) or failed
        return 1 if failed else 0
    finally:
        await target.close()


def dest_path(text: str) -> Path:
    """``--dest`` as a shell would read it: ``~`` and ``~user`` expanded."""
    return Path(os.path.expanduser(text))


async def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    target, system_id = await _with_target(settings, args)
    try:
        if args.latest:
            uploads = await list_uploads(target, system_id)
            latest = latest_upload(uploads)
            if latest is None:
                dated = " not dated in the future" if uploads else ""
                raise RestoreError(f"no uploads{dated} for system {system_id} in {target.name}")
            upload_id = latest
        elif getattr(args, "at", None) is not None:
            uploads = await list_uploads(target, system_id)
            shown = f"system {system_id} in {target.name}"
            load = partial(load_manifest, target, system_id)
            upload_id, _ = await pick_at(uploads, args.at, load, shown)
        else:
            upload_id = args.upload_id
        dest = dest_path(args.dest)
        globs = getattr(args, "path", None) or ()
        count = await restore_upload(
            target, system_id, upload_id, dest, force=args.force, globs=globs
        )
        print(f"restored {count} file(s) of upload {upload_id} into {args.dest}")
        return 0
    finally:
        await target.close()
