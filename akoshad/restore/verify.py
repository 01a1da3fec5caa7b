"""``akoshad verify``: every file of an upload read back from the target and checked.

Works for both manifest formats (``manifest.read.load_files``): a whole object (format 1)
must be present with its listed stored size; every chunk of a chunked file (format 2) is
read from its pack, decoded and checked (size and SHA-256 per chunk, then the whole
file's), so a missing pack or a flipped byte is a problem that names the file and the
chunk (its index, sha256, pack key and offset). Files are checked several at once within
the restore's memory bound; one bad file does not stop the others. A file whose read meets
a problem is read once more from where the upload's documents, loaded again, put it now
(``reload``: a daemon's prune may have repacked it meanwhile); what is still wrong then is
the problem. The machine's ledger is compared with the manifest of its last upload (the
chunks of an encrypted one by their keyed names, with this machine's name keys), its
objects looked for once more the same way. Encrypted uploads are read with the identity,
which also opens the name keys in the target when the state lost its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from akoshad.config import Settings
from akoshad.errors import IntegrityError, RestoreError
from akoshad.manifest.layout import in_future
from akoshad.manifest.read import load_files
from akoshad.names import printable
from akoshad.restore.groups import Unit, work_units
from akoshad.restore.parallel import run_each, weight_of
from akoshad.restore.reload import Reloader
from akoshad.storage.crypto import Identities, IdentityError
from akoshad.storage.fetch import RangeReader, WholeObjectRanges, fetch_file
from akoshad.storage.format2_read import Unreadable
from akoshad.storage.name_key import NameKey, NameKeyCache, NameKeyError, keys_opened
from akoshad.storage.stored import StoredFile
from akoshad.targets.base import Target

if TYPE_CHECKING:  # the state database is imported by the ledger check only, not by restore
    from akoshad.store.db import LedgerView
    from akoshad.store.records import LedgerEntry


@dataclass
class VerifyReport:
    upload_id: str
    checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "ok" if not self.problems else f"{len(self.problems)} problem(s)"


def range_reader(target: Target) -> RangeReader:
    """How chunks are read: the target's own ranged reads, else whole packs, one at a time."""
    return target if isinstance(target, RangeReader) else WholeObjectRanges(target)


async def _object_problem(target: Target, path: str, key: str, stored_size: int) -> str | None:
    """Why the object ``key`` (holding ``path``) is not as listed, or None."""
    stored = await target.head(key)
    if stored is None:
        return f"{path}: object {key} is missing"
    if stored != stored_size:
        return f"{path}: stored size {stored} differs from manifest {stored_size}"
    return None


async def check_file(
    target: Target, f: StoredFile, ranges: RangeReader, identities: Identities | None = None
) -> str | None:
    """Why ``f`` cannot be restored as listed (naming the file, and the chunk), or None."""
    whole = f.whole
    if whole is not None:
        problem = await _object_problem(target, f.path, whole.key, whole.stored_size)
        if problem is not None:
            return problem
    try:
        budget = weight_of(f.stored_size)
        await fetch_file(
            target, f, None, ranges=ranges, memory_budget=budget, identities=identities
        )
    except IntegrityError as exc:
        return str(exc)
    return None


async def _files_now(
    target: Target, system_id: str, upload_id: str, identities: Identities | None
) -> list[StoredFile]:
    """The upload's files as its documents list them now (``Reloader``)."""
    return (await load_files(target, system_id, upload_id, identities, lost=[]))[1]


async def verify_upload(
    target: Target, system_id: str, upload_id: str, identities: Identities | None = None
) -> VerifyReport:
    """Every file of the upload (every chunk of every file): present, decoded, sizes and
    SHA-256 match. A damaged file is a problem of its own (its chunk list lost too); the
    others are still checked."""
    report = VerifyReport(upload_id)
    if in_future(upload_id):
        report.problems.append("dated in the future: restore --latest skips it")
    lost: list[Unreadable] = []
    try:
        _, files = await load_files(target, system_id, upload_id, identities, lost=lost)
    except RestoreError as exc:
        report.problems.append(str(exc))
        return report
    report.problems += [u.reason for u in lost]
    ranges = range_reader(target)
    reloader = Reloader(lambda: _files_now(target, system_id, upload_id, identities))

    async def check_one(f: StoredFile, reader: RangeReader) -> str | None:
        problem = await check_file(target, f, reader, identities)
        if problem is not None and (moved := await reloader.fresh(f)) is not None:
            problem = await check_file(target, moved, ranges, identities)
        return problem

    async def check_unit(unit: Unit) -> list[tuple[int, str | None]]:
        try:
            reader = unit.reader or ranges
            return [(i, await check_one(f, reader)) for i, f in unit.files]
        finally:
            if unit.reader is not None:
                unit.reader.release()

    units = work_units(files, ranges)
    found = await run_each(units, check_unit, lambda u: u.stored_size)
    for _, problem in sorted(p for unit_found in found for p in unit_found):
        if problem is None:
            report.checked += 1
        else:
            report.problems.append(problem)
    return report


def _expected_ids(
    f: StoredFile, listed: list[tuple[str, int]] | None, name_keys: Sequence[NameKey]
) -> list[tuple[str, int]]:
    """The chunk ids a ledger row of ``f`` holds: sha256s, or for sealed chunks their
    keyed names under whichever of ``name_keys`` they were stored with."""
    plain = [(c.sha256, c.size) for c in f.chunks]
    if not any(c.encryption == "age" for c in f.chunks):
        return plain
    for key in name_keys:
        ids = [
            (key.name(c.sha256) if c.encryption == "age" else c.sha256, c.size) for c in f.chunks
        ]
        if ids == listed:
            return ids
    return plain


def _differences(row: LedgerEntry, f: StoredFile, name_keys: Sequence[NameKey] = ()) -> list[str]:
    """The fields of a ledger row that disagree with the manifest's file: size and sha256;
    for a whole object its key, stored size and compression; for a chunked file its chunks
    (sha256 and size of each, in order)."""
    differ = [name for name in ("size", "sha256") if getattr(row, name) != getattr(f, name)]
    whole = f.whole
    if whole is not None:
        differ += [
            name
            for name in ("key", "stored_size", "compression")
            if getattr(row, name) != getattr(whole, name)
        ]
        if row.chunks is not None:
            differ.append("chunks")
        return differ
    try:
        listed = row.chunk_ids
    except ValueError:
        listed = None
    if listed != _expected_ids(f, listed, name_keys):
        differ.append("chunks")
    return differ


def compare_ledger(
    ledger: LedgerView,
    files: Sequence[StoredFile],
    name_keys: Sequence[NameKey] = (),
    unknown: Collection[str] = (),
) -> list[str]:
    """What differs between this machine's ledger and the files of the upload it was last
    committed with (they must describe the same content; a whole object, the same object).
    ``unknown``: paths of that upload whose chunks cannot be read (a lost chunk list): not
    compared."""
    upload_id = ledger.last_upload
    listed = {f.path: f for f in files}
    problems: list[str] = []
    for path in sorted((ledger.entries.keys() | listed.keys()) - set(unknown)):
        row, f = ledger.entries.get(path), listed.get(path)
        if f is None:
            problems.append(f"ledger: {path} is not in the manifest of {upload_id}")
            continue
        if row is None:
            problems.append(f"ledger: {path} of the manifest of {upload_id} is not in it")
            continue
        differ = _differences(row, f, name_keys)
        if differ:
            problems.append(
                f"ledger: {path}: {', '.join(differ)} differ from the manifest of {upload_id}"
            )
    return problems


async def _stored_problems(target: Target, files: Sequence[StoredFile]) -> list[str]:
    """Each file's objects are there and long enough for what the manifest reads of them
    (one HEAD per object)."""
    sizes: dict[str, int | None] = {}
    problems: list[str] = []
    for f in sorted(files, key=lambda f: f.path):
        whole = f.whole
        if whole is not None:
            problem = await _object_problem(target, f.path, whole.key, whole.stored_size)
            if problem is not None:
                problems.append(f"ledger: {problem}")
            continue
        for i, ref in enumerate(f.chunks):
            if ref.key not in sizes:
                sizes[ref.key] = await target.head(ref.key)
            size = sizes[ref.key]
            if size is None or size < ref.offset + ref.length:
                why = "is missing" if size is None else f"has {size} bytes"
                problems.append(
                    f"ledger: {f.path}: chunk {i + 1} of {len(f.chunks)}: object {ref.key} {why}"
                )
                break
    return problems


async def verify_ledger(
    target: Target,
    system_id: str,
    ledger: LedgerView,
    verified: Collection[str] = (),
    identities: Identities | None = None,
    name_keys: Sequence[NameKey] = (),
) -> VerifyReport:
    """The ledger against its last upload's manifest, whose objects must all be there
    (not looked at again when that upload is among ``verified`` and the two agree)."""
    if ledger.last_upload is None:
        report = VerifyReport("ledger")
        if ledger.entries:
            report.problems.append("ledger: it lists files but no completed upload")
        return report
    report = VerifyReport(ledger.last_upload)
    lost: list[Unreadable] = []
    try:
        _, files = await load_files(target, system_id, ledger.last_upload, identities, lost=lost)
    except RestoreError as exc:
        report.problems.append(f"ledger: its last upload is unreadable: {exc}")
        return report
    if ledger.last_upload not in verified:  # else named with that upload's problems
        report.problems += [f"ledger: {u.reason}" for u in lost]
    unknown = [u.file.path for u in lost]
    report.problems.extend(compare_ledger(ledger, files, name_keys, unknown))
    if report.problems or ledger.last_upload not in verified:
        stored = await _stored_problems(target, files)
        if stored:  # a prune may have repacked them since they were loaded: load them again
            try:
                files = await _files_now(target, system_id, ledger.last_upload, identities)
            except RestoreError:
                pass
            else:
                stored = await _stored_problems(target, files)
        report.problems.extend(stored)
    report.checked = len(ledger.entries)
    return report


async def print_ledger_check(
    target: Target,
    system_id: str,
    settings: Settings,
    verified: Collection[str],
    identities: Identities | None = None,
    *,
    damaged: Collection[str] = (),
) -> bool:
    """Print the ledger check; True when it found problems. ``damaged``: uploads of
    ``verified`` whose check found problems (printed already, not told twice): the ledger
    agreeing with such an upload's manifest is not "ok"."""
    from akoshad.store.db import STATE_FILE, StateError, read_ledger
    from akoshad.store.places import another_place, target_identity

    path = settings.state_dir / STATE_FILE
    try:
        ledger = await asyncio.to_thread(read_ledger, path, target.name)
    except StateError as exc:
        print(f"ledger: {exc}")
        return True
    if ledger is None:
        print(f"ledger: none on this machine ({path}): checked the manifests only")
        return False
    if ledger.identity is not None and ledger.identity != target_identity(settings, target.name):
        print(f"ledger: {another_place(target.name)}: checked the manifests only")
        return False
    try:
        cached = await asyncio.to_thread(NameKeyCache(settings.state_dir).load)
    except NameKeyError as exc:
        print(f"ledger: {exc}")
        cached = []
    keys = [k for k in cached if k.system_id == system_id]
    if identities is not None:  # a lost or damaged cache: the target's records, opened
        known = {k.object_key for k in keys}
        opened = await keys_opened(target, system_id, identities)
        keys += [k for k in opened if k.object_key not in known]
    try:
        report = await verify_ledger(target, system_id, ledger, verified, identities, keys)
    except IdentityError as exc:  # its last upload is sealed to keys not given here
        why = str(exc)
        last = f"its last upload {ledger.last_upload}"
        said = f"{last} {why[12:]}" if why.startswith("this upload ") else f"{last}: {why}"
        print(f"ledger: not checked: {said}; checked the manifests only")
        return False
    for problem in report.problems:
        print(printable(problem))
    if ledger.last_upload is None and not report.problems:
        print("ledger: no upload completed on this machine yet: checked the manifests only")
        return False
    checked = f"{report.checked} file(s) checked against upload {report.upload_id}"
    status = report.status
    if not report.problems and report.upload_id in damaged:
        status = "they agree with its manifest; the problems of its objects are listed above"
    print(f"ledger: {checked}, {status}")
    return bool(report.problems)
