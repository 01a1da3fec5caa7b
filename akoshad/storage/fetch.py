"""Stream one stored file (format 1 or 2) into a sink, checking every byte on the way.

Chunks are read as spans of their packs (streamed where the target can: ``span_stream``,
one read per run of chunks lying together in a pack, cut into chunks as the bytes
arrive), several reads in flight but within ``memory_budget`` stored bytes, then decoded
in steps of chunks (``chunk_decode``: bounded, size and sha256 checked per chunk; a
chunk stored as it is stays a view into its read, uncopied) and written in file order;
the whole file's size and sha256 are checked at the end (a restore,
``check_chunks=False``, hashes only the file, and reads it again chunk by chunk only to
name the damage when it does not match). :func:`fetch_loaded` does the same for a file
of one chunk already read (small files read together). A whole object (format 1) is
streamed and decoded piece by piece, reading no more than its ``stored_size`` and
decoding no more than its ``size``. A damaged or missing part is an
:class:`~akoshad.errors.IntegrityError` naming the file and the chunk; the sink is then
discarded.

Chunks are read with the target's own ``stream_range`` (S3: one ranged GET per run, its
body handed on as it arrives) or else ``read_range`` (the local target's ``pread``: reads
of nearby chunks coalesced by ``packs.plan_reads``, several in flight). For a target
without either, :class:`WholeObjectRanges` is the fallback: it reads a pack whole
(bounded) and serves ranges from it, one pack kept at a time; share one per restore.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast, runtime_checkable

from akoshad.errors import IntegrityError
from akoshad.storage.chunk_decode import (
    Decode,
    Piece,
    Stored,
    chunk_decoder,
    joined,
    parts,
    plain_decoder,
)
from akoshad.storage.crypto import Identities
from akoshad.storage.errors import PackError, StorageError
from akoshad.storage.fetch_whole import fetch_whole
from akoshad.storage.packs import PACK_MAX, Location, RangeRead, plan_reads
from akoshad.storage.refs import ChunkRef
from akoshad.storage.span_stream import RangeStreamer, RunFailed, stream_runs
from akoshad.storage.stored import StoredFile
from akoshad.targets.base import Target
from akoshad.threads import to_the_end

MiB = 1024 * 1024
MEMORY_BUDGET = 64 * MiB
MAX_IN_FLIGHT = 4  # reads of one file in flight (within its memory budget)
BATCH_BYTES = 4 * MiB  # stored bytes one read batch gathers


@runtime_checkable
class RangeReader(Protocol):
    """Ranged reads of stored objects (S3 ``Range:``, a file's ``pread``)."""

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` of ``key``; ``KeyError`` when it is missing,
        :class:`PackError` when it is shorter."""


@runtime_checkable
class Sink(Protocol):
    """Where a file's bytes go (``destdir.FileSink``); blocking, called from a thread."""

    def write(self, data: Piece) -> None: ...

    def commit(self, size: int, shown: str) -> None: ...

    def discard(self) -> None: ...


SinkLike = Sink | Callable[[bytes], Any] | None


class WholeObjectRanges:
    """A :class:`RangeReader` over a target that only reads whole objects: an object is
    read once (refused past ``max_object`` bytes) and kept until another one is asked for,
    so at most one object is held."""

    def __init__(self, target: Target, max_object: int = PACK_MAX) -> None:
        self.target = target
        self.max_object = max_object
        self.loads = 0
        self._lock = asyncio.Lock()
        self._key: str | None = None
        self._data = b""

    async def _load(self, key: str) -> bytes:
        parts: list[bytes] = []
        total = 0
        async for piece in self.target.read(key):
            total += len(piece)
            if total > self.max_object:
                raise PackError(f"object {key} is over the {self.max_object} byte limit")
            parts.append(piece)
        self.loads += 1
        return b"".join(parts)

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        async with self._lock:
            if self._key != key:
                self._key, self._data = None, b""  # release before loading the next
                self._data = await self._load(key)
                self._key = key
            data = self._data
        if offset < 0 or length < 0 or offset + length > len(data):
            raise PackError(
                f"object {key} has {len(data)} bytes, a chunk needs {offset}..{offset + length}"
            )
        return data[offset : offset + length]


def _chunk_error(f: StoredFile, i: int, why: str) -> IntegrityError:
    ref = f.chunks[i]
    return IntegrityError(
        f"{f.path}: chunk {i + 1} of {len(f.chunks)} (sha256 {ref.sha256[:12]}, "
        f"{ref.key} at {ref.offset}) {why}",
        object_key=ref.key,
    )


def read_failure(f: StoredFile, i: int, exc: KeyError | PackError) -> IntegrityError:
    """The problem of chunk ``i`` of ``f`` whose read failed with ``exc``."""
    if isinstance(exc, KeyError):
        return _chunk_error(f, i, "is missing: its object does not exist")
    return _chunk_error(f, i, f"is damaged: {exc}")


def _batches(chunks: tuple[ChunkRef, ...], limit: int) -> list[range]:
    """Consecutive chunks grouped so that each group's stored bytes stay within ``limit``
    (a bigger chunk makes a group of its own). Decoded bytes are not held together: a
    batch is decoded and written one chunk at a time."""
    out: list[range] = []
    start = stored = 0
    for i, ref in enumerate(chunks):
        if i > start and stored + ref.length > limit:
            out.append(range(start, i))
            start, stored = i, 0
        stored += ref.length
    if start < len(chunks):
        out.append(range(start, len(chunks)))
    return out


async def _read_batch(
    ranges: RangeReader, f: StoredFile, batch: range, reads: list[RangeRead]
) -> list[Piece]:
    """The stored bytes of the batch's chunks, in order (views into what was read: no
    chunk is copied)."""
    chunks = f.chunks
    locs = [Location(chunks[i].key, chunks[i].offset, chunks[i].length) for i in batch]
    bodies: list[Piece] = [b""] * len(locs)
    for rr in reads:
        first = batch[rr.items[0]]
        try:
            data = await ranges.read_range(rr.key, rr.start, rr.length)
        except (KeyError, PackError) as exc:
            raise read_failure(f, first, exc) from None
        if len(data) != rr.length:
            raise _chunk_error(f, first, "is damaged: its object is too short")
        view = memoryview(data)
        for j in rr.items:
            rel = locs[j].offset - rr.start
            bodies[j] = view[rel : rel + locs[j].length]
    return bodies


def _decode_batch(
    f: StoredFile,
    batch: range,
    bodies: Sequence[Stored],
    digest: Any,
    write: Callable[[Piece], Any],
    decode: Decode = plain_decoder,
) -> int:
    """Decode and check each chunk of the batch, hash and write it (piece by piece, when
    it came in several); decoded bytes."""
    n = 0
    chunks = f.chunks
    for i, body in zip(batch, bodies, strict=True):
        try:
            data = decode(body, chunks[i])
        except StorageError as exc:
            raise _chunk_error(f, i, f"is damaged: {exc}") from None
        for part in parts(data):
            digest.update(part)
            write(part)
            n += len(part)
    return n


async def _stream_chunks(
    ranges: RangeStreamer,
    f: StoredFile,
    digest: Any,
    write: Callable[[Piece], Any],
    max_in_flight: int,
    memory_budget: int,
    decode: Decode,
) -> int:
    """Stream the file's pack spans (``span_stream``), decode and write each step of
    chunks in a thread, in order."""
    size = 0

    async def handle(first: int, bodies: list[Stored]) -> None:
        nonlocal size
        batch = range(first, first + len(bodies))
        size += await asyncio.to_thread(_decode_batch, f, batch, bodies, digest, write, decode)

    try:
        await stream_runs(ranges, f.chunks, handle, memory_budget, max_in_flight)
    except RunFailed as exc:
        raise read_failure(f, exc.index, exc.cause) from None
    return size


async def _fetch_chunks(
    ranges: RangeReader,
    f: StoredFile,
    digest: Any,
    write: Callable[[Piece], Any],
    max_in_flight: int,
    memory_budget: int,
    decode: Decode = plain_decoder,
) -> int:
    """Read batches ahead (bounded by count and bytes), decode and write them in order;
    streamed instead when ``ranges`` can (``_stream_chunks``)."""
    if isinstance(ranges, RangeStreamer):
        return await _stream_chunks(ranges, f, digest, write, max_in_flight, memory_budget, decode)
    limit = max(1, min(BATCH_BYTES, memory_budget // max(1, max_in_flight)))
    chunks = f.chunks
    batches = _batches(chunks, limit)
    plans: list[list[RangeRead]] = []
    for batch in batches:
        locs = [Location(chunks[i].key, chunks[i].offset, chunks[i].length) for i in batch]
        plans.append(plan_reads(locs, max_gap=min(MiB, limit // 4), max_span=limit))
    cost = [sum(r.length for r in plan) for plan in plans]
    pending: deque[tuple[int, asyncio.Task[list[Piece]]]] = deque()
    held = size = nxt = 0
    try:
        while nxt < len(batches) or pending:
            while (
                nxt < len(batches)
                and len(pending) < max_in_flight
                and (not pending or held + cost[nxt] <= memory_budget)
            ):
                task = asyncio.create_task(_read_batch(ranges, f, batches[nxt], plans[nxt]))
                pending.append((nxt, task))
                held += cost[nxt]
                nxt += 1
            b, task = pending.popleft()
            bodies = await task
            size += await asyncio.to_thread(
                _decode_batch, f, batches[b], bodies, digest, write, decode
            )
            held -= cost[b]
    finally:
        for _, task in pending:
            task.cancel()
        await asyncio.gather(*(t for _, t in pending), return_exceptions=True)
    return size


def _as_sink(sink: SinkLike) -> Sink | None:
    """``sink`` when it is a :class:`Sink` (told by its methods: a protocol ``isinstance``
    costs tens of microseconds, per small file)."""
    if sink is None or not (hasattr(sink, "commit") and hasattr(sink, "discard")):
        return None
    return cast(Sink, sink)


def _writer(sink: SinkLike) -> Callable[[Piece], Any]:
    if sink is None:
        return lambda data: None
    real = _as_sink(sink)
    if real is not None:
        return real.write
    plain = cast(Callable[[bytes], Any], sink)  # ``list.append``: a view is copied for it
    return lambda data: plain(data if isinstance(data, bytes) else bytes(data))


async def fetch_file(
    target: Target,
    f: StoredFile,
    sink: SinkLike = None,
    *,
    ranges: RangeReader | None = None,
    max_in_flight: int | None = None,
    memory_budget: int = MEMORY_BUDGET,
    identities: Identities | None = None,
    check_chunks: bool = True,
) -> tuple[int, str]:
    """Stream ``f`` into ``sink`` (a ``Sink``, a callable taking bytes, or None to only
    check it); returns ``(size, sha256)``. A ``Sink`` is committed when every byte checked
    out, discarded otherwise. ``ranges`` reads pack ranges: the target itself when it is a
    :class:`RangeReader`, else pass one :class:`WholeObjectRanges` shared by the restore.
    Sealed chunks are opened with ``identities`` (``IdentityError`` without or with the
    wrong ones; a sealed chunk that does not open is damage naming the file and chunk).
    ``check_chunks=False`` hashes only the file (each byte once, as a restore needs); when
    it does not match, the file is read again with every chunk checked, so that the
    error still names the damaged chunk.
    """
    max_in_flight = MAX_IN_FLIGHT if max_in_flight is None else max_in_flight
    if max_in_flight < 1 or memory_budget < 1:
        raise ValueError("max_in_flight and memory_budget must be positive")
    if ranges is None:
        ranges = target if isinstance(target, RangeReader) else WholeObjectRanges(target)
    write = _writer(sink)
    real = _as_sink(sink)
    digest = hashlib.sha256()
    try:
        whole = f.whole
        if whole is not None:
            size = await fetch_whole(target, f, whole, digest, write)
        else:
            decode = chunk_decoder(identities, check=check_chunks)
            size = await _fetch_chunks(
                ranges, f, digest, write, max_in_flight, memory_budget, decode
            )
        sha = digest.hexdigest()
        if size != f.size or sha != f.sha256:
            if whole is None and not check_chunks:  # name the chunk when one is damaged
                await _fetch_chunks(
                    ranges,
                    f,
                    hashlib.sha256(),
                    _writer(None),
                    1,
                    memory_budget,
                    chunk_decoder(identities),
                )
            raise IntegrityError(
                f"{f.path}: content does not match the manifest "
                f"(size {size} vs {f.size}, sha256 {sha[:12]} vs {f.sha256[:12]})"
            )
        if real is not None:
            await asyncio.to_thread(real.commit, size, f.path)
    except BaseException:
        if real is not None:
            await to_the_end(real.discard)  # also when cancelled (again) meanwhile
        raise
    return size, sha


def fetch_loaded(
    f: StoredFile, stored: Piece, sink: SinkLike, decode: Decode = plain_decoder
) -> int:
    """Blocking :func:`fetch_file` of a file of one chunk whose stored bytes are in hand
    (read with others of its pack): decoded, checked (chunk and file), written and the
    ``Sink`` committed, or discarded on any failure. Returns the size."""
    write = _writer(sink)
    real = _as_sink(sink)
    try:
        if f.whole is not None or len(f.chunks) != 1:
            raise ValueError(f"{f.path}: not a file of one chunk")
        ref = f.chunks[0]
        if len(stored) != ref.length:
            raise _chunk_error(f, 0, "is damaged: its object is too short")
        try:
            data = joined(decode(stored, ref))
        except StorageError as exc:
            raise _chunk_error(f, 0, f"is damaged: {exc}") from None
        # the chunk's own check covers the file when they are the same bytes
        same = ref.size == f.size and ref.sha256 == f.sha256
        sha = f.sha256 if same else hashlib.sha256(data).hexdigest()
        if len(data) != f.size or sha != f.sha256:
            raise IntegrityError(
                f"{f.path}: content does not match the manifest "
                f"(size {len(data)} vs {f.size}, sha256 {sha[:12]} vs {f.sha256[:12]})"
            )
        write(data)
        if real is not None:
            real.commit(len(data), f.path)
    except BaseException:
        if real is not None:
            real.discard()
        raise
    return len(data)
