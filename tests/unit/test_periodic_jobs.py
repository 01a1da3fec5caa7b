"""The daemon's periodic jobs (``runtime.periodic``): how soon a job runs again."""

from __future__ import annotations

import asyncio

from akoshad.runtime.periodic import run_periodic


async def test_a_job_due_at_once_is_not_run_back_to_back() -> None:
    """``drill_interval_hours`` or ``retention.prune_interval_hours`` of 1e-9: the job was
    due again the moment it ended, and ran back to back (some 250 prune lines a second,
    80% of a core); it now waits a few seconds after each run."""
    stop = asyncio.Event()
    runs: list[None] = []

    async def due_in() -> float:
        return 0.0

    async def once() -> None:
        runs.append(None)
        await asyncio.sleep(0)  # a run yields, as a real one does

    task = asyncio.create_task(run_periodic("job", stop, due_in, once, lambda: None))
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(runs) == 1
