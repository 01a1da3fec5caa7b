"""``akoshad run --once``: its drain, stopped by a signal within the drain deadline, and
its outcome (the log lines and the exit code: 0 only when every change landed)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from loguru import logger

from akoshad.names import EXIT_FAIL, EXIT_OK
from akoshad.pipeline.cloud_memories import KV_UNREADABLE
from akoshad.pipeline.report import PassReport, superseded
from akoshad.runtime.deadline import finished_within, settled
from akoshad.runtime.health import memories_unreadable, upload_kept
from akoshad.runtime.health import nothing_selected as nothing_selected
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


async def once_outcome(
    state: StateDB,
    ok: bool,
    reports: list[PassReport],
    stopped_by: list[str],
    nothing_selected: str | None = None,
    target_down: str | None = None,
    reads_memories: bool = True,
) -> int:
    """Log what ``run --once`` did (``stopped_by``: the signal that stopped it, if any);
    its exit code. ``nothing_selected``: the store has no file to back up (why), which
    fails the run: an ``include`` typo, an empty or unmounted ``data_dir`` is not a backup
    (the last upload, if any, is kept as it is). ``target_down``: the primary target's
    failure, when it did not answer as it should: with nothing sent, that fails the run too
    (refused credentials after an edit must not look like a working backup).
    ``reads_memories``: the configuration reads memories (akosha_url or a bucket), so a
    record that the last copy's could not be read is a failure."""
    if nothing_selected is not None:
        kept = upload_kept(await state.last_upload() is not None)
        logger.error("run --once: nothing to back up, {}: {}", kept, nothing_selected)
        return EXIT_FAIL
    uploads = [r.upload_id for r in reports if r.upload_id and not r.error]
    if uploads:
        logger.info("run --once: uploaded {}", ", ".join(uploads))
    problems = await once_problems(state, ok, reports, stopped_by, reads_memories)
    for problem in problems:  # the last lines say why the exit code is 1
        logger.error("run --once: {}", problem)
    if problems:
        return EXIT_FAIL
    if not uploads and target_down is not None:
        logger.error("run --once: nothing changed, but the target failed: {}", target_down)
        return EXIT_FAIL
    if not uploads:
        logger.info("run --once: nothing changed, no upload")
    return EXIT_OK


async def once_problems(
    state: StateDB,
    ok: bool,
    reports: list[PassReport],
    stopped_by: list[str],
    reads_memories: bool = True,
) -> list[str]:
    """Why ``run --once`` fails, one line each (empty: every change landed). A drain that
    was not ok always has at least one."""
    problems: list[str] = []
    left = await state.queue_depth()
    failed = [r.error for r in superseded(reports) if r.error]
    if failed:
        problems.append(f"{left} change(s) stay queued ({failed[-1]})")
    elif stopped_by and left:
        problems.append(f"stopped by {stopped_by[0]}: {left} change(s) stay queued")
    retrying = {path: why for r in reports for path, why in r.retrying.items()}
    if retrying and not failed:
        problems.append(f"{len(retrying)} file(s) to be sent again ({_first(retrying)})")
    memory = [r.memory_error for r in reports if r.memory_error]
    if memory:
        problems.append(f"memories were not delivered to Akosha: {memory[-1]}")
    elif reads_memories:  # memories.json not built (no akosha_url), now or at an earlier run
        unreadable = memories_unreadable(await state.get_kv(KV_UNREADABLE))
        if unreadable is not None:
            problems.append(unreadable)
    skipped = await state.skipped()
    if skipped:
        problems.append(f"{len(skipped)} file(s) skipped ({_first(skipped)})")
    if not ok and not problems:
        waiting = {i.path: i.last_error or "not captured yet" for i in await state.queue_items()}
        why = f" ({_first(waiting)})" if waiting else ""
        problems.append(f"not every change landed: {left} change(s) stay queued{why}")
    return problems


def _first(reasons: dict[str, str]) -> str:
    """The first of ``{path: reason}`` and how many more."""
    path, why = min(reasons.items())
    more = f"; and {len(reasons) - 1} more" if len(reasons) > 1 else ""
    return f"{path}: {why}{more}"
