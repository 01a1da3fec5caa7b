"""One early try of a periodic job (the daemon's prune and drill) after the target kept it from
running: the target's ``recovered`` (an upload went through, the outbox is back) has it
tried :data:`AFTER_RECOVERY_SECONDS` later, not at its own retry (10 minutes or more later,
while ``status --check`` failed for it). Once until a run goes through, so a target that
comes and goes does not have the job run at each of its returns."""

from __future__ import annotations

import time

AFTER_RECOVERY_SECONDS = 30.0


class RecoveryRetry:
    """Whether a run the target kept from happening waits for the target's recovery, and
    when (monotonic) the early try it brought is due."""

    def __init__(self, after: float = AFTER_RECOVERY_SECONDS) -> None:
        self.after = after
        self.due: float | None = None  # the early try, monotonic; None: none scheduled
        self._awaiting = False  # the last run failed: the target's recovery brings a try
        self._spent = False  # the early try was had since the last run that went through

    def outcome(self, *, failed: bool) -> None:
        """A run ended: one that ``failed`` (tried again later) waits for the target's
        recovery, unless an early try was had since the last run that went through."""
        self.due = None
        if failed:
            self._awaiting = not self._spent
        else:
            self._awaiting = self._spent = False

    def forget(self) -> None:
        """Nothing awaited nor scheduled: the job was turned off, or its run failed for a
        reason the target's recovery does not cure (a full disk)."""
        self.due, self._awaiting = None, False

    def recovered(self) -> bool:
        """The target is back: True when this schedules the early try (:attr:`due`)."""
        if not self._awaiting:
            return False
        self._awaiting, self._spent = False, True
        self.due = time.monotonic() + self.after
        return True

    def wait(self, wait: float) -> float:
        """``wait`` (seconds until the job is due), or less when the early try comes
        sooner."""
        return wait if self.due is None else min(wait, self.due - time.monotonic())
