"""The chunk lists of a format-2 manifest's entries, read back (``format2_read``).

Each distinct ``chunk_list`` document is fetched once (a split one's parts too, each checked
against the entry before any part is fetched: ``chunk_parts``) and its chunks given to the
entries naming it. Strict (the default, for prune, listing and the writer's checks): a list
that is missing or damaged is a :class:`~akoshad.manifest.layout.ManifestError` for the
whole manifest. Given a ``lost`` list (restore, verify, drills, recovery), such a list
makes its files :class:`Unreadable` instead, one each, and every other file is returned:
one lost list no longer hides the rest of an upload. A target's own errors
(``TransientError``, ...) always pass through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from akoshad.manifest.layout import ManifestError
from akoshad.storage import chunk_parts
from akoshad.storage.errors import RefError
from akoshad.storage.refs import (
    ChunkListPartRef,
    ChunkListRef,
    ChunkRef,
    chunk_list_from_json,
    chunk_list_parts_from_json,
)
from akoshad.storage.sealed_documents import document_encryption
from akoshad.storage.stored import StoredFile, check_stored_file

FETCH_IN_FLIGHT = 8
_T = TypeVar("_T")
# reads one document: (key, compression, encryption, what it is) -> its JSON
ReadDocument = Callable[[str, str, str, str], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Pending:
    """A parsed entry whose chunk list may still have to be fetched. ``place`` (shared by
    the entries of a document) and ``index`` say where it is listed: ``where``, the name
    errors give it, is made when asked (a string of its own for each of 100,000 entries
    took 20 MB)."""

    place: str
    index: int | None
    file: StoredFile
    chunk_list: ChunkListRef | None = None

    @property
    def where(self) -> str:
        at = self.place if self.index is None else f"{self.place}[{self.index}]"
        return f"{at} ({self.file.path!r:.200})"


@dataclass(frozen=True)
class Unreadable:
    """A file whose chunk list is missing or damaged: ``file`` is its entry (no chunks),
    ``key`` the list's document, ``reason`` one line naming both."""

    file: StoredFile
    key: str
    reason: str


async def bounded(
    jobs: Sequence[Callable[[], Awaitable[_T]]], limit: int, *, each: bool = False
) -> list[_T | ManifestError]:
    """Run ``jobs`` at most ``limit`` at a time; results in order. The first error is
    raised, unless ``each``: then a job's ``ManifestError`` is its result (other errors
    are still raised)."""
    gate = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[_T]]) -> _T | ManifestError:
        async with gate:
            try:
                return await job()
            except ManifestError as exc:
                if not each:
                    raise
                return exc

    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(run(job)) for job in jobs]
    except BaseExceptionGroup as group:
        raise group.exceptions[0] from None
    return [t.result() for t in tasks]


def _fail(failed: dict[str, str] | None, key: str, exc: Exception) -> None:
    """Strict (``failed`` None): raise ``exc`` as a ManifestError; else note it."""
    if failed is None:
        raise exc if isinstance(exc, ManifestError) else ManifestError(str(exc)) from None
    failed.setdefault(key, str(exc))


async def _split_lists(
    read: ReadDocument,
    split: dict[str, list[ChunkListPartRef]],
    firsts: Mapping[str, Pending],
    root: str,
    failed: dict[str, str] | None,
) -> dict[str, tuple[ChunkRef, ...]]:
    """The chunks of split lists (``chunk_parts``): each checked against the entry naming
    it before any part is fetched, each distinct part fetched once and checked against its
    ref; a problem names the file and the part (strict: raised; else the lists it touches
    go into ``failed``)."""
    named: dict[str, tuple[ChunkListPartRef, str]] = {}
    users: dict[str, list[str]] = {}  # part key -> the lists using it
    for key, parts in list(split.items()):
        f = firsts[key].file
        try:
            chunk_parts.check_split(parts, key, root, f.size, f"{f.path!r:.200}: chunk list {key}")
        except RefError as exc:
            _fail(failed, key, exc)
            del split[key]
            continue
        for part in parts:
            named.setdefault(part.key, (part, f"{f.path!r:.200}: chunk list part"))
            users.setdefault(part.key, []).append(key)
    keys = sorted(named)
    jobs = [
        (lambda p=named[k][0], w=named[k][1]: read(p.key, p.compression, p.encryption, w))
        for k in keys
    ]
    chunks: dict[str, tuple[ChunkRef, ...]] = {}
    docs = await bounded(jobs, FETCH_IN_FLIGHT, each=failed is not None)
    for key, doc in zip(keys, docs, strict=True):
        part, what = named[key]
        try:
            if isinstance(doc, ManifestError):
                raise doc
            got = chunk_list_from_json(doc, f"{what} {key}", part.count)
            chunk_parts.check_part(part, got, f"{what} {key}")
        except (ManifestError, RefError) as exc:
            for top in users[key]:
                _fail(failed, top, exc)
            continue
        chunks[key] = tuple(got)
    return {
        k: tuple(c for p in parts for c in chunks[p.key])
        for k, parts in split.items()
        if failed is None or k not in failed
    }


async def _fetch_lists(
    read: ReadDocument, firsts: Mapping[str, Pending], root: str, failed: dict[str, str] | None
) -> dict[str, tuple[ChunkRef, ...]]:
    """Each distinct list of ``firsts`` (key -> the first entry naming it), its chunks."""
    keys = sorted(firsts)
    jobs = []
    for k in keys:
        ref, what = firsts[k].chunk_list, f"{firsts[k].file.path!r:.200}: chunk list"
        assert ref is not None
        jobs.append(lambda r=ref, w=what: read(r.key, r.compression, document_encryption(r.key), w))
    lists: dict[str, tuple[ChunkRef, ...]] = {}
    split: dict[str, list[ChunkListPartRef]] = {}
    docs = await bounded(jobs, FETCH_IN_FLIGHT, each=failed is not None)
    for key, doc in zip(keys, docs, strict=True):
        what = f"{firsts[key].file.path!r:.200}: chunk list {key}"
        try:
            if isinstance(doc, ManifestError):
                raise doc
            if chunk_parts.is_split(doc):
                split[key] = chunk_list_parts_from_json(doc, what)
            else:
                lists[key] = tuple(chunk_list_from_json(doc, what))
        except (ManifestError, RefError) as exc:
            _fail(failed, key, exc)
    lists.update(await _split_lists(read, split, firsts, root, failed))
    return lists


def _own(reason: str, first: StoredFile, f: StoredFile) -> str:
    """``reason`` (found reading the list for ``first``) naming ``f`` instead."""
    named = f"{first.path!r:.200}"
    return f"{f.path!r:.200}{reason.removeprefix(named)}" if reason.startswith(named) else reason


async def resolve_lists(
    read: ReadDocument,
    pending: list[Pending],
    system_id: str,
    root: str,
    lost: list[Unreadable] | None = None,
) -> list[StoredFile]:
    """The files of ``pending``, each chunk list read (module docstring): the files whose
    list is missing or damaged go into ``lost`` when it is given, else ManifestError."""
    firsts: dict[str, Pending] = {}
    for p in pending:
        if p.chunk_list is not None:
            if not p.chunk_list.key.startswith(root):
                raise ManifestError(f"{p.where}: chunk_list key is not under {root}")
            firsts.setdefault(p.chunk_list.key, p)
    failed: dict[str, str] | None = None if lost is None else {}
    lists = await _fetch_lists(read, firsts, root, failed)
    out: list[StoredFile] = []
    keys_ok: set[str] = set()  # a pack's key is checked once, not for each of its chunks
    for p in pending:
        f = p.file
        if p.chunk_list is not None:
            key = p.chunk_list.key
            if failed is not None and lost is not None and key in failed:
                lost.append(Unreadable(f, key, _own(failed[key], firsts[key].file, f)))
                continue
            f = replace(f, parts=lists[key])
            if lost is not None:
                try:
                    check_stored_file(f, system_id, p.where, keys_ok=keys_ok)
                except ManifestError as exc:  # the list does not fit its entry: damaged
                    lost.append(Unreadable(p.file, key, f"{exc} (chunk list {key})"))
                else:
                    out.append(f)
                continue
        check_stored_file(f, system_id, p.where, keys_ok=keys_ok)
        out.append(f)
    return out
