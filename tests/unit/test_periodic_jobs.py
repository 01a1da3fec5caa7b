"""The daemon's periodic jobs (``runtime.periodic``): how soon a job runs again, and how a
job that keeps failing backs off and logs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from akoshad.config import Settings, load_settings
from akoshad.errors import TransientError
from akoshad.pipeline.stats import Stats
from akoshad.ratelog import ReasonLog
from akoshad.runtime import prune_scheduler as prune_module
from akoshad.runtime.periodic import run_periodic
from akoshad.store.db import StateDB
from akoshad.targets.local import LocalTarget
from tests.sched_rig import ListingDownTarget, drill_scheduler, prune_scheduler


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

    task = asyncio.create_task(run_periodic("job", stop, due_in, once, lambda _name, _exc: None))
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(runs) == 1


def _settings(tmp_path: Path, **extra: Any) -> Settings:
    return load_settings(
        None,
        overrides={
            "data_dir": str(tmp_path / "store"),
            "state_dir": str(tmp_path / "state"),
            "local_target_dir": str(tmp_path / "outbox"),
            "cloud_sync": {"system_id": "sched"},
            **extra,
        },
        environ={"HOME": str(tmp_path)},
    )


def _failed(tries: int) -> dict[str, Any]:
    """A prune stopped by the target down (its problem carries how often the request was
    sent: ``backoff.say_tries``)."""
    problem = f"listing systems/: connection refused (sent {tries} times over {tries * 3} s)"
    return {"enabled": True, "ok": False, "uploads_kept": None, "problems": [problem]}


@contextlib.contextmanager
def _logged() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(f"{m.record['level'].name} {m.record['message']}"))
    try:
        yield lines
    finally:
        logger.remove(sink)


async def test_a_failing_prune_backs_off_and_logs_once_an_hour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A target down for a day (or a manifest of a newer format, which stops every prune
    until the user acts): the daemon's prune was tried every 10 minutes all along, 144
    ERROR lines a day, each try listing the system and reading every kept manifest. Now
    10 minutes, then twice as long after each further failure, at most one interval; the
    same failure is logged at most once an hour, with a count, and a line when it works
    again; last_prune shows each failure at once; a reload or an asked prune starts over."""
    outcomes: list[dict[str, Any]] = []

    async def prune_target(*_: Any, **__: Any) -> dict[str, Any]:
        return {**outcomes.pop(0), "at": time.time()}

    monkeypatch.setattr(prune_module, "prune_target", prune_target)
    settings = _settings(tmp_path, retention={"prune_interval_hours": 24})
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    try:
        prunes = prune_scheduler(settings, state, tmp_path / "outbox")
        now = [0.0]
        prunes.failure_log = ReasonLog(3600, clock=lambda: now[0])
        waits = []
        with _logged() as lines:
            for tries in range(1, 10):
                outcomes.append(_failed(tries))
                await prunes.prune_now(scheduled=True)
                assert (await prunes.last() or {})["ok"] is False  # status: at once
                waits.append(round(await prunes.due_in() / 60))
                now[0] += waits[-1] * 60
            outcomes.append({"enabled": True, "ok": True, "uploads_kept": 3, "problems": []})
            await prunes.prune_now(scheduled=True)
        assert waits == [10, 20, 40, 80, 160, 320, 640, 1280, 1440]
        errors = [line for line in lines if line.startswith("ERROR")]
        # tried at 0, 10, 30, 70, 150, 310 min, ...: logged at 0, 70, 150, 310, ...
        assert len(errors) == 7 and errors[0].endswith("(sent 1 times over 3 s)")
        assert errors[1].endswith("(repeated 2 times)") and "repeated" not in errors[2]
        assert lines[-2:][0] == "INFO prune: works again" and lines[-1].startswith("INFO prune")
        # prunes that ran to their end and found a kept upload damaged (at the interval)
        # do not make the next failure wait longer
        damaged = {"enabled": True, "ok": False, "uploads_kept": 3, "problems": ["kept ..."]}
        outcomes.extend([damaged, damaged, _failed(1)])
        for _ in range(3):
            await prunes.prune_now(scheduled=True)
        assert round(await prunes.due_in() / 60) == 10
        for start_over in (lambda: prunes.configure(settings), lambda: None):
            for tries in (1, 2, 3):
                outcomes.append(_failed(tries))
                await prunes.prune_now(scheduled=True)
            assert round(await prunes.due_in() / 60) >= 40
            start_over()
            outcomes.append(_failed(4))
            await prunes.prune_now()  # a reload, or this prune asked by hand
            assert round(await prunes.due_in() / 60) == 10
    finally:
        await state.close()


class _DownTarget(LocalTarget):
    tries = 0

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        self.tries += 1
        raise TransientError(f"connection refused (sent {self.tries} times over 9 s)")
        yield prefix


async def test_a_drill_the_target_keeps_from_running_backs_off(tmp_path: Path) -> None:
    """The drill postponed (the target down) was tried again every 10 minutes, a WARNING
    each time; now later and later (at most one interval), the warning at most hourly."""
    settings = _settings(tmp_path, drill_interval_hours=24)
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    try:
        drills = drill_scheduler(settings, state, _DownTarget(tmp_path / "outbox"))
        waits = []
        with _logged() as lines:
            for _ in range(4):
                await drills._drill_or_postpone()
                waits.append(round((drills._not_before - time.monotonic()) / 60))
        assert waits == [10, 20, 40, 80]
        assert [line.split()[:3] for line in lines] == [["WARNING", "drill", "postponed:"]]
        assert drills.not_run is not None  # status shows it at once
        drills.configure(settings)  # a reload: tried again within 10 minutes
        assert round((drills._not_before - time.monotonic()) / 60) == 10
    finally:
        await state.close()


async def test_drills_turned_off_no_longer_fail_the_check_for_one_that_could_not_run(
    tmp_path: Path,
) -> None:
    """A drill the target kept from running, then drills turned off by a reload: ``not_run``
    ("the last restore drill could not run ... (tried again later)") failed ``status
    --check`` until a restart, though no drill is tried again; a drill by hand with drills
    off says why in its reply and is not kept either."""
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    try:
        drills = drill_scheduler(
            _settings(tmp_path, drill_interval_hours=24), state, _DownTarget(tmp_path / "outbox")
        )
        with _logged():
            await drills._drill_or_postpone()
        assert drills.not_run is not None
        drills.configure(_settings(tmp_path, drill_interval_hours=0))  # SIGHUP, drills off
        assert drills.not_run is None
        with pytest.raises(TransientError):  # `akoshad drill` with drills off
            await drills.drill_once()
        assert drills.not_run is None
    finally:
        await state.close()


async def test_a_drill_the_target_kept_from_running_is_tried_soon_after_it_is_back(
    tmp_path: Path,
) -> None:
    """A drill that could not run (the target down), then the target back (an upload went
    through: ``recovered``): ``drill_not_run`` failed ``status --check`` until the drill's
    own retry, 10 minutes or more later. Now the drill comes 30 s after the target is seen
    back, the loop woken by its ``recovered``; once until a drill runs, so a flapping
    target is not drilled at each of its returns."""
    from akoshad.runtime import drills as drills_module

    settings = _settings(tmp_path, drill_interval_hours=24)
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    stats = Stats()
    target = ListingDownTarget(tmp_path / "outbox")
    try:
        drills = drill_scheduler(settings, state, target)
        drills.health = health = stats.target(target.name)
        with _logged() as lines:
            await drills._drill_or_postpone()  # the target down
            assert drills.not_run is not None and not health.available
            assert round(await drills.due_in()) == 60  # the look at the marked target
            assert round((drills._not_before - time.monotonic()) / 60) == 10  # the retry
            health.ok()  # an upload went through: the target is back
            drills.emit("recovered", {"target": target.name, "after_seconds": 5.0})
            assert drills.nudge.is_set()
            assert round(await drills.due_in()) == drills_module.AFTER_RECOVERY_SECONDS
            target.down = False
            await drills._drill_or_postpone()  # nothing to drill yet, but it ran
            assert drills.not_run is None
            # the target flaps: down at the drill, back, down at the early try, back
            target.down = True
            await drills._drill_or_postpone()
            health.ok()
            assert round(await drills.due_in()) == drills_module.AFTER_RECOVERY_SECONDS
            await drills._drill_or_postpone()
            health.ok()
            assert round(await drills.due_in() / 60) == 20  # the usual retry, no second one
        assert any("answers again: the drill that could not run" in line for line in lines)
    finally:
        await state.close()


async def test_a_nudge_has_a_periodic_job_look_again_at_once() -> None:
    """The drill's loop slept until its next try (at most a minute) whatever happened;
    a ``nudge`` (the target's ``recovered``) has it ask when the job is due at once."""
    stop, nudge = asyncio.Event(), asyncio.Event()
    asked: list[float] = []

    async def due_in() -> float:
        asked.append(time.monotonic())
        return 3600.0

    async def once() -> None:
        raise AssertionError("not due")

    task = asyncio.create_task(run_periodic("job", stop, due_in, once, lambda *_: None, nudge))
    await asyncio.sleep(0.1)
    nudge.set()
    await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(asked) == 2 and not nudge.is_set()


class _CountedFlappingTarget(ListingDownTarget):
    reads = 0

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        self.reads += 1
        async for key in super().list_keys(prefix):
            yield key


@pytest.mark.parametrize("hours", [24.0, 0.0])
async def test_a_target_a_drill_marked_down_is_seen_back_with_nothing_to_upload(
    tmp_path: Path, hours: float
) -> None:
    """A drill (by hand, or the daemon's) that could not read the target marks it
    unavailable; only an upload or the next drill cleared that, so an idle daemon stayed
    degraded after the target was back (real run: `akoshad drill` during a blip, degraded
    until the next drill, an interval later; drills off: until an upload). Now the drill
    loop reads the target once a minute while its mark stands: back, the mark goes, and a
    drill that could not run is tried 30 s later."""
    from akoshad.runtime import drills as drills_module
    from akoshad.runtime.control_client import ControlRequestError
    from akoshad.runtime.drills import drill_request

    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    stats = Stats()
    target = _CountedFlappingTarget(tmp_path / "outbox")
    try:
        drills = drill_scheduler(_settings(tmp_path, drill_interval_hours=hours), state, target)
        drills.health = health = stats.target(target.name)
        with pytest.raises(ControlRequestError):
            await drill_request(drills)  # `akoshad drill` while the target is down
        assert not health.available and target.reads == 1
        await drills.due_in()  # within a minute of the mark: not read again
        assert target.reads == 1
        drills.mark.looked_at -= 61
        await drills.due_in()  # still down: read once, still marked
        assert target.reads == 2 and not health.available
        target.down = False
        await drills.due_in()  # a minute has not passed since that read
        assert target.reads == 2 and not health.available
        drills.mark.looked_at -= 61
        with _logged() as lines:
            wait = await drills.due_in()
        assert target.reads == 3 and health.available and stats.degraded_reason() is None
        assert any("answers again (a drill could not read it)" in line for line in lines)
        if hours:  # the drill that could not run comes soon
            assert round(wait) == drills_module.AFTER_RECOVERY_SECONDS
        drills.mark.looked_at -= 61
        await drills.due_in()
        assert target.reads == 3  # no mark left: not read again
    finally:
        await state.close()


async def test_a_drill_asked_for_that_could_not_run_is_tried_again_in_10_minutes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`akoshad drill` that could not run (state_dir's disk full) left ``drill_not_run``
    ("... (tried again later)") failing ``status --check`` until the next drill due by the
    interval, a day after the last one; README: tried again 10 minutes later, doubling."""
    import json

    from akoshad.restore.drill_dirs import KV_LAST
    from akoshad.runtime.control_client import ControlRequestError
    from akoshad.runtime.drills import drill_request

    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    try:
        drills = drill_scheduler(
            _settings(tmp_path, drill_interval_hours=24), state, LocalTarget(tmp_path / "outbox")
        )
        good = {"at": time.time() - 3600, "ok": True, "upload_id": "U", "problems": []}
        await state.set_kv(KV_LAST, json.dumps(good))
        assert round(await drills.due_in() / 3600) == 23

        async def full() -> None:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(drills, "_drill", full)
        for _ in range(2):  # each request starts the count over
            with pytest.raises(ControlRequestError):
                await drill_request(drills)
            assert drills.not_run is not None
            assert round(await drills.due_in() / 60) == 10
        try:  # that retry could not run either (as run_periodic meets it)
            await drills._drill_or_postpone()
        except OSError as exc:
            with _logged():
                drills.failed("drill", exc)
        assert round(await drills.due_in() / 60) == 20
    finally:
        await state.close()
