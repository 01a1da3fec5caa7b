"""Sending files as chunks in packs (bucket format 2).

Each file to send is streamed through the chunker in a worker thread and hashed whole on
the way (a large file beside the chunking: ``file_digest``); a chunk the target already
holds (the chunk table, with deduplication on) or that
this upload already packed is referenced, any other is compressed (zstd, or stored as-is;
a file whose chunks stop compressing is not offered to zstd for a while:
``codec.CompressionProbe``) and appended to a pack file in a private staging directory.
Sealed packs (16 MiB) go to the target, each in one request, up to three at once while the
next one fills: the worker thread waits when a pack is already waiting, so at most six pack
files exist at once (one filling, two handed over, three being sent); each is recorded in the
state (the attempt's packs) before its PUT and deleted once it landed. Until the owner gate
has first answered (a first claim of the system id settles for a second), up to twelve
packs wait for it, staged (fifteen files, 240 MiB at most), where three would be sent, so
that the chunking goes on meanwhile. Small files end up
packed together: a first sync of 10,000 small files is a handful of PUTs. With a
:class:`~akoshad.pipeline.sealing.Sealing`, each compressed chunk is sealed before it is
packed and known by its keyed name (``sealing`` module). Chunks of 128 KiB and more are
compressed in two threads of their own, a few chunks ahead of the pack writer, and sealed
in a child process per thread (``seal_worker``: each body's age header is Python calls and
curve arithmetic under the GIL, which in this process would not overlap the next chunks'
hashing and compression); once those are at
work every chunk goes to them in batches of up to 1 MiB (one round trip each); the first
few bodies of a pass are sealed in the chunking thread (a session-sized upload starts no
child).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shutil
import stat
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from akoshad.errors import SourceChanged, TransientError
from akoshad.pipeline.capture.files import captured_chunks, hop_batches
from akoshad.pipeline.capture.snapshot import CapturedFile
from akoshad.pipeline.file_digest import FileDigest
from akoshad.pipeline.report import PassReport
from akoshad.pipeline.seal_worker import SealingWorkers
from akoshad.pipeline.sealing import Sealing
from akoshad.pipeline.send_gate import FirstSend
from akoshad.pipeline.stats import Stats
from akoshad.storage import codec
from akoshad.storage.crypto import seal_chunk
from akoshad.storage.errors import StorageError
from akoshad.storage.packs import PackWriter, SealedPack
from akoshad.storage.refs import ChunkCompression, ChunkRef, Encryption
from akoshad.store.db import StateDB
from akoshad.targets.base import Target

HANDOFF_POLL = 0.5  # seconds a worker waits for room before it looks for a stop again
# pack PUTs at once: one at a time left the chunking waiting on the target for 40% of a
# 1 GiB first upload (bench/first_sync_bench.py --cases big)
PACKS_IN_FLIGHT = 3
# packs that may wait, staged, for the owner gate's first answer (a first claim settles for a
# second: the chunking goes on meanwhile instead of stopping at six staged packs)
PACKS_BEFORE_GATE = 12
SEAL_AHEAD = 8  # chunks handed to the sealing threads ahead of the pack writer
# zstd releases the GIL; age sealing goes to one child per thread (bench/encrypted_upload_bench.py)
SEAL_THREADS = 2
INLINE_MAX = 128 * 1024  # smaller chunks are compressed (and sealed) in the chunking thread
# ... unless sealing children are at work: then every chunk goes to them, in batches (fewer
# round trips: each wakes a sealing thread, which then wants the GIL the chunking holds)
SEAL_BATCH = 64
SEAL_BATCH_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SentFile:
    """A file the upload sent: its capture, whole-file sha256 and chunks (identity, size):
    the identity is the chunk's sha256, or its keyed name when sealed."""

    group: str
    captured: CapturedFile
    sha256: str
    chunk_ids: tuple[tuple[str, int], ...]


class _Stopped(Exception):
    """The send was given up (a pack failed to land, or the pass is being cancelled)."""


def fresh_staging(path: Path) -> Path:
    """``path`` as an empty private (0700) directory: what a crash left there is removed."""
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            path.unlink()
    path.mkdir(parents=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def clear_staging(path: Path) -> None:
    """Remove the staging directory (after a pass)."""
    shutil.rmtree(path, ignore_errors=True)


class PackSender:
    """Sends the files of one upload as chunks in packs; see the module docstring."""

    def __init__(
        self,
        *,
        target: Target,
        state: StateDB,
        upload_id: str,
        system_id: str,
        staging_dir: Path,
        known: Mapping[str, ChunkRef],
        stats: Stats,
        report: PassReport,
        compression: bool = True,
        deduplicate: bool = True,
        sealing: Sealing | None = None,
        before_send: FirstSend | None = None,
    ) -> None:
        self.target = target
        self.before_send = before_send  # awaited before each pack's first byte (send_gate)
        self.sealing = sealing
        self.state = state
        self.upload_id = upload_id
        self.system_id = system_id
        self.staging_dir = staging_dir
        self.stats = stats
        self.report = report
        self.codec: ChunkCompression = "zstd" if compression else "none"
        # chunks referenced instead of sent: those the target holds, and those packed here
        self._have: set[str] = set(known) if deduplicate else set()
        # identity -> (codec, size, plaintext sha256)
        self._stored: dict[str, tuple[ChunkCompression, int, str]] = {}
        self.new_refs: dict[str, ChunkRef] = {}  # chunks this upload stored, by identity
        self._failure: list[BaseException] = []
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[SealedPack | None] = asyncio.Queue(maxsize=1)
        # compression (and sealing) of new chunks, beside the chunking and hashing
        self._sealer = ThreadPoolExecutor(SEAL_THREADS, thread_name_prefix="akoshad-seal")
        # age headers are work under the GIL: a large upload seals in children of its own
        self._workers = (
            None if sealing is None else SealingWorkers(sealing.recipients, SEAL_THREADS)
        )
        # being sealed: (size, sha256, codec tried)
        self._pending: dict[str, tuple[int, str, ChunkCompression]] = {}
        # stops offering a file's chunks to zstd while they do not compress
        self._probe = codec.CompressionProbe(self.codec)
        self._sealing: deque[
            tuple[tuple[str, ...], Future[list[tuple[ChunkCompression, bytes]]]]
        ] = deque()
        # chunks waiting to go to the sealing children together: (identity, data, codec)
        self._batch: list[tuple[str, bytes, ChunkCompression]] = []
        self._batch_bytes = 0

    async def send(self, files: list[tuple[str, CapturedFile]]) -> list[SentFile]:
        """Send every file; raises the first failure (TransientError, PermanentError,
        OSError) once every pack in flight has been awaited."""
        self._loop = asyncio.get_running_loop()
        consumer = asyncio.create_task(self._consume())
        sent: list[SentFile] = []
        try:
            await self._produce(files, sent)
            self._closed = True
            await self._queue.put(None)
            await consumer
        except asyncio.CancelledError:  # the pass is cancelled: so is the pack in flight
            self._closed = True
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)
            raise
        finally:
            await asyncio.to_thread(self._sealer.shutdown, True, cancel_futures=True)
            if self._workers is not None:
                await asyncio.to_thread(self._workers.close)
        if self._failure:
            raise self._failure[0]
        return sent

    async def _produce(self, files: list[tuple[str, CapturedFile]], sent: list[SentFile]) -> None:
        """Chunk every file into packs (worker thread), handing sealed packs over; a
        failure is kept for ``send`` to raise once the packs in flight are awaited."""
        try:
            with PackWriter(self.staging_dir, self.system_id, salt=self.upload_id) as writer:
                for run in hop_batches(files):  # one thread hop per run of files
                    done = await asyncio.to_thread(self._chunk_files, writer, run)
                    for (group, f), (sha, ids) in zip(run, done, strict=True):
                        sent.append(SentFile(group, f, sha, ids))
                        self.report.bytes_uploaded += f.size
                    self.stats.progressed()
                last = await asyncio.to_thread(self._flush, writer)
                if last is not None:
                    await self._queue.put(last)
        except _Stopped:
            pass
        except StorageError as exc:
            self._failure.append(TransientError(f"packing chunks: {exc}"))
        except Exception as exc:  # any failure: the packs in flight are awaited first
            self._failure.append(exc)

    async def _consume(self) -> None:
        """Send the sealed packs, PACKS_IN_FLIGHT at a time (each PUT is owned here and
        awaited; a cancellation cancels them); until the owner gate has first answered, up
        to PACKS_BEFORE_GATE packs wait for it instead; after a failure, only delete what
        is still handed over."""
        slots = asyncio.Semaphore(PACKS_IN_FLIGHT)
        early = asyncio.Semaphore(PACKS_BEFORE_GATE)
        sending: set[asyncio.Task[None]] = set()
        try:
            while (pack := await self._queue.get()) is not None:
                gated = self.before_send is not None and not self.before_send.begun
                await (early if gated else slots).acquire()
                task = asyncio.create_task(self._send_pack(pack, slots, early if gated else None))
                sending.add(task)
                task.add_done_callback(sending.discard)
        except asyncio.CancelledError:
            for task in sending:
                task.cancel()
            raise
        finally:
            await asyncio.gather(*sending, return_exceptions=True)

    async def _send_pack(
        self, pack: SealedPack, slots: asyncio.Semaphore, early: asyncio.Semaphore | None
    ) -> None:
        """One pack's PUT; ``early``: admitted before the gate answered (its place there is
        given back once the pack holds a PUT slot)."""
        held = early is None
        try:
            if early is not None:
                if self.before_send is not None and not self._failure:
                    await self.before_send()
                await slots.acquire()
                held = True
                early.release()
            if not self._failure:
                await self._put_pack(pack)
        except Exception as exc:  # any failure fails the upload (raised by ``send``), and
            self._failure.append(exc)  # is never dropped with the task's result
        finally:
            if held:
                slots.release()
            elif early is not None:
                early.release()
            await asyncio.to_thread(pack.path.unlink, missing_ok=True)

    async def _put_pack(self, pack: SealedPack) -> None:
        if self.before_send is not None:
            await self.before_send()
        await self.state.add_upload_pack(self.upload_id, pack.key)  # before any byte
        sent = await self.target.put_object_file(pack.key, pack.path, pack.size, pack.crc32)
        self.report.bytes_sent += sent
        enc: Encryption = "none" if self.sealing is None else "age"
        for slot in pack.slots:
            comp, size, sha = self._stored[slot.name]
            self.new_refs[slot.name] = ChunkRef(
                sha, size, pack.key, slot.offset, slot.length, comp, enc
            )
        self.stats.progressed()

    # ---- in the worker thread --------------------------------------------------------
    def _handoff(self, pack: SealedPack) -> None:
        """Hand a sealed pack to the loop; waits while one is already waiting."""
        assert self._loop is not None
        fut = asyncio.run_coroutine_threadsafe(self._queue.put(pack), self._loop)
        while True:
            try:
                fut.result(HANDOFF_POLL)
                return
            except concurrent.futures.TimeoutError:
                if self._closed or self._failure:
                    fut.cancel()
                    with contextlib.suppress(OSError):
                        pack.path.unlink()
                    raise _Stopped from None

    def _pack(self, writer: PackWriter, ident: str, data: bytes, size: int, sha: str) -> None:
        """Compress (and seal) a new chunk and add it to the pack. Chunks of INLINE_MAX and
        more are compressed in the sealing threads (the bodies go into the pack at most
        SEAL_AHEAD jobs behind), beside the chunking and hashing of the next ones; with
        sealing children at work, every chunk goes there, in batches (one round trip each)."""
        tried = self._probe.choose()
        workers = self._workers
        if workers is not None and workers.ready:
            self._pending[ident] = (size, sha, tried)
            self._batch.append((ident, data, tried))
            self._batch_bytes += size
            if len(self._batch) >= SEAL_BATCH or self._batch_bytes >= SEAL_BATCH_BYTES:
                self._submit_batch(writer)
            return
        if size < INLINE_MAX or (tried == "none" and self.sealing is None):
            # a thread hop would cost more than the work
            if self.sealing is None:
                comp, body = codec.compress(data, tried)
            else:
                comp, body = seal_chunk(data, self.sealing.recipients, tried)
            self._probe.record(tried, comp)
            self._add(writer, ident, body, (comp, size, sha))
            return
        self._pending[ident] = (size, sha, tried)
        self._submit_batch(writer)  # the bodies reach the pack (and the probe) in order
        self._submit(writer, (ident,), [(data, tried)])

    def _submit_batch(self, writer: PackWriter) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if batch:
            self._submit(writer, tuple(i for i, _, _ in batch), [(d, t) for _, d, t in batch])

    def _submit(
        self,
        writer: PackWriter,
        idents: tuple[str, ...],
        items: list[tuple[bytes, ChunkCompression]],
    ) -> None:
        self._sealing.append((idents, self._sealer.submit(self._encode, items)))
        while len(self._sealing) > SEAL_AHEAD or (self._sealing and self._sealing[0][1].done()):
            self._add_sealed(writer)

    def _encode(
        self, items: list[tuple[bytes, ChunkCompression]]
    ) -> list[tuple[ChunkCompression, bytes]]:
        """In a sealing thread: chunks compressed here, sealed in a child (one round trip)."""
        done = [codec.compress(data, tried) for data, tried in items]
        if self._workers is None:
            return done
        sealed = self._workers.seal_many([body for _, body in done])
        return [(comp, body) for (comp, _), body in zip(done, sealed, strict=True)]

    def _add_sealed(self, writer: PackWriter) -> None:
        idents, job = self._sealing.popleft()
        for ident, (comp, body) in zip(idents, job.result(), strict=True):
            size, sha, tried = self._pending.pop(ident)
            self._probe.record(tried, comp)
            self._add(writer, ident, body, (comp, size, sha))

    def _add(
        self, writer: PackWriter, ident: str, body: bytes, stored: tuple[ChunkCompression, int, str]
    ) -> None:
        self._stored[ident] = stored
        for sealed in writer.add(ident, body):
            self._handoff(sealed)

    def _flush(self, writer: PackWriter) -> SealedPack | None:
        """Every body still being sealed into the pack, then the last pack sealed."""
        self._submit_batch(writer)
        while self._sealing:
            self._add_sealed(writer)
        return writer.flush()

    def _chunk_files(
        self, writer: PackWriter, run: list[tuple[str, CapturedFile]]
    ) -> list[tuple[str, tuple[tuple[str, int], ...]]]:
        return [self._chunk_file(writer, f) for _, f in run]

    def _chunk_file(
        self, writer: PackWriter, f: CapturedFile
    ) -> tuple[str, tuple[tuple[str, int], ...]]:
        """Chunk, hash, compress and pack one file; its sha256 and chunk ids."""
        self._probe = codec.CompressionProbe(self.codec)
        ids: list[tuple[str, int]] = []
        sealing = self.sealing
        with FileDigest(f.size) as whole:
            for chunk in captured_chunks(f):
                if self._closed or self._failure:
                    raise _Stopped
                whole.update(chunk.data, chunk.sha256)
                ident = chunk.sha256 if sealing is None else sealing.chunk_id(chunk.sha256)
                ids.append((ident, chunk.length))
                if ident in self._have:
                    continue
                self._have.add(ident)
                self._pack(writer, ident, chunk.data, chunk.length, chunk.sha256)
            sha = whole.hexdigest()
        if f.in_place and not f.still_as_captured():
            raise SourceChanged(f"{f.path} changed while it was being uploaded", in_place=f.path)
        if (f.sha256 is not None and sha != f.sha256) or sum(n for _, n in ids) != f.size:
            raise SourceChanged(f"{f.path} changed between its capture and its upload")
        return sha, tuple(ids)
