"""A file sent to S3 while it is being written: a multipart upload whose parts are cut as
the file grows past them, completed once its writer is done.

The writer (a task: ``memories.json`` built by the DuckDB child) appends to the file and
never rewrites what it wrote. Each part but the last is exactly the part size (R2 wants
equal parts), cut as soon as the file holds it; the last one once the writer finished. The
multipart upload is made only when the first part is whole, after ``before_send`` (the owner
gate); a file that ends below one part goes up in one PUT. The upload is aborted (no object
appears) when the writer fails, starts the file over (the event ``restarted`` is set: it
writes the file again from the start), or any request fails.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from akoshad.targets.growing import Restarted, WriterFailed
from akoshad.targets.s3.multipart import put_multipart
from akoshad.targets.s3.parts import MAX_PARTS, Checksum, _FileWindow, _Part, _PartSource

if TYPE_CHECKING:
    from akoshad.targets.s3.target import S3Target

POLL_SECONDS = 0.05  # how often the file's size is looked at while its writer runs


class GrowingSource(_PartSource):
    """Cuts a file into parts as its writer (``writer``) appends to it (see the module).
    :meth:`ready` (async) waits until the next part can be cut; ``next_part`` (blocking,
    in the pool) cuts it."""

    def __init__(
        self,
        path: Path,
        chunk: int,
        checksum: Checksum,
        writer: asyncio.Future[Any],
        restarted: threading.Event,
    ) -> None:
        super().__init__(path, "none", chunk, checksum)
        self.path = path
        self._writer = writer
        self._finished = False  # the writer is done: the file is whole
        self._restarted = restarted  # set (from any thread): the writer started over

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def restarted(self) -> bool:
        """The writer started the file over: parts cut before lost their bytes."""
        return self._restarted.is_set()

    def available(self) -> int:
        """Bytes written but not cut into a part yet."""
        return os.fstat(self._fh.fileno()).st_size - self._offset

    async def ready(self) -> None:
        """Wait until a whole part is written or the writer is done; raises
        :class:`Restarted` or :class:`WriterFailed`."""
        while True:
            if self._restarted.is_set():
                raise Restarted("the file was started over")
            if self._writer.done():
                error = self._writer.exception()
                if error is not None:
                    raise WriterFailed(str(error)) from error
                self._finished = True
                return
            if self.available() >= self._size:
                return
            await asyncio.wait({self._writer}, timeout=POLL_SECONDS)

    def _next_plain(self) -> _Part | None:
        if self._finished:
            return super()._next_plain()
        if self._offset // self._size >= MAX_PARTS - 1:
            raise OSError(f"{self._fh.name} outgrew {MAX_PARTS} parts of {self._size} bytes")
        window = _FileWindow(self._fh.fileno(), self._offset, self._size)
        try:
            checksum = window.checksum(self._checksum, self._sha256)
        except BaseException:
            window.close()
            raise
        self._offset += self._size
        return _Part(window, self._size, checksum)


async def send_growing(
    target: S3Target,
    key: str,
    source: GrowingSource,
    kind: Checksum,
    before_send: Callable[[], Awaitable[None]],
) -> int:
    """Send ``source`` as ``key`` while it grows (see the module); the bytes sent. The
    source is closed in every case."""
    try:
        await source.ready()
        if source.finished and source.available() < source.part_size:
            await before_send()  # the whole file is below one part: one PUT
            await target._prepare(source.close)
            return (await target.put_file(key, source.path, "none")).bytes_sent
        first = await target._next_part(source)
        if first is None:  # pragma: no cover - ready() said a part is there
            raise OSError(f"{key}: the file ended before its first part")
        try:
            await before_send()
        except BaseException:
            first.close()
            raise
        try:
            return await put_multipart(target, key, source, first, kind)
        except Exception as exc:
            # a part on the wire when the file was started over fails (its bytes are
            # gone): the upload, aborted, was lost to the restart, not to that part's error
            if source.restarted and not isinstance(exc, Restarted):
                raise Restarted("the file was started over") from exc
            raise
    finally:
        if not source.closed:
            await target._prepare(source.close)
