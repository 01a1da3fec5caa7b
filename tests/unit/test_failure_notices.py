"""Which failed passes are announced: the start of a run, each new kind of failure in it,
and a reminder at most every five minutes; the pass that works again ends the run."""

from __future__ import annotations

import io
from typing import Any

from loguru import logger

from akoshad.events import EventBus, EventName
from akoshad.pipeline.report import PassReport
from akoshad.pipeline.stats import Stats
from akoshad.runtime.failure_notices import REMINDER_SECONDS, FailureNotices, failure_kind
from akoshad.runtime.health_watch import HealthWatch
from akoshad.runtime.pass_metrics import NoMetrics
from akoshad.runtime.wiring import PassEvents

FULL = "local target write failed: No space left on device"
REFUSED = "local target /x is not writable: Permission denied"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _observed() -> tuple[Stats, list[tuple[EventName, dict[str, Any]]], PassEvents]:
    """The daemon's pass observer on a bus whose events are heard: (stats, heard, passes)."""
    stats, bus = Stats(), EventBus("box")
    heard: list[tuple[EventName, dict[str, Any]]] = []

    class Sink:
        def emit(self, event: EventName, fields: dict[str, Any]) -> None:
            heard.append((event, fields))

    bus.subscribe(Sink())
    return stats, heard, PassEvents(bus, NoMetrics(), HealthWatch(stats, bus))


def test_a_run_is_announced_at_its_start_then_at_the_reminder_rate() -> None:
    clock = Clock()
    notices = FailureNotices(clock=clock)
    assert notices.failed("local", FULL) == 0
    for _ in range(9):  # a failed pass every 30 s for 4.5 minutes: unannounced
        clock.now += 30
        assert notices.failed("local", FULL) is None
    clock.now += 30  # five minutes after the first: a reminder, with the passes unsaid
    assert notices.failed("local", FULL) == 9
    clock.now += 30
    assert notices.failed("local", FULL) is None
    assert notices.worked("local") == 12
    assert notices.worked("local") == 0  # the run is over
    assert notices.failed("local", FULL) == 0  # a new run starts announced


def test_a_new_kind_of_failure_is_announced_at_once() -> None:
    clock = Clock()
    notices = FailureNotices(clock=clock)
    assert notices.failed("local", FULL) == 0
    clock.now += 1
    assert notices.failed("local", FULL) is None
    assert notices.failed("local", REFUSED) == 1  # a permanent one now: said, with the count
    assert notices.failed("local", REFUSED) is None
    assert notices.failed("local", FULL) is None  # known in this run: paced
    # the same failure with other numbers is the same kind
    assert failure_kind("held 12 of 4096 bytes") == failure_kind("held 7 of 65536 bytes")
    assert notices.failed("local", "local target: p held 1 of 20 bytes") == 2
    assert notices.failed("local", "local target: p held 3 of 40 bytes") is None


def test_targets_are_paced_each_on_its_own() -> None:
    clock = Clock()
    notices = FailureNotices(clock=clock)
    assert notices.failed("local", FULL) == 0
    assert notices.failed("cloud", FULL) == 0
    assert notices.failed("local", FULL) is None
    assert notices.worked("cloud") == 1
    assert notices.failed("local", FULL) is None


def test_many_kinds_in_one_run_do_not_defeat_the_pacing() -> None:
    clock = Clock()
    notices = FailureNotices(clock=clock)
    said = [notices.failed("local", f"error {chr(65 + i % 26)}{i}x") for i in range(200)]
    # kinds differ by letter only (numbers are ignored): 26 kinds, at most 16 announced
    assert sum(s is not None for s in said) <= 16
    clock.now += REMINDER_SECONDS
    assert notices.failed("local", "error Zx") is not None


def test_pass_events_pace_the_failure_event_and_the_error_line() -> None:
    """Through the daemon's own observer: twenty passes that fail the same way send one
    ``failure`` event and one ERROR line; a new kind of failure sends its own; the pass
    that works again logs one INFO line and the health watch's ``recovered`` event."""
    stats, heard, passes = _observed()
    sink = io.StringIO()
    handler = logger.add(sink, format="{message}", level="INFO")
    try:
        for _ in range(20):
            stats.target("local").failed(FULL)
            passes.pass_done(PassReport("local", claimed=3, error=FULL), 0.1)
        stats.target("local").failed(REFUSED)
        passes.pass_done(PassReport("local", claimed=2, error=REFUSED, permanent=True), 0.1)
        stats.target("local").ok()
        passes.pass_done(PassReport("local", claimed=2, upload_id="u1"), 0.1)
    finally:
        logger.remove(handler)
    names = [e for e, _ in heard]
    assert names == ["failure", "degraded", "failure", "upload", "recovered"], names
    assert heard[0][1]["error"] == FULL and heard[0][1]["failed"] == 3
    assert "repeated" not in heard[0][1]
    assert heard[2][1]["error"] == REFUSED and heard[2][1]["repeated"] == 19
    text = sink.getvalue()
    assert text.count("upload to local failed:") == 2, text
    assert "(19 more failed pass(es) since the last report)" in text
    assert text.count("upload to local works again after 21 failed pass(es)") == 1


class _Emitted:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, name: str, **fields: Any) -> None:
        self.events.append((name, fields))


async def test_passes_that_raise_are_paced_like_failed_uploads() -> None:
    """The background loop's passes that raise (a broken state_dir: at most one a minute by
    its backoff, some 1,440 a day) send the failure event at the start of the run, for a
    new kind, then every five minutes; before, one per pass."""
    import asyncio
    from types import SimpleNamespace

    from akoshad.runtime.passes import Passes

    bus = _Emitted()
    state_full = "state database write failed: database or disk is full"
    attempts = {"n": 0}
    stop, wake = asyncio.Event(), asyncio.Event()

    async def run_pass(*_: Any) -> PassReport | None:
        attempts["n"] += 1
        if attempts["n"] <= 12:
            raise OSError(state_full if attempts["n"] != 7 else "state_dir gone: No such file")
        stop.set()
        return None

    async def nothing() -> None:
        return None

    async def due_now() -> float:  # the loop waits 50 ms, then sees the stop
        return 0.0

    parts: Any = SimpleNamespace(
        pass_lock=asyncio.Lock(),
        drain=SimpleNamespace(
            run_pass=run_pass, pacer=SimpleNamespace(hold=lambda: 0, defer=lambda due, now: due)
        ),
        stats=Stats(),
        events=bus,
        state=SimpleNamespace(next_due=due_now),
    )
    interrupted: Any = SimpleNamespace(before_pass=nothing)
    passes = Passes(parts, interrupted, lambda: False, stop, wake)
    clock = Clock()
    passes.notices = FailureNotices(clock=clock)

    async def sleep(seconds: float) -> None:  # the backoff, on the fake clock
        clock.now += seconds

    passes._sleep_or_stop = sleep  # type: ignore[method-assign]
    sink = io.StringIO()
    handler = logger.add(sink, level="INFO", format="{message}")
    try:
        await asyncio.wait_for(passes.run(), 10)
    finally:
        logger.remove(handler)
    assert parts.stats.counters.failures == 12
    sent = [fields for name, fields in bus.events if name == "failure"]
    # the start, the new kind at the 7th, then a reminder once five minutes passed (the
    # backoff reaches 60 s: passes 9.. at 64 s, 124 s...)
    assert [f["error"] for f in sent][:2] == [state_full, "state_dir gone: No such file"]
    assert 3 <= len(sent) < 12
    assert sent[0].get("repeated") is None and sent[-1]["repeated"] >= 1
    assert "drain passes work again after 12 failed pass(es)" in sink.getvalue()


def test_memories_akosha_did_not_take_send_a_paced_failure_for_target_http() -> None:
    """A delivery to Akosha that failed is a ``failure`` (target http), paced like failed
    uploads; an open circuit that sent nothing is none; the delivery that works ends the
    run. Before, only the health watch's ``degraded`` told of it."""
    stats, heard, passes = _observed()
    down = "cannot connect to Akosha at 127.0.0.1:9: Connect call failed"
    for error in [down] * 3 + [f"Akosha is still unavailable: {down}"] * 2:
        stats.target("http").failed(error)
        report = PassReport("local", upload_id="u", memory_error=error, memory_failed=True)
        passes.pass_done(report, 0.1)
    circuit = PassReport("local", upload_id="u", memory_error="Akosha circuit open (x)")
    passes.pass_done(circuit, 0.1)
    failures = [f for e, f in heard if e == "failure"]
    assert len(failures) == 1, heard
    assert failures[0]["target"] == "http" and failures[0]["failed"] == 0
    assert failures[0]["error"] == f"memories not delivered to Akosha: {down}"
    stats.target("http").ok()
    passes.pass_done(PassReport("local", upload_id="u", memories={"delivered": 3}), 0.1)
    assert heard[-1][0] == "recovered" and heard[-1][1]["target"] == "http"
    stats.target("http").failed(down)
    passes.pass_done(PassReport("local", memory_error=down, memory_failed=True), 0.1)
    assert [f for e, f in heard if e == "failure"][-1]["target"] == "http"
    assert len([e for e, _ in heard if e == "failure"]) == 2  # a new run: announced at once
