"""Settling the uploads a crash interrupted, without letting a dead target hold the daemon.

At start, an upload on record as in progress is settled (committed when its manifest
landed, its objects deleted otherwise: :class:`~akoshad.pipeline.recovery.Recovery`). That
asks the target. A target that refuses connections or hangs must not keep the daemon from
starting (its control socket, READY, the watch: changes keep being recorded) nor from
stopping when told to. So the start gives it :data:`START_TIMEOUT` seconds and no more than
until a stop; what is not settled then is settled before the next upload, which waits
until it is (a new upload must not race the deletion of an interrupted one's objects: they
may share a pack's key). Only the owner of the system id settles them: on a machine that
another one took the id from, they wait (and its passes, refused by the gate, send nothing)
until it owns the id again: only the owner deletes in the target.
"""

from __future__ import annotations

import asyncio
import sqlite3

from loguru import logger

from akoshad.errors import AkoshadError, TransientError
from akoshad.runtime.wiring import Parts

START_TIMEOUT = 30.0  # seconds the start waits for a crash's uploads to be settled


class InterruptedUploads:
    """The settling of a crash's uploads: tried at start, else before the next pass."""

    def __init__(self, parts: Parts, stop: asyncio.Event, timeout: float = START_TIMEOUT) -> None:
        self.parts = parts
        self.stop = stop
        self.timeout = timeout
        self.unsettled: str | None = None  # why the start could not settle them

    async def at_start(self, claim: asyncio.Task[str | None] | None) -> None:
        """Settle them (after the start's ownership ``claim``: the owner does it) within
        ``timeout`` seconds and not past a stop; else remember why, logged once."""
        state = self.parts.state
        await state.recover_in_flight()  # local: in-flight queue rows go back to pending
        if not await state.in_progress_uploads():
            return
        task = asyncio.create_task(self._settle(claim), name="settle-interrupted")
        stopped = asyncio.create_task(self.stop.wait(), name="settle-stop")
        try:
            await asyncio.wait(
                [task, stopped], timeout=self.timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for t in (task, stopped):
                t.cancel()
            await asyncio.gather(task, stopped, return_exceptions=True)
        if task.cancelled():
            why = "stopping" if self.stop.is_set() else f"no answer within {self.timeout:.0f}s"
        else:
            exc = task.exception()
            if exc is None:
                return
            if not isinstance(exc, AkoshadError | OSError | sqlite3.Error):
                raise exc
            why = str(exc)
        self.unsettled = why
        logger.warning(
            "an interrupted upload is not settled yet ({}): it is settled before the next "
            "upload, which waits until then; changes are recorded meanwhile",
            why,
        )

    async def before_pass(self) -> None:
        """Settle what the start could not (the caller holds the pass lock), as the owner
        only. While another machine owns the id they wait, and so does the pass: its gate
        sends nothing. Raises while the owner cannot be checked or the settle fails: the
        pass fails and is tried again later."""
        if self.unsettled is None:
            return
        p = self.parts
        refused = await p.owners.refusal(p.primary)
        if refused is not None and not p.owners.unreadable(p.primary.name):
            return  # another owner: the pass is refused by its gate, and waits
        if refused is not None:
            raise TransientError(f"an interrupted upload is not settled: {refused}")
        await p.recovery.recover(p.targets)
        self.unsettled = None
        logger.info("recovered: the interrupted upload is settled")

    async def _settle(self, claim: asyncio.Task[str | None] | None) -> None:
        """Settle them as the owner: the start's ``claim`` answered (or the gate asked now)
        that this machine owns the id (only the owner deletes in the target; what it leaves
        is swept by the owner's prune)."""
        p = self.parts
        if claim is not None:
            await asyncio.wait([claim])
        refused = await p.owners.refusal(p.primary)
        if refused is not None:
            raise TransientError(f"this machine does not own the system id: {refused}")
        await p.recovery.recover(p.targets)
