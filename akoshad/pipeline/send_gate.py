"""The owner gate of one upload, asked right before the upload's first request that writes.

While the start's claim of the system id settles (``ownership.OwnerGate.until_settling``,
a second on a first claim), a pass may do all that writes nothing to the target: capture,
plan, chunk and compress into packs in its staging directory. :class:`FirstSend` is what an
upload awaits before its first request that writes to the target (a pack, the extras, a
document, the manifest): the gate's answer first, then ``begin`` (the attempt persisted in
the state), once. A refused upload has sent nothing and recorded nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from akoshad.errors import TransientError
from akoshad.pipeline.report import PassReport
from akoshad.store.db import QueueItem, StateDB


class SendGate(Protocol):
    """Whether this machine may write to the pass's target (``OwnerGate`` for one target)."""

    async def refusal(self) -> str | None:
        """None: it may; else the one line why not."""
        ...

    def retry_in(self) -> float:
        """Seconds until refused changes are due again."""
        ...

    def unreadable(self) -> bool:
        """The refusal was a check the target did not answer (a failure, not a wait)."""
        ...


class OwnerRefused(TransientError):
    """The gate refused the upload before it sent anything (its line)."""


class FirstSend:
    """Awaited before each request that writes (see the module): the first call asks
    ``gate`` (None: not asked) and runs ``begin``; later calls return at once, or raise
    :class:`OwnerRefused` again. ``begun``: ``begin`` has run (something may be sent)."""

    def __init__(self, gate: SendGate | None, begin: Callable[[], Awaitable[None]]) -> None:
        self.gate = gate
        self._begin = begin
        self._lock = asyncio.Lock()
        self._refused: str | None = None
        self.begun = False

    async def __call__(self) -> None:
        async with self._lock:
            if self._refused is None and not self.begun and self.gate is not None:
                self._refused = await self.gate.refusal()
            if self._refused is not None:
                raise OwnerRefused(self._refused)
            if not self.begun:
                await self._begin()
                self.begun = True

    async def again(self) -> None:
        """Right before the manifest: the gate asked again (its cached answer, read anew
        once older than its interval), so an upload that outlasted the interval learns of
        a takeover meanwhile and commits nothing (raises :class:`OwnerRefused`)."""
        refused = None if self.gate is None else await self.gate.refusal()
        if refused is not None:
            self._refused = refused
            raise OwnerRefused(refused)


async def hold(
    state: StateDB, gate: SendGate, items: Sequence[QueueItem], refused: str, report: PassReport
) -> None:
    """This machine may not write to the target: the rows wait for the gate's next check
    (a pass that waits, unless the target did not answer the check: a failed one)."""
    await state.release(items, retry_at=time.time() + gate.retry_in(), error=refused)
    report.error, report.waiting = refused, not gate.unreadable()


async def held_back(
    state: StateDB, gate: SendGate | None, items: Sequence[QueueItem], report: PassReport
) -> bool:
    """Ask ``gate`` now (None: nothing to ask): refused, the rows wait (``hold``), True."""
    refused = None if gate is None else await gate.refusal()
    if gate is not None and refused is not None:
        await hold(state, gate, items, refused, report)
    return refused is not None
