"""When the daemon's next prune is due after one that failed (``PruneScheduler.due_in``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from akoshad.config import load_settings
from akoshad.runtime.periodic import TICK
from akoshad.runtime.prune_report import KV_LAST, record
from akoshad.runtime.prune_scheduler import RETRY_SECONDS
from akoshad.store.db import StateDB
from tests.sched_rig import prune_scheduler

HOURS = 24.0


async def _due_after(
    tmp_path: Path, last: dict[str, Any], retention: dict[str, Any] | None = None
) -> float:
    settings = load_settings(
        None,
        overrides={
            "data_dir": str(tmp_path / "store"),
            "state_dir": str(tmp_path / "state"),
            "local_target_dir": str(tmp_path / "outbox"),
            "retention": retention or {"prune_interval_hours": HOURS},
            "cloud_sync": {"system_id": "sched"},
        },
        environ={"HOME": str(tmp_path)},
    )
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    try:
        await record(state, last)
        assert await state.get_kv(KV_LAST) is not None
        prunes = prune_scheduler(settings, state, tmp_path / "outbox")
        return await prunes.due_in()
    finally:
        await state.close()


async def test_a_prune_that_could_not_run_is_tried_again_soon(tmp_path: Path) -> None:
    failed = {"at": time.time(), "ok": False, "uploads_kept": None, "problems": ["gone"]}
    assert 0 < await _due_after(tmp_path, failed) <= RETRY_SECONDS


async def test_a_prune_that_ran_and_found_damage_waits_the_interval(tmp_path: Path) -> None:
    """A kept upload damaged (or objects missing): the prune did its work and reports it
    until retention drops that upload. It ran again every 10 minutes, for as long as a
    year with keep_weekly, each time reading every manifest and document of the target;
    it now runs at the interval (``akoshad prune`` by hand still runs at once)."""
    damaged = {"at": time.time(), "ok": False, "uploads_kept": 3, "problems": ["kept ..."]}
    assert await _due_after(tmp_path, damaged) == pytest.approx(HOURS * 3600, abs=5)


@pytest.mark.parametrize(
    "retention", [{"prune_interval_hours": 0}, {"prune_interval_hours": 24, "enabled": False}]
)
async def test_no_prune_is_ever_due_with_prunes_by_hand_or_retention_off(
    tmp_path: Path, retention: dict[str, Any]
) -> None:
    """CONTRACT: ``prune_interval_hours`` 0 = only by hand, ``enabled: false`` keeps
    everything: the daemon only looks again (a reload may change it), however old the last
    prune, failed or not."""
    for ok in (True, False):
        last: dict[str, Any] = {
            "at": time.time() - 86400 * 30,
            "ok": ok,
            "uploads_kept": 1,
            "problems": [],
        }
        assert await _due_after(tmp_path / str(ok), last, retention) == TICK
