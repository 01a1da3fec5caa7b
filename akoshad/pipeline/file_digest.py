"""A file's whole sha256, taken beside its chunking.

The chunking thread hashes every chunk (its id) and the whole file (the manifest's sha256):
two passes of sha256 over each byte, most of that thread's time on a large file. hashlib
lets the GIL go while it hashes a large buffer, so :class:`FileDigest` hands a large file's
chunks to a thread of its own, which hashes them in order while the chunking thread cuts
and hashes the next ones (``bench/first_sync_bench.py --cases big``). A file of one chunk is
not hashed twice at all: its chunk's sha256 is the file's. Small files are hashed inline (a
thread hop would cost more than the hash).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from types import TracebackType

# files this large (bytes) are hashed in a thread of their own
PARALLEL_MIN = 8 * 1024 * 1024
QUEUE_DEPTH = 8  # chunks waiting for the digest thread (each at most the chunker's maximum)


class FileDigest:
    """The sha256 of a file's chunks, fed in order with :meth:`update` (``chunk_sha``: the
    chunk's own sha256, which is the file's when it is the only chunk). Use it as a
    context manager: the digest thread, if any, always ends with the block."""

    def __init__(self, size: int, parallel_min: int | None = None) -> None:
        threshold = PARALLEL_MIN if parallel_min is None else parallel_min
        self._hash = hashlib.sha256()
        self._first: tuple[bytes, str] | None = None  # the first chunk, not yet hashed
        self._count = 0
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        if size >= threshold:
            self._queue = queue.Queue(QUEUE_DEPTH)
            self._thread = threading.Thread(target=self._run, name="akoshad-digest", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        assert self._queue is not None
        while (data := self._queue.get()) is not None:
            self._hash.update(data)

    def _feed(self, data: bytes) -> None:
        if self._queue is not None:
            self._queue.put(data)
        else:
            self._hash.update(data)

    def update(self, data: bytes, chunk_sha: str) -> None:
        """The next chunk of the file."""
        self._count += 1
        if self._count == 1:
            self._first = (data, chunk_sha)
            return
        if self._first is not None:
            self._feed(self._first[0])
            self._first = None
        self._feed(data)

    def hexdigest(self) -> str:
        """The file's sha256 (lowercase hex); the digest thread has ended."""
        if self._count == 1 and self._first is not None:
            return self._first[1]
        self._stop()
        return self._hash.hexdigest()

    def _stop(self) -> None:
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    def __enter__(self) -> FileDigest:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
