"""``akoshad restore`` and ``akoshad verify``: read uploads back from a target and check them.

Both work from the target alone (a new machine with an empty state can restore): the
newest upload is the greatest ``upload_id`` with a manifest under ``systems/{system_id}/``.
Every file is decoded and its SHA-256 checked against the manifest.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from akoshad.compress import Decoder
from akoshad.config import Settings
from akoshad.errors import AkoshadError, IntegrityError
from akoshad.fileio import CHUNK, write_sparse
from akoshad.layout import (
    FileEntry,
    entries_of,
    manifest_key,
    system_prefix,
    upload_ids_from_keys,
    validate_manifest,
)
from akoshad.state import STATE_FILE, LedgerView, StateError, read_ledger
from akoshad.targets import Target, make_target


class RestoreError(AkoshadError):
    """A restore or verify cannot proceed (no upload, bad destination, ...)."""


async def list_uploads(target: Target, system_id: str) -> list[str]:
    """Completed upload ids (those with a manifest), oldest first."""
    keys = [k async for k in target.list_keys(system_prefix(system_id))]
    return upload_ids_from_keys(keys, system_id)


async def load_manifest(target: Target, system_id: str, upload_id: str) -> dict[str, Any]:
    key = manifest_key(system_id, upload_id)
    try:
        data = b"".join([c async for c in target.read(key)])
    except KeyError:
        raise RestoreError(f"upload {upload_id} has no manifest in {target.name}") from None
    try:
        manifest = json.loads(data)
    except ValueError:
        raise RestoreError(f"manifest of upload {upload_id} is not valid JSON") from None
    problems = validate_manifest(manifest, now=None)
    problems = [p for p in problems if "uploaded_at is out of range" not in p]
    if problems:
        raise RestoreError(f"manifest of upload {upload_id} is invalid: {problems[0]}")
    return dict(manifest)


def safe_relative(path: str) -> PurePosixPath:
    """Refuse absolute paths and ``..``: a manifest can never write outside ``--dest``."""
    p = PurePosixPath(path)
    if p.is_absolute() or not p.parts or any(part in ("..", "") for part in p.parts):
        raise RestoreError(f"manifest names an unsafe path {path!r}")
    return p


async def fetch_entry(target: Target, entry: FileEntry, dest: Path | None) -> tuple[int, str]:
    """Stream one object, decode it, hash it (and write it to ``dest``); (size, sha256)."""
    decoder = Decoder(entry.compression)
    digest = hashlib.sha256()
    size = 0
    stored = 0
    fh = None
    tmp = None
    if dest is not None:
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        tmp = dest.with_name(f".akoshad-restore-{uuid.uuid4().hex[:12]}")
        fh = await asyncio.to_thread(tmp.open, "wb")
    try:
        try:
            async for chunk in target.read(entry.key):
                stored += len(chunk)
                size += await asyncio.to_thread(_consume, decoder, chunk, digest, fh)
            tail = decoder.finish()
        except KeyError:
            raise IntegrityError(f"{entry.path}: object {entry.key} is missing") from None
        except ValueError as exc:  # zlib errors and truncated streams
            raise IntegrityError(f"{entry.path}: stored object cannot be decoded: {exc}") from None
        digest.update(tail)
        size += len(tail)
        if fh is not None:
            await asyncio.to_thread(_write_plain, fh, tail)
            await asyncio.to_thread(fh.truncate, size)
            await asyncio.to_thread(fh.flush)
            await asyncio.to_thread(os.fsync, fh.fileno())
    except BaseException:
        if fh is not None:
            fh.close()
            assert tmp is not None
            tmp.unlink(missing_ok=True)
        raise
    sha = digest.hexdigest()
    if size != entry.size or sha != entry.sha256:
        if fh is not None:
            fh.close()
            assert tmp is not None
            tmp.unlink(missing_ok=True)
        raise IntegrityError(
            f"{entry.path}: content does not match the manifest "
            f"(size {size} vs {entry.size}, sha256 {sha[:12]} vs {entry.sha256[:12]})"
        )
    if fh is not None:
        fh.close()
        assert tmp is not None and dest is not None
        os.replace(tmp, dest)
    return size, sha


def _consume(decoder: Decoder, chunk: bytes, digest: Any, fh: BinaryIO | None) -> int:
    """Decode one stored chunk in bounded pieces: hash them and write them (sparse)."""
    n = 0
    for plain in decoder.feed_iter(chunk, CHUNK):
        digest.update(plain)
        n += len(plain)
        if fh is not None:
            _write_plain(fh, plain)
    return n


def _write_plain(fh: BinaryIO, data: bytes) -> None:
    """Write decoded bytes, leaving whole chunks of zeros as holes."""
    if len(data) <= CHUNK:
        write_sparse(fh, data)
        return
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        write_sparse(fh, bytes(view[start : start + CHUNK]))


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
    """Every file of the upload: present, stored size and SHA-256 match."""
    report = VerifyReport(upload_id)
    manifest = await load_manifest(target, system_id, upload_id)
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
    target: Target, system_id: str, upload_id: str, dest: Path, *, force: bool = False
) -> int:
    """Write the store as of ``upload_id`` into ``dest``; returns the number of files."""
    await asyncio.to_thread(_check_dest, dest, force)
    manifest = await load_manifest(target, system_id, upload_id)
    entries = entries_of(manifest)
    plan = [(entry, dest.joinpath(*safe_relative(entry.path).parts)) for entry in entries]
    await asyncio.to_thread(dest.mkdir, parents=True, exist_ok=True)
    for entry, path in plan:
        await fetch_entry(target, entry, path)
    return len(plan)


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
            chosen = [uploads[-1]]
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


async def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    target, system_id = await _with_target(settings, args)
    try:
        if args.latest:
            uploads = await list_uploads(target, system_id)
            if not uploads:
                raise RestoreError(f"no uploads for system {system_id} in {target.name}")
            upload_id = uploads[-1]
        else:
            upload_id = args.upload_id
        dest = Path(args.dest)
        if args.dest.startswith("~"):
            dest = Path.home() / args.dest[2:]
        count = await restore_upload(target, system_id, upload_id, dest, force=args.force)
        print(f"restored {count} file(s) of upload {upload_id} into {args.dest}")
        return 0
    finally:
        await target.close()
