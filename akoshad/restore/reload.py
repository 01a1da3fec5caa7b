"""A restore or verify beside a prune: the chunks of the upload it reads may move.

A command-line ``restore`` or ``verify`` loads an upload's documents (manifest, index
parts, chunk lists) first and reads the chunks afterwards. A daemon's prune may repack the
packs meanwhile: the kept chunks are copied into new packs, the documents rewritten to point
at them, then the old packs deleted. A file read from where the documents said then meets a
missing pack though nothing is lost. :class:`Reloader` loads the upload again (once per run,
shared by every file that meets a problem) and gives a file's new locations when they
changed; a file whose locations did not change (or an upload that can no longer be read)
keeps its problem, reported as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from akoshad.errors import RestoreError
from akoshad.storage.stored import StoredFile

Load = Callable[[], Awaitable[Sequence[StoredFile]]]


class Reloader:
    """The files of one upload as its documents list them now, loaded (``load``) on the
    first :meth:`fresh` and kept for the run."""

    def __init__(self, load: Load | None) -> None:
        self._load = load
        self._lock = asyncio.Lock()
        self._files: dict[str, StoredFile] | None = None

    async def _loaded(self) -> dict[str, StoredFile]:
        async with self._lock:
            if self._files is None:
                try:
                    files = await self._load() if self._load is not None else ()
                except RestoreError:  # the upload itself is gone (pruned): the problem stands
                    files = ()
                self._files = {f.path: f for f in files}
            return self._files

    async def fresh(self, f: StoredFile) -> StoredFile | None:
        """``f`` where the upload's documents put it now, when that differs from where it
        was read (a repack moved its chunks); None otherwise (a whole object is never
        repacked)."""
        if f.whole is not None:
            return None
        now = (await self._loaded()).get(f.path)
        return now if now is not None and now != f else None

    async def all_moved(self, files: Sequence[StoredFile]) -> list[StoredFile] | None:
        """Each of ``files`` where it is now (:meth:`fresh`) when every one moved, else
        None (the problem stands)."""
        moved = [m for f in files if (m := await self.fresh(f)) is not None]
        return moved if len(moved) == len(files) else None
