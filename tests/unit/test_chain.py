"""The fallback chain, table-driven: every planner cell, every breaker transition."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from akoshad.pipeline.chain import BreakerState, CircuitBreaker, PassPlan, plan_pass

CLOSED, OPEN, HALF = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
STATES = (CLOSED, OPEN, HALF)


# ---- planner: files --------------------------------------------------------------------------
# (method, bucket, cloud breaker) -> where file snapshots go. enable_fallback, akosha_url
# and the http breaker never change it (checked over the full product below).
FILES: dict[tuple[str, bool, BreakerState], str] = {
    ("auto", True, CLOSED): "cloud",
    ("auto", True, HALF): "cloud",
    ("auto", True, OPEN): "wait",
    ("auto", False, CLOSED): "local",
    ("auto", False, HALF): "local",
    ("auto", False, OPEN): "local",
    ("cloud", True, CLOSED): "cloud",
    ("cloud", True, HALF): "cloud",
    ("cloud", True, OPEN): "wait",
    ("cloud", False, CLOSED): "local",
    ("cloud", False, HALF): "local",
    ("cloud", False, OPEN): "local",
    ("http", True, CLOSED): "local",
    ("http", True, HALF): "local",
    ("http", True, OPEN): "local",
    ("http", False, CLOSED): "local",
    ("http", False, HALF): "local",
    ("http", False, OPEN): "local",
}

# ---- planner: memories -----------------------------------------------------------------------
# (method, bucket, enable_fallback, akosha_url set) -> are memories meant to go over HTTP?
MEMORIES_WANTED: dict[tuple[str, bool, bool, bool], bool] = {
    ("auto", True, True, True): True,  # every pass, whether or not the cloud worked
    ("auto", True, False, True): False,  # enable_fallback false + bucket: no HTTP
    ("auto", False, True, True): True,  # no bucket: HTTP is the primary method
    ("auto", False, False, True): True,
    ("auto", True, True, False): False,  # no akosha_url: never
    ("auto", True, False, False): False,
    ("auto", False, True, False): False,
    ("auto", False, False, False): False,
    ("cloud", True, True, True): False,  # cloud mode: never over HTTP
    ("cloud", True, False, True): False,
    ("cloud", False, True, True): False,
    ("cloud", False, False, True): False,
    ("cloud", True, True, False): False,
    ("cloud", True, False, False): False,
    ("cloud", False, True, False): False,
    ("cloud", False, False, False): False,
    ("http", True, True, True): True,  # http mode: HTTP only
    ("http", True, False, True): True,
    ("http", False, True, True): True,
    ("http", False, False, True): True,
    ("http", True, True, False): False,
    ("http", True, False, False): False,
    ("http", False, True, False): False,
    ("http", False, False, False): False,
}
# wanted + http breaker -> route
HTTP_ROUTE = {CLOSED: "http", HALF: "http", OPEN: "wait"}

CELLS = list(
    itertools.product(("auto", "cloud", "http"), (True, False), (True, False), (True, False))
)


def test_tables_cover_every_cell() -> None:
    assert set(MEMORIES_WANTED) == set(CELLS)
    assert len(FILES) == 3 * 2 * 3


@pytest.mark.parametrize(("method", "bucket", "fallback", "akosha"), CELLS)
@pytest.mark.parametrize("cloud", STATES)
@pytest.mark.parametrize("http", STATES)
def test_planner_cell(
    method: str,
    bucket: bool,
    fallback: bool,
    akosha: bool,
    cloud: BreakerState,
    http: BreakerState,
) -> None:
    plan = plan_pass(
        method=method,  # type: ignore[arg-type]
        enable_fallback=fallback,
        bucket=bucket,
        akosha=akosha,
        cloud=cloud,
        http=http,
    )
    assert plan.files == FILES[(method, bucket, cloud)]
    wanted = MEMORIES_WANTED[(method, bucket, fallback, akosha)]
    assert plan.memories == (HTTP_ROUTE[http] if wanted else "none")


def test_plan_waits_on_open_circuits() -> None:
    plan = plan_pass(
        method="auto", enable_fallback=True, bucket=True, akosha=True, cloud=OPEN, http=OPEN
    )
    assert plan == PassPlan("wait", "wait")


def test_planner_rejects_unknown_method() -> None:
    with pytest.raises(ValueError):
        plan_pass(method="ftp", enable_fallback=True, bucket=True, akosha=True)  # type: ignore[arg-type]


# ---- breaker ----------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(
        "t", failure_threshold=3, reset_timeout=10, backoff=2, max_reset_timeout=35, clock=clock
    )


Step = Callable[[CircuitBreaker, Clock], object]


def fail(b: CircuitBreaker, c: Clock) -> None:
    b.record_failure("boom")


def perm(b: CircuitBreaker, c: Clock) -> None:
    b.record_failure(RuntimeError("denied"), permanent=True)


def ok(b: CircuitBreaker, c: Clock) -> None:
    b.record_success()


def allow(b: CircuitBreaker, c: Clock) -> bool:
    return b.allow()


def heard(b: CircuitBreaker, c: Clock) -> bool:
    return b.answered_elsewhere()


def wait(seconds: float) -> Step:
    def step(b: CircuitBreaker, c: Clock) -> None:
        c.now += seconds

    return step


# (name, steps, expected state after, expected allow() result after, expected interval)
TRANSITIONS: list[tuple[str, list[Step], BreakerState, bool, float]] = [
    ("new is closed", [], CLOSED, True, 10),
    ("closed: success stays closed", [ok], CLOSED, True, 10),
    ("closed: 1 transient stays closed", [fail], CLOSED, True, 10),
    ("closed: 2 transient stay closed", [fail, fail], CLOSED, True, 10),
    ("closed: 3 transient open", [fail, fail, fail], OPEN, False, 10),
    ("closed: success resets the count", [fail, fail, ok, fail, fail], CLOSED, True, 10),
    ("closed: 1 permanent opens", [perm], OPEN, False, 10),
    ("open: before the interval stays open", [perm, wait(9.9)], OPEN, False, 10),
    ("open: after the interval is half-open", [perm, wait(10)], HALF, True, 10),
    ("open: a late failure changes nothing", [perm, wait(5), fail, wait(5)], HALF, True, 10),
    ("open: a late success closes", [perm, wait(1), ok], CLOSED, True, 10),
    ("half-open: one probe only", [perm, wait(10), allow], HALF, False, 10),
    ("half-open: probe success closes", [perm, wait(10), allow, ok], CLOSED, True, 10),
    (
        "half-open: probe failure reopens, interval doubles",
        [perm, wait(10), allow, fail],
        OPEN,
        False,
        20,
    ),
    (
        "reopened: half-open again after the longer interval",
        [perm, wait(10), allow, fail, wait(20)],
        HALF,
        True,
        20,
    ),
    (
        "reopened: still open before it",
        [perm, wait(10), allow, fail, wait(19)],
        OPEN,
        False,
        20,
    ),
    (
        "interval capped",
        [perm, wait(10), allow, fail, wait(20), allow, fail, wait(40), allow, fail],
        OPEN,
        False,
        35,
    ),
    (
        "success after reopen resets the interval",
        [perm, wait(10), allow, fail, wait(20), allow, ok, perm],
        OPEN,
        False,
        10,
    ),
    (
        "a probe that never reports is granted again after one base interval",
        [perm, wait(10), allow, wait(10)],
        HALF,
        True,
        10,
    ),
    ("half-open: permanent failure reopens", [perm, wait(10), allow, perm], OPEN, False, 20),
    # another request of the daemon (a prune, a drill) was answered by the target
    ("open: an answer elsewhere makes it half-open", [perm, wait(1), heard], HALF, True, 10),
    ("open: that probe succeeds, closed", [perm, heard, allow, ok], CLOSED, True, 10),
    (
        "open: that probe fails, open for the longer interval",
        [perm, heard, allow, fail, wait(19)],
        OPEN,
        False,
        20,
    ),
    (
        "open: an answer elsewhere is heard once per run of failures",
        [perm, heard, allow, fail, wait(1), heard],
        OPEN,
        False,
        20,
    ),
    (
        "heard again once a success closed it",
        [perm, heard, allow, ok, perm, wait(1), heard],
        HALF,
        True,
        10,
    ),
    ("closed: an answer elsewhere changes nothing", [fail, fail, heard, fail], OPEN, False, 10),
    (
        "half-open, probe out: an answer elsewhere changes nothing",
        [perm, wait(10), allow, heard],
        HALF,
        False,
        10,
    ),
]


@pytest.mark.parametrize(
    ("steps", "state", "allowed", "interval"),
    [t[1:] for t in TRANSITIONS],
    ids=[t[0] for t in TRANSITIONS],
)
def test_breaker_transition(
    steps: list[Step], state: BreakerState, allowed: bool, interval: float
) -> None:
    clock = Clock()
    b = breaker(clock)
    for step in steps:
        step(b, clock)
    assert b.state is state
    assert b.interval == interval
    assert b.allow() is allowed


def test_breaker_status_fields() -> None:
    clock = Clock()
    b = breaker(clock)
    assert b.snapshot() == {
        "state": "closed",
        "consecutive_failures": 0,
        "last_error": None,
        "retry_in": 0.0,
    }
    b.record_failure(ConnectionRefusedError("refused"), permanent=True)
    clock.now += 4
    snap = b.snapshot()
    assert snap["state"] == "open"
    assert snap["last_error"] == "refused"
    assert snap["retry_in"] == pytest.approx(6)
    b.record_success()
    assert b.snapshot()["state"] == "closed" and b.last_error is None


def test_breaker_validates_arguments() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker("x", failure_threshold=0)
    with pytest.raises(ValueError):
        CircuitBreaker("x", reset_timeout=0)
    with pytest.raises(ValueError):
        CircuitBreaker("x", reset_timeout=10, max_reset_timeout=5)
