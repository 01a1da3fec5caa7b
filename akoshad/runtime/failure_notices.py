"""Which failed passes are announced (the ``failure`` event and the ERROR line).

A target that keeps failing the same way (a full local outbox fails a pass at every change:
some 2,900 a day) is announced when the run of failures starts, at each kind of failure
not yet announced in the run, and otherwise at most once per :data:`REMINDER_SECONDS`, with
how many failed passes went unannounced since; the pass that works again ends the run
(one INFO line; the ``recovered`` event is the health watch's). The S3 target's circuit
breaker paces its tries to about this rate already. Every failed pass is still counted
(``failures``, ``akoshad_uploads_total{outcome="failed"}``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

REMINDER_SECONDS = 300.0  # the circuit breaker's longest interval: the S3 target's pace
MAX_KINDS = 16  # kinds remembered per run: past that, any other is paced like a known one
_NUMBER = re.compile(r"\d+")


def failure_kind(error: str) -> str:
    """``error`` without its numbers: the same failure with other counts or sizes."""
    return _NUMBER.sub("#", error)


@dataclass
class _Run:
    """The failures of one target since it last worked."""

    said_at: float
    kinds: set[str] = field(default_factory=set)
    unsaid: int = 0  # failed passes since the last announced one
    failed: int = 1  # failed passes in the run


class FailureNotices:
    """Runs of failed passes, per key (a target's name)."""

    def __init__(
        self, reminder: float = REMINDER_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.reminder = reminder
        self.clock = clock
        self._runs: dict[str, _Run] = {}

    def failed(self, key: str, error: str) -> int | None:
        """A failed pass: None when it goes unannounced, else how many failed passes went
        unannounced since the last announced one (0 at the start of a run)."""
        now, kind = self.clock(), failure_kind(error)
        run = self._runs.get(key)
        if run is None:
            self._runs[key] = _Run(now, {kind})
            return 0
        run.failed += 1
        new = kind not in run.kinds and len(run.kinds) < MAX_KINDS
        if not new and now - run.said_at < self.reminder:
            run.unsaid += 1
            return None
        if new:
            run.kinds.add(kind)
        unsaid, run.unsaid, run.said_at = run.unsaid, 0, now
        return unsaid

    def worked(self, key: str) -> int:
        """A pass that worked: how many passes failed in the run it ends (0: none)."""
        run = self._runs.pop(key, None)
        return 0 if run is None else run.failed
