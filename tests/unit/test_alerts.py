"""Webhook alerts for backups that stop with no failed pass and no target down
(``runtime.alerts``): one ``failure`` per problem once it held, one ``recovered`` once it is
gone, none again after a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from akoshad.events import EventBus, EventName
from akoshad.runtime.alerts import HealthAlerts
from akoshad.runtime.health import check_kinds, check_problems
from akoshad.store.db import StateDB

GONE = {"data_dir": "waiting for data_dir /srv/store to appear (or to be readable)"}


class _Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event: EventName, fields: dict[str, Any]) -> None:
        self.events.append((event, fields))


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _nothing() -> dict[str, str]:
    return {}


def _alerts(state: StateDB | None = None) -> tuple[HealthAlerts, _Sink, _Clock]:
    bus, sink, clock = EventBus("box"), _Sink(), _Clock()
    bus.subscribe(sink)
    wall = _Clock()
    wall.now = 1_700_000_000.0

    def wall_now() -> float:
        return wall.now + (clock.now - 1000.0)

    alerts = HealthAlerts(bus, _nothing, state=state, hold=30.0, clock=clock, wall=wall_now)
    return alerts, sink, clock


def _looks(alerts: HealthAlerts, clock: _Clock, problems: dict[str, str], seconds: int) -> None:
    for _ in range(0, seconds, 5):
        alerts.update(problems)
        clock.now += 5


def test_a_problem_is_announced_once_after_it_held_then_its_end() -> None:
    alerts, sink, clock = _alerts()
    _looks(alerts, clock, GONE, 30)
    assert sink.events == []  # not yet 30 s
    _looks(alerts, clock, GONE, 600)  # ten minutes more: still one event
    ((event, fields),) = sink.events
    assert event == "failure" and fields["kind"] == "data_dir" and fields["failed"] == 0
    assert fields["error"] == GONE["data_dir"] and fields["system_id"] == "box"
    _looks(alerts, clock, {}, 25)
    assert len(sink.events) == 1  # gone, but not for 30 s yet
    _looks(alerts, clock, {}, 30)
    event, fields = sink.events[1]
    assert event == "recovered" and fields["kind"] == "data_dir" and "target" not in fields
    assert fields["after_seconds"] == 630.0  # from when it began to when it went
    _looks(alerts, clock, {}, 300)
    assert len(sink.events) == 2


def test_a_flapping_problem_sends_nothing_and_each_kind_is_its_own() -> None:
    alerts, sink, clock = _alerts()
    for _ in range(20):  # 20 s on, 20 s off: never held for 30 s
        _looks(alerts, clock, {"capture": "x cannot be captured"}, 20)
        _looks(alerts, clock, {}, 20)
    assert sink.events == []
    _looks(alerts, clock, GONE, 35)
    _looks(alerts, clock, {**GONE, "unrecorded": "not recorded: disk full"}, 35)
    assert [(e, f["kind"]) for e, f in sink.events] == [
        ("failure", "data_dir"),
        ("failure", "unrecorded"),
    ]


def test_what_another_event_announces_sends_nothing() -> None:
    alerts, sink, clock = _alerts()
    status = {
        "paused": True,
        "degraded_reason": "local: disk full",
        "last_drill": {"ok": False, "upload_id": "u", "problems": ["lost"]},
        "last_prune": {"ok": False, "problems": ["lost"]},
    }
    found = check_kinds(status)
    assert set(found) == {"paused", "degraded", "drill_failed", "prune_failed"}
    assert list(found.values()) == check_problems(status)
    _looks(alerts, clock, found, 600)
    assert sink.events == []


async def test_a_restart_sends_no_second_failure_and_recovered_counts_from_before(
    tmp_path: Path,
) -> None:
    state = StateDB(tmp_path / "state.db")
    await state.open()
    try:
        alerts, sink, clock = _alerts(state)
        _looks(alerts, clock, GONE, 40)
        await alerts.save()
        assert [e for e, _ in sink.events] == ["failure"]
        again, sink2, clock2 = _alerts(state)  # the next start
        clock2.now = clock.now
        await again.restore()
        _looks(again, clock2, GONE, 120)
        assert sink2.events == []
        _looks(again, clock2, {}, 35)
        ((event, fields),) = sink2.events
        assert event == "recovered" and fields["after_seconds"] >= 150
        await again.save()
        third, _, _ = _alerts(state)
        await third.restore()
        assert third.announced == {}
    finally:
        await state.close()


def test_behind_is_announced_only_after_a_quarter_of_an_hour() -> None:
    """A long pass (a large upload on a slow link) is behind for minutes, and no fault."""
    alerts, sink, clock = _alerts()
    behind = {"behind": "behind: the oldest pending change is 300 s old (limit 120 s)"}
    _looks(alerts, clock, behind, 600)
    _looks(alerts, clock, {}, 60)
    assert sink.events == []
    _looks(alerts, clock, behind, 905)
    assert [(e, f["kind"]) for e, f in sink.events] == [("failure", "behind")]


async def test_a_look_that_raises_stops_nothing() -> None:
    """A bug in the status the alerts read is logged; the loop (a daemon task) goes on."""
    import asyncio

    looks = 0

    async def broken() -> dict[str, str]:
        nonlocal looks
        looks += 1
        raise TypeError("a bug")

    stop = asyncio.Event()
    alerts = HealthAlerts(EventBus("box"), broken)
    task = asyncio.create_task(alerts.run(stop, tick=0.01))
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert looks > 3


def test_behind_while_paused_or_a_target_is_down_sends_nothing() -> None:
    """Changes wait while paused (asked for) or while a target is down (its degraded event
    said so): that is no second alert, however long."""
    alerts, sink, clock = _alerts()
    behind = {"behind": "behind: the oldest pending change is 3000 s old (limit 120 s)"}
    _looks(alerts, clock, {"paused": "paused", **behind}, 3600)
    _looks(alerts, clock, {"degraded": "degraded: local: disk full", **behind}, 3600)
    assert sink.events == []
