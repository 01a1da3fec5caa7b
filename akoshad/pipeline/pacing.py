"""Upload pacing: when the daemon's next background upload may start.

A busy store makes at most one upload per ``min_upload_interval_seconds``. The rule
(:func:`next_upload_at`, pure):

- no upload yet, or the last one began ``interval`` or more ago (a quiet spell): at once,
  so the first change after a quiet spell goes up after its debounce and no later;
- otherwise at the last upload's start + ``interval``: everything queued by then goes up
  together, in one upload;
- ``interval`` 0: never held back (one upload per released change, as before the setting);
- a waiver (``sync`` without ``--wait``) lets the next pass go at once. ``sync --wait``
  and ``run --once`` drain without asking the pacer at all.

Only a committed upload counts. A pass that failed (its error set), that uploaded nothing
(every file unchanged, memories only) or that waited for the cloud does not move the
clock: a failing target is paced by the retry backoff and its circuit breaker, and holding
a retry back as well would only delay the data once the target answers again.

:class:`UploadPacer` keeps the last upload's start on an injected monotonic clock (a wall
clock that jumps cannot hold uploads back for longer than one interval).
"""

from __future__ import annotations

import time
from collections.abc import Callable


def next_upload_at(
    last_upload: float | None, interval: float, *, waived: bool = False
) -> float | None:
    """When the next background upload may start (clock of ``last_upload``, the start of
    the last committed upload); None: at once."""
    if waived or interval <= 0 or last_upload is None:
        return None
    return last_upload + interval


class UploadPacer:
    """The pacing rule with its memory: the last committed upload and a pending waiver."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = float(interval)
        self.clock = clock
        self.last_upload: float | None = None
        self._waived_at: float | None = None

    def hold(self, now: float | None = None) -> float:
        """Seconds the next background pass must wait (0: it may start now)."""
        now = self.clock() if now is None else now
        at = next_upload_at(self.last_upload, self.interval, waived=self._waived_at is not None)
        if at is None:
            return 0.0
        return min(self.interval, max(0.0, at - now))

    def waive(self) -> None:
        """``sync``: the next pass starts at once, whatever the last upload."""
        self._waived_at = self.clock()

    def pass_done(self, started: float, *, uploaded: bool) -> None:
        """A pass that began at ``started`` (this pacer's clock) ended; ``uploaded``: it
        committed an upload. A pass that began after a waiver uses it up."""
        if uploaded and (self.last_upload is None or started > self.last_upload):
            self.last_upload = started
        if self._waived_at is not None and started >= self._waived_at:
            self._waived_at = None

    def not_before(self, wall_now: float) -> float | None:
        """The wall-clock time the next background upload waits for; None when it is not
        held back."""
        wait = self.hold()
        return wall_now + wait if wait > 0 else None

    def defer(self, due: float | None, wall_now: float) -> float | None:
        """``due`` (a wall-clock time a queued change is due, or None: nothing queued) moved
        no earlier than the pacing allows."""
        wait = self.hold()
        if due is None or wait <= 0:
            return due
        return max(due, wall_now + wait)
