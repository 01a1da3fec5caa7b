"""The fallback chain: per-target circuit breakers and the per-pass method planner.

Pure logic with an injected clock; nothing here does I/O.

Circuit breaker (one per remote target: ``cloud``, ``http``)::

    closed    --N consecutive transient failures, or 1 permanent--> open
    open      --reset interval elapsed--> half_open
    half_open --allow() grants ONE probe; others wait--> half_open
    half_open --probe succeeds--> closed (interval back to its base)
    half_open --probe fails--> open (interval x backoff, capped)
    any       --success--> closed
    open      --another request of the daemon answered--> half_open (once per run of
                failures: a probe that fails then waits for its interval)

A dead endpoint so costs one probe per interval, not one timeout per file. A granted
probe that never reports back is granted again after one base interval. For the cloud the
daemon's probe is a read-only check of the bucket, never a write (a write could create a
mistyped bucket on servers that create buckets on PutObject).

Planner (:func:`plan_pass`): where this pass sends FILE snapshots and whether MEMORIES go
to Akosha over HTTP. ``bucket``: a ``cloud_bucket`` is configured; ``akosha``:
``akosha_url`` is set. "open" below means that target's breaker is open (half-open
counts as usable: the caller's ``allow()`` takes the one probe).

======  ======  ========  ======  ==========================  ============================
method  bucket  fallback  akosha  files                       memories
======  ======  ========  ======  ==========================  ============================
auto    yes     any       any     cloud (wait if cloud open)  see below
auto    no      any       any     local                       see below
cloud   yes     any       any     cloud (wait if cloud open)  none
cloud   no      any       any     local (no bucket to use)    none
http    any     any       any     local                       see below
======  ======  ========  ======  ==========================  ============================

Memories over HTTP (``http``, or ``wait`` while the http breaker is open; ``none``
otherwise): never without ``akosha_url`` and never in ``cloud`` mode; always in ``http``
mode; in ``auto`` mode every pass, whether or not the cloud worked (the contract: every
embedded row reaches Akosha exactly once), except with a bucket and
``enable_fallback: false``, which means "no HTTP while a bucket is configured".

"wait" for files means they stay queued for the cloud; nothing is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

Method = Literal["auto", "cloud", "http"]
FileRoute = Literal["cloud", "local", "wait"]
MemoryRoute = Literal["http", "none", "wait"]
Clock = Callable[[], float]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Closed / open / half-open breaker for one target (see the module docstring)."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int = 3,
        reset_timeout: float = 30.0,
        backoff: float = 2.0,
        max_reset_timeout: float = 300.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_timeout <= 0 or backoff < 1 or max_reset_timeout < reset_timeout:
            raise ValueError("need reset_timeout > 0, backoff >= 1, max >= reset_timeout")
        self.name = name
        self.failure_threshold = failure_threshold
        self.base_timeout = reset_timeout
        self.backoff = backoff
        self.max_reset_timeout = max_reset_timeout
        self.clock = clock
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.interval = reset_timeout
        self._open = False
        self._opened_at = 0.0
        self._probe_at: float | None = None  # when the half-open probe was granted
        self._heard = False  # an answer elsewhere cut this run of failures short already

    @property
    def state(self) -> BreakerState:
        if not self._open:
            return BreakerState.CLOSED
        if self.clock() - self._opened_at >= self.interval:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """May a call go out now? Half-open: True for exactly one caller (the probe)."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        now = self.clock()
        if self._probe_at is not None and now - self._probe_at < self.base_timeout:
            return False
        self._probe_at = now
        return True

    def retry_in(self) -> float:
        """Seconds until a probe may go out (0 when closed or half-open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.interval - self.clock())

    def answered_elsewhere(self) -> bool:
        """A request the breaker does not guard (a prune's, a drill's) was answered by the
        target: an open circuit is half-open at once, so the next call is its probe. Once
        per run of failures (until a success closes it): a probe that fails then waits for
        its interval. True when it made the circuit half-open."""
        if self._heard or self.state is not BreakerState.OPEN:
            return False
        self._heard = True
        self._opened_at = self.clock() - self.interval
        self._probe_at = None
        return True

    def record_success(self) -> None:
        self._open = False
        self._heard = False
        self._probe_at = None
        self.consecutive_failures = 0
        self.interval = self.base_timeout
        self.last_error = None

    def record_failure(self, error: str | BaseException, *, permanent: bool = False) -> None:
        """A failed call. Opens at the threshold, on a permanent error, or on a failed probe."""
        self.last_error = str(error) or type(error).__name__
        self.consecutive_failures += 1
        state = self.state
        if state is BreakerState.HALF_OPEN:
            self.interval = min(self.interval * self.backoff, self.max_reset_timeout)
            self._trip()
        elif state is BreakerState.CLOSED and (
            permanent or self.consecutive_failures >= self.failure_threshold
        ):
            self.interval = self.base_timeout
            self._trip()
        # already open: a late failure of a call granted earlier changes nothing

    def _trip(self) -> None:
        self._open = True
        self._opened_at = self.clock()
        self._probe_at = None

    def snapshot(self) -> dict[str, Any]:
        """What status shows: state, failures, last error, seconds to the next probe."""
        return {
            "state": self.state.value,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "retry_in": round(self.retry_in(), 3),
        }


@dataclass(frozen=True)
class PassPlan:
    """What one pass does: where files go and how memories go."""

    files: FileRoute
    memories: MemoryRoute


def plan_pass(
    *,
    method: Method,
    enable_fallback: bool,
    bucket: bool,
    akosha: bool,
    cloud: BreakerState = BreakerState.CLOSED,
    http: BreakerState = BreakerState.CLOSED,
) -> PassPlan:
    """Decide this pass's routes (the table in the module docstring).

    ``method`` is ``force_method`` (or a one-off ``sync --method``).
    """
    if method not in ("auto", "cloud", "http"):
        raise ValueError(f"unknown method {method!r}")
    files: FileRoute
    if method == "http" or not bucket:
        files = "local"
    elif cloud is BreakerState.OPEN:
        files = "wait"
    else:
        files = "cloud"

    # memories over HTTP: wanted unless there is no Akosha, the method is cloud, or a bucket
    # is set and fallback is off
    wanted = (
        akosha and method != "cloud" and not (method == "auto" and bucket and not enable_fallback)
    )
    memories: MemoryRoute = "none"
    if wanted:
        memories = "wait" if http is BreakerState.OPEN else "http"
    return PassPlan(files, memories)
