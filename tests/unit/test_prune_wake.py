"""A prune that failed (the target down) is tried soon after the target's ``recovered``
(``PruneScheduler.emit``, ``recovery_retry``), once until a prune passes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from akoshad.config import load_settings
from akoshad.pipeline.stats import TargetHealth
from akoshad.runtime import prune_scheduler as prune_module
from akoshad.runtime.drill_mark import ReadMark
from akoshad.runtime.prune_scheduler import PruneScheduler
from akoshad.runtime.recovery_retry import AFTER_RECOVERY_SECONDS, RecoveryRetry
from akoshad.store.db import StateDB
from tests.sched_rig import prune_scheduler

FAILED = {"enabled": True, "ok": False, "uploads_kept": None, "problems": ["connection refused"]}
PASSED = {"enabled": True, "ok": True, "uploads_kept": 3, "problems": []}
DAMAGED = {"enabled": True, "ok": False, "uploads_kept": 3, "problems": ["kept ..."]}


@pytest.fixture
async def prunes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[PruneScheduler, list[dict[str, Any]]]]:
    """A scheduler whose prunes give the outcomes queued in the list (one each)."""
    outcomes: list[dict[str, Any]] = []

    async def prune_target(*_: Any, **__: Any) -> dict[str, Any]:
        return {**outcomes.pop(0), "at": time.time()}

    monkeypatch.setattr(prune_module, "prune_target", prune_target)
    settings = load_settings(
        None,
        overrides={
            "data_dir": str(tmp_path / "store"),
            "state_dir": str(tmp_path / "state"),
            "local_target_dir": str(tmp_path / "outbox"),
            "cloud_sync": {"system_id": "sched"},
            "retention": {"prune_interval_hours": 24},
        },
        environ={"HOME": str(tmp_path)},
    )
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    try:
        yield (
            prune_scheduler(settings, state, tmp_path / "outbox"),
            outcomes,
        )
    finally:
        await state.close()


def _back(prunes: PruneScheduler, target: str = "local") -> None:
    prunes.emit("recovered", {"target": target, "after_seconds": 5.0})


async def test_a_prune_the_target_kept_from_running_is_tried_soon_after_it_is_back(
    prunes: tuple[PruneScheduler, list[dict[str, Any]]],
) -> None:
    """A prune that failed while the target was down (``last_prune.ok`` false, status
    --check UNHEALTHY) stood until the prune's own retry, 10 minutes or more after the
    target was back. Now the target's ``recovered`` has it tried 30 s later, once until a
    prune passes: a flapping target gets the usual retries at its further returns."""
    scheduler, outcomes = prunes
    outcomes.append(FAILED)
    await scheduler.prune_now(scheduled=True)
    assert round(await scheduler.due_in() / 60) == 10
    _back(scheduler, "cloud")  # another target's recovery: nothing
    assert not scheduler.nudge.is_set() and round(await scheduler.due_in() / 60) == 10
    _back(scheduler)
    assert scheduler.nudge.is_set()
    assert round(await scheduler.due_in()) == AFTER_RECOVERY_SECONDS
    # the early try fails (the target went down again), it comes back: no second early try
    outcomes.append(FAILED)
    await scheduler.prune_now(scheduled=True)
    scheduler.nudge.clear()
    _back(scheduler)
    assert not scheduler.nudge.is_set() and round(await scheduler.due_in() / 60) == 20
    # a prune that passes: the next failure gets its early try again
    outcomes.extend([PASSED, FAILED])
    await scheduler.prune_now(scheduled=True)
    await scheduler.prune_now(scheduled=True)
    _back(scheduler)
    assert round(await scheduler.due_in()) == AFTER_RECOVERY_SECONDS


async def test_no_early_prune_after_one_that_ran_or_passed(
    prunes: tuple[PruneScheduler, list[dict[str, Any]]],
) -> None:
    """A prune that ran to its end (a kept upload damaged: tried at the interval) or
    passed is not run again at the target's recovery."""
    scheduler, outcomes = prunes
    for outcome in (DAMAGED, PASSED):
        outcomes.append(outcome)
        await scheduler.prune_now(scheduled=True)
        _back(scheduler)
        assert not scheduler.nudge.is_set()
        assert round(await scheduler.due_in() / 3600) == 24


async def test_the_recovery_wakes_the_prune_loop(
    prunes: tuple[PruneScheduler, list[dict[str, Any]]],
) -> None:
    """The daemon's prune loop (subscribed to the events, woken by the nudge) runs the
    prune that failed shortly after the target's ``recovered``, not at its retry; also one
    that failed before a restart (``last_prune`` on record)."""
    scheduler, outcomes = prunes
    outcomes.append(FAILED)
    await scheduler.prune_now(scheduled=True)
    scheduler.retry = RecoveryRetry(0.2)  # as after a restart: the failure is on record
    outcomes.append(PASSED)
    task = asyncio.create_task(scheduler.run())
    try:
        await asyncio.sleep(0.2)
        assert outcomes == [PASSED]  # not due: the retry is 10 minutes on
        scheduler.events.emit("recovered", target="local", after_seconds=5.0)
        for _ in range(50):
            if not outcomes:
                break
            await asyncio.sleep(0.1)
        assert not outcomes and (await scheduler.last() or {})["ok"] is True
    finally:
        scheduler.stop_event.set()
        await asyncio.wait_for(task, 5)


async def test_a_prune_that_cannot_reach_the_target_marks_it_down(
    prunes: tuple[PruneScheduler, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune that could not reach the target (S3 stopped: 'read systems/ID/owner.json:
    cannot reach ...') left it available (status: idle, 'cloud ok'), though its last
    attempt failed (CONTRACT's degraded), so an idle daemon never saw it back and the
    prune waited for its own retry, 10 minutes on. Now it is marked unavailable as a
    drill marks it, when one cheap read finds it not answering; the drill loop's look
    clears that mark once it answers (``recovered``: the prune's early try). A prune that
    failed with the target answering (a newer manifest format) or that ran marks nothing."""
    scheduler, outcomes = prunes
    health = TargetHealth()
    drills = SimpleNamespace(
        health=health, mark=ReadMark(), nudge=asyncio.Event(), reading=asyncio.Lock()
    )
    scheduler.drills = cast(Any, drills)
    up = [True]

    async def answers(*_: Any) -> bool:
        return up[0]

    monkeypatch.setattr(prune_module, "answers", answers)
    for outcome in (FAILED, DAMAGED, PASSED):  # the target answers, or the prune ran
        outcomes.append(outcome)
        await scheduler.prune_now(scheduled=True)
        assert health.available and not drills.nudge.is_set()
    up[0] = False
    outcomes.append(DAMAGED)  # ran to its end: no look, no mark
    await scheduler.prune_now(scheduled=True)
    assert health.available
    outcomes.append(FAILED)
    await scheduler.prune_now(scheduled=True)
    assert not health.available and health.last_error == "connection refused"
    assert drills.mark.error == "connection refused" and drills.nudge.is_set()
