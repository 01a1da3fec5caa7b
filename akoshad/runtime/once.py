"""``akoshad run --once``: its drain, stopped by a signal within the drain deadline, and
its outcome (the log lines and the exit code: 0 only when every change landed)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from loguru import logger

from akoshad.config import Settings
from akoshad.names import EXIT_FAIL, EXIT_OK
from akoshad.pipeline.report import PassReport
from akoshad.runtime.deadline import finished_within, settled
from akoshad.store.db import StateDB

Drained = tuple[bool, list[PassReport]]


async def drain_within_deadline(
    drain_until_empty: Coroutine[Any, Any, Drained], stop: asyncio.Event, deadline: float
) -> Drained:
    """Await ``drain_until_empty``; once ``stop`` is set, for at most ``deadline`` seconds
    more (then it is cancelled, and the drain is not ok)."""
    drain = asyncio.ensure_future(drain_until_empty)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({drain, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if drain.done() or await finished_within(drain, deadline):
            return drain.result()
        return False, []
    finally:
        for task in (drain, stopping):
            task.cancel()
            await settled(task)


def nothing_selected(settings: Settings, files_on_disk: int | None) -> str | None:
    """Why the store has no file to back up (its last reconcile selected none), or None."""
    if files_on_disk != 0:
        return None
    include = ", ".join(settings.include) or "everything"
    return (
        f"no file in {settings.data_dir} is selected "
        f"(include: {include}; exclude: {settings.exclude})"
    )


async def once_outcome(
    state: StateDB,
    ok: bool,
    reports: list[PassReport],
    stopped_by: list[str],
    nothing_selected: str | None = None,
) -> int:
    """Log what ``run --once`` did (``stopped_by``: the signal that stopped it, if any);
    its exit code. ``nothing_selected``: the store has no file to back up (why), which
    fails a run that never uploaded anything (an ``include`` typo is not a backup)."""
    if nothing_selected is not None and not reports and await state.last_upload() is None:
        logger.error(
            "run --once: nothing to back up, nothing was ever uploaded: {}", nothing_selected
        )
        return EXIT_FAIL
    skipped = await state.skipped()
    uploads = [r.upload_id for r in reports if r.upload_id and not r.error]
    failed = [r for r in reports if r.error]
    left = await state.queue_depth()
    if uploads:
        logger.info("run --once: uploaded {}", ", ".join(uploads))
    if failed:
        logger.error("run --once: {} change(s) stay queued ({})", left, failed[-1].error)
    elif stopped_by and left:
        logger.error("run --once: stopped by {}: {} change(s) stay queued", stopped_by[0], left)
        return EXIT_FAIL
    elif not uploads:
        logger.info("run --once: nothing changed, no upload")
    return EXIT_OK if ok and not skipped else EXIT_FAIL
