""" "Am I safe?": one verdict from a status result, and since when it holds.

Safe means all of:

- there is a store to back up: ``data_dir`` exists and can be read, it selects a file (an
  empty selection is no backup; an upload made before is kept, not emptied), and no file
  of it is skipped;
- nothing waits too long: the oldest change on the queue is younger than
  ``debounce_seconds + min_upload_interval_seconds + one pass`` (a pass: the longer of
  :data:`PASS_ALLOWANCE_SECONDS` and twice the last pass's duration), so the last upload
  is newer than every change but those still in their normal wait; and every change seen
  is on the queue (``unrecorded``: the state's disk full, so none is uploaded);
- no configured target is degraded;
- the last restore drill was good. With drills on (``drill_interval_hours`` > 0) a good
  drill older than two intervals no longer counts; before the first drill the verdict says
  "no drill yet", which makes it unsafe only once one interval has passed since the daemon
  started and there is an upload to drill (the first drill should have run by then). A
  failed drill, even one run by hand with drills off, is always unsafe. A drill that
  could not read the upload only because this machine holds no identity (the recipients
  alone, as advised) is no failure: a note says so.

``since`` is when the daemon saw the verdict change (status, a metrics scrape, the
service manager's status line and the webhook alerts' look every 5 s ask for it); at
start, the start time. A reason that knows
when it began (a change waiting past its allowance, a drill that failed, a target down)
dates the change back to then. It is not persisted.

Pure logic with the clock passed in; no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PASS_ALLOWANCE_SECONDS = 60.0
# the daemon keeps only the recipients (the identity off this machine, as advised): its
# drills cannot read encrypted uploads, which is no fault (``akoshad drill --identity``)
NO_IDENTITY_NOTE = "no drill here: the uploads are encrypted, the identity is kept elsewhere"
DRILL_STALE_INTERVALS = 2.0


@dataclass(frozen=True)
class SafetyPolicy:
    """The configuration the verdict depends on."""

    debounce_seconds: float
    min_upload_interval_seconds: float = 0.0
    drill_interval_hours: float = 0.0

    def allowed_wait(self, last_pass_seconds: float | None) -> float:
        """How long a queued change may rightly wait for its upload (seconds)."""
        one_pass = max(PASS_ALLOWANCE_SECONDS, 2.0 * (last_pass_seconds or 0.0))
        return self.debounce_seconds + self.min_upload_interval_seconds + one_pass


@dataclass(frozen=True)
class Assessment:
    """Why the store is not safe (empty: safe), remarks that do not make it unsafe, and
    the earliest time a reason is known to hold (None: unknown)."""

    reasons: list[str]
    notes: list[str]
    began: float | None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def drill_problems(drill: Mapping[str, Any]) -> str:
    """A ``last_drill`` object's problems in one line: the first, and how many more."""
    problems = [str(p) for p in drill.get("problems") or []]
    first = problems[0] if problems else "no detail"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{first}{more}"


def _drill(
    status: Mapping[str, Any], policy: SafetyPolicy, now: float, started: float
) -> tuple[str | None, str | None, float | None]:
    """(reason, note, began) for the drill part of the verdict."""
    drill = status.get("last_drill")
    interval = policy.drill_interval_hours * 3600.0
    if isinstance(drill, Mapping):
        at = _number(drill.get("at"))
        if drill.get("needs_identity") and drill.get("ok") is False:
            return None, NO_IDENTITY_NOTE, None
        if drill.get("ok") is not True:
            return f"last drill failed: {drill_problems(drill)}", None, at
        if interval > 0 and at is not None and now - at > DRILL_STALE_INTERVALS * interval:
            limit = at + DRILL_STALE_INTERVALS * interval
            return f"no good drill for {_hours(now - at)}", None, limit
        return None, None, None
    if interval <= 0 or not status.get("last_upload"):
        return None, None, None
    if now - started >= interval:
        return f"no drill yet after {_hours(now - started)}", None, started + interval
    return None, "no drill yet", None


def drill_overdue(
    status: Mapping[str, Any], policy: SafetyPolicy, *, now: float, started: float
) -> str | None:
    """The verdict's reason when no good drill is recent enough (none yet after an
    interval, or the last good one older than two), else None; a drill that failed is
    not overdue (its ``drill`` event said so)."""
    drill = status.get("last_drill")
    if isinstance(drill, Mapping) and drill.get("ok") is not True:
        return None
    return _drill(status, policy, now, started)[0]


def skipped_problem(skipped: object) -> str | None:
    """The line for files left out of every upload (a status's ``skipped``, ``{path:
    reason}``): a symlink out of ``data_dir``, a file that cannot be read..., or None."""
    if not isinstance(skipped, Mapping) or not skipped:
        return None
    path, why = min(skipped.items())
    more = f" and {len(skipped) - 1} more" if len(skipped) > 1 else ""
    return f"{len(skipped)} file(s) skipped, not backed up ({path}: {why}{more})"


def _store(status: Mapping[str, Any]) -> list[str]:
    """The reasons the store is not (all) backed up: ``data_dir`` missing or unreadable, a
    store that selects no file, files skipped, changes the queue could not take."""
    reasons: list[str] = []
    problem = status.get("data_dir_problem")
    if problem:
        reasons.append(str(problem))
    elif status.get("waiting_for_data_dir"):
        reasons.append(f"data_dir {status.get('data_dir', '?')} cannot be read or does not exist")
    if status.get("nothing_selected"):
        reasons.append(str(status["nothing_selected"]))
    skipped = skipped_problem(status.get("skipped"))
    if skipped is not None:
        reasons.append(skipped)
    if status.get("unrecorded"):  # held in memory, never uploaded until they are queued
        reasons.append(f"{status['unrecorded']}: not uploaded until they are")
    return reasons


def assess(
    status: Mapping[str, Any],
    policy: SafetyPolicy,
    *,
    now: float,
    started: float,
    last_pass_seconds: float | None = None,
) -> Assessment:
    """The verdict's reasons from a status result (its ``data_dir_problem`` /
    ``waiting_for_data_dir``, ``nothing_selected``, ``unrecorded``, ``oldest_pending_age_seconds``,
    ``degraded_reason``, ``degraded_since``, ``last_upload`` and ``last_drill``)."""
    reasons = _store(status)
    notes: list[str] = []
    began: list[float] = []
    age = _number(status.get("oldest_pending_age_seconds"))
    allowed = policy.allowed_wait(last_pass_seconds)
    if age is not None and age > allowed:
        reasons.append(
            f"a change has waited {_hours(age)} for its upload (allowed {allowed:.0f} s)"
        )
        began.append(now - age + allowed)
    degraded = status.get("degraded_reason")
    if degraded:
        reasons.append(f"degraded: {degraded}")
        down = _number(status.get("degraded_since"))  # when its target went down
        if down is not None:
            began.append(down)
    reason, note, since = _drill(status, policy, now, started)
    if reason:
        reasons.append(reason)
    if note:
        notes.append(note)
    if since is not None:
        began.append(since)
    return Assessment(reasons, notes, min(began) if began else None)


class SafetyTracker:
    """Remembers the verdict and the time it last changed."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.safe: bool | None = None
        self.since = started

    def update(self, found: Assessment, now: float | None = None) -> dict[str, Any]:
        """Record this assessment; returns the status ``safety`` object
        ``{safe, since, reasons, notes}``."""
        now = time.time() if now is None else now
        safe = not found.reasons
        if self.safe is None:
            self.since = self.started if safe else self._dated(found.began, self.started, now)
        elif safe != self.safe:
            self.since = now if safe else self._dated(found.began, self.since, now)
        self.safe = safe
        return {
            "safe": safe,
            "since": self.since,
            "reasons": list(found.reasons),
            "notes": list(found.notes),
        }

    @staticmethod
    def _dated(began: float | None, floor: float, now: float) -> float:
        """The transition time: when the reasons began if known and plausible, else now."""
        if began is None:
            return now
        return min(now, max(floor, began))


def safety_line(safety: Mapping[str, Any] | None) -> str | None:
    """The first line of ``akoshad status``: ``safe since <time>`` or
    ``UNSAFE since <time>: <reason>; ...`` (None for a daemon that does not report it)."""
    if not isinstance(safety, Mapping) or not isinstance(safety.get("safe"), bool):
        return None
    since = _number(safety.get("since"))
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since else "?"
    notes = [str(n) for n in safety.get("notes") or []]
    if safety["safe"]:
        return f"safe since {when}" + (f" ({'; '.join(notes)})" if notes else "")
    reasons = [str(r) for r in safety.get("reasons") or []] or ["unknown"]
    return f"UNSAFE since {when}: {'; '.join(reasons)}"
