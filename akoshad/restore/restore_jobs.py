"""The jobs of a restore (``readback.restore_files``): one file, or the small files of one
pack read together, fetched, checked and handed to the :class:`~.landing.Committer`.

A file that meets a missing or damaged chunk is fetched again from where the upload's
documents, loaded again, put it now (``reload``: a daemon's prune may have repacked it);
still damaged or missing, it is a problem of its own (appended to ``found``, the committer
told so that its DuckDB partner does not land alone) and the restore goes on. When a
group's shared read or one of its files fails, each file of it not landed yet is fetched on
its own: the intact ones land, each damaged one is named. Anything else (the target, the
disk) is raised and stops the restore. Each problem is told (:class:`Found`) as it is
found, not once the restore ends.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from akoshad.errors import IntegrityError
from akoshad.restore.groups import SpanReader, Unit
from akoshad.restore.landing import Committer, LandingSink
from akoshad.restore.parallel import weight_of
from akoshad.restore.reload import Reloader
from akoshad.storage.chunk_decode import Decode
from akoshad.storage.crypto import Identities
from akoshad.storage.errors import PackError
from akoshad.storage.fetch import RangeReader, fetch_file, fetch_loaded, read_failure
from akoshad.storage.stored import StoredFile
from akoshad.targets import Target
from akoshad.threads import owned_in_thread, to_the_end


class Found:
    """The files a restore could not restore (``lines``, each naming one with why); each
    line is also handed to ``say`` as it is found (any thread)."""

    def __init__(self, lines: list[str], say: Callable[[str], None] | None = None) -> None:
        self.lines = lines
        self._say = say
        self._lock = threading.Lock()

    def add(self, line: str) -> None:
        """One more file that could not be restored."""
        with self._lock:
            self.lines.append(line)
            if self._say is not None:
                self._say(line)

    def held(self, path: str, partner: str) -> None:
        """``path`` is not landed because its DuckDB partner could not be."""
        self.add(
            f"{path}: not restored: {partner} could not be (a DuckDB database and its WAL "
            "are restored together or neither)"
        )


class RestoreJobs:
    """What fetches the units of one restore (module docstring)."""

    def __init__(
        self,
        target: Target,
        ranges: RangeReader,
        committer: Committer,
        reloader: Reloader,
        decode: Decode,
        identities: Identities | None,
        found: Found,
    ) -> None:
        self.target = target
        self.ranges = ranges
        self.committer = committer
        self.reloader = reloader
        self.decode = decode
        self.identities = identities
        self.found = found

    async def unit(self, unit: Unit) -> None:
        """Fetch every file of ``unit``."""
        if unit.reader is not None:
            return await self._group(unit, unit.reader)
        for _, f in unit.files:
            await self._one_or_moved(f)

    async def _one(self, f: StoredFile, reader: RangeReader) -> None:
        sink = await owned_in_thread(lambda: self.committer.sink(f), LandingSink.discard)
        await fetch_file(
            self.target,
            f,
            sink,
            ranges=reader,
            memory_budget=weight_of(f.stored_size),
            identities=self.identities,
            check_chunks=False,  # each byte hashed once: the file's sha256
        )

    async def _one_or_moved(self, f: StoredFile) -> None:
        try:
            await self._one(f, self.ranges)
        except IntegrityError as exc:
            moved = await self.reloader.fresh(f)
            if moved is None:
                return await self._fails(f, exc)
            try:
                await self._one(moved, self.ranges)
            except IntegrityError as again:
                await self._fails(f, again)

    async def _fails(self, f: StoredFile, exc: IntegrityError) -> None:
        self.found.add(str(exc))
        await asyncio.to_thread(self.committer.fail, f.path)

    def _land_group(self, unit: Unit, data: bytes, start: int, landed: list[StoredFile]) -> None:
        for _, f in unit.files:
            ref = f.chunks[0]
            body = data[ref.offset - start : ref.offset - start + ref.length]
            fetch_loaded(f, body, self.committer.sink(f), self.decode)
            landed.append(f)

    async def _group(self, unit: Unit, reader: SpanReader) -> None:
        landed: list[StoredFile] = []
        try:
            data = await _group_bytes(unit, reader)
            await to_the_end(lambda: self._land_group(unit, data, reader.start, landed))
            return
        except IntegrityError:  # each file left is read on its own: its problem, or it lands
            pass
        finally:
            reader.release()
        for _, f in unit.files[len(landed) :]:
            await self._one_or_moved(f)


async def _group_bytes(unit: Unit, reader: SpanReader) -> bytes:
    """The span of a unit of small files; a failed read is named by its first file, as
    ``fetch_file`` does."""
    try:
        return await reader.load()
    except (KeyError, PackError) as exc:
        raise read_failure(unit.files[0][1], 0, exc) from None
