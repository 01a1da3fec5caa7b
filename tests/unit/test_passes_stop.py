"""The background drain loop ends at a stop that comes while it waits for the pass lock
(a ``sync --wait``, or the MCP tool's sync, holding it): SIGTERM during such a sync kept the
daemon for the whole ``drain_deadline_seconds`` after the sync's upload was done (60 s in a
real run), then logged 'drain deadline (60.0s) reached: the rest stays queued' for nothing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from akoshad.runtime.passes import Passes


async def _none(*_: Any) -> None:
    return None


async def test_a_stop_while_a_sync_holds_the_pass_lock_ends_the_loop() -> None:
    lock = asyncio.Lock()
    drain = SimpleNamespace(
        pacer=SimpleNamespace(hold=lambda: 0.0, defer=lambda due, now: due), run_pass=_none
    )
    parts = SimpleNamespace(pass_lock=lock, drain=drain, state=SimpleNamespace(next_due=_none))
    stop, wake = asyncio.Event(), asyncio.Event()
    passes = Passes(parts, SimpleNamespace(before_pass=_none), lambda: False, stop, wake)  # type: ignore[arg-type]
    await lock.acquire()  # a sync --wait drains
    loop = asyncio.create_task(passes.run())
    await asyncio.sleep(0.1)  # the loop waits for the lock
    stop.set()  # SIGTERM: Daemon.stop()
    wake.set()
    await asyncio.sleep(0.1)
    lock.release()  # the sync's pass is over: nothing more is due
    try:
        await asyncio.wait_for(loop, 2)
    finally:
        loop.cancel()
