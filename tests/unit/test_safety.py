"""The "am I safe?" verdict: its rules, its "since", and the status's first line."""

from __future__ import annotations

import time
from typing import Any

from akoshad.cli.client import render_status
from akoshad.runtime.safety import (
    NO_IDENTITY_NOTE,
    PASS_ALLOWANCE_SECONDS,
    SafetyPolicy,
    SafetyTracker,
    assess,
    safety_line,
)

T0 = 1_700_000_000.0
HOUR = 3600.0
POLICY = SafetyPolicy(
    debounce_seconds=2.0, min_upload_interval_seconds=30.0, drill_interval_hours=24
)
UPLOAD = {"upload_id": "u1", "finished_at": T0}
GOOD = {"at": T0, "ok": True, "upload_id": "u1", "problems": []}


def status(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "oldest_pending_age_seconds": None,
        "degraded_reason": None,
        "last_upload": UPLOAD,
        "last_drill": GOOD,
    }
    base.update(fields)
    return base


def test_all_clear_is_safe() -> None:
    found = assess(status(), POLICY, now=T0 + 60, started=T0 - HOUR)
    assert found.reasons == [] and found.notes == []


def test_a_change_waiting_past_debounce_interval_and_a_pass_is_unsafe() -> None:
    allowed = 2.0 + 30.0 + PASS_ALLOWANCE_SECONDS
    ok = assess(status(oldest_pending_age_seconds=allowed - 1), POLICY, now=T0, started=T0 - HOUR)
    assert ok.reasons == []
    late = assess(
        status(oldest_pending_age_seconds=allowed + 10), POLICY, now=T0, started=T0 - HOUR
    )
    assert len(late.reasons) == 1 and "waited" in late.reasons[0]
    assert late.began == T0 - 10  # it became unsafe when the allowance ran out


def test_a_slow_last_pass_widens_the_allowance() -> None:
    age = PASS_ALLOWANCE_SECONDS + 200
    st = status(oldest_pending_age_seconds=age)
    assert assess(st, POLICY, now=T0, started=T0 - HOUR).reasons
    assert not assess(st, POLICY, now=T0, started=T0 - HOUR, last_pass_seconds=150).reasons


def test_degraded_is_unsafe() -> None:
    found = assess(status(degraded_reason="cloud: bucket missing"), POLICY, now=T0, started=T0)
    assert found.reasons == ["degraded: cloud: bucket missing"]


def test_a_missing_data_dir_is_unsafe() -> None:
    why = "data_dir /no/such does not exist: waiting for it to appear, nothing is backed up"
    found = assess(
        status(waiting_for_data_dir=True, data_dir_problem=why, last_upload=None, last_drill=None),
        POLICY,
        now=T0,
        started=T0,
    )
    assert found.reasons == [why]
    # a daemon that says it waits without saying why is not safe either
    bare = assess(status(waiting_for_data_dir=True, data_dir="/d"), POLICY, now=T0, started=T0)
    assert len(bare.reasons) == 1 and "data_dir /d" in bare.reasons[0]


def test_nothing_selected_and_never_uploaded_is_unsafe() -> None:
    why = "nothing to back up in data_dir (check include/exclude): no file in /d is selected"
    st = status(nothing_selected=why, last_upload=None, last_drill=None)
    assert assess(st, POLICY, now=T0, started=T0).reasons == [why]
    out = SafetyTracker(started=T0).update(assess(st, POLICY, now=T0, started=T0), now=T0)
    assert out["safe"] is False and out["reasons"] == [why]


def test_a_skipped_file_is_unsafe() -> None:
    st = status(skipped={"a.json": "symlink points outside data_dir"})
    assert assess(st, POLICY, now=T0, started=T0).reasons == [
        "1 file(s) skipped, not backed up (a.json: symlink points outside data_dir)"
    ]
    assert assess(status(skipped={}), POLICY, now=T0, started=T0).reasons == []


def test_a_failed_drill_is_unsafe_even_with_drills_off() -> None:
    bad = {"at": T0, "ok": False, "upload_id": "u1", "problems": ["a.db: sha256", "b.db: rows"]}
    off = SafetyPolicy(debounce_seconds=2.0, drill_interval_hours=0)
    found = assess(status(last_drill=bad), off, now=T0 + 5, started=T0 - HOUR)
    assert found.reasons == ["last drill failed: a.db: sha256 (and 1 more)"]
    assert found.began == T0


def test_a_drill_that_only_lacked_the_identity_is_a_note_not_a_failure() -> None:
    """The identity kept off this machine (as advised): its drills cannot read encrypted
    uploads. That is safe with a note, as ``status --check`` is healthy; a drill whose
    configured identity could not open the upload is a failure (needs_identity false)."""
    lacked = {"at": T0, "ok": False, "needs_identity": True, "upload_id": "u1",
              "problems": ["this upload is encrypted: the identity is needed"]}  # fmt: skip
    found = assess(status(last_drill=lacked), POLICY, now=T0 + 30 * HOUR, started=T0 - HOUR)
    assert found.reasons == [] and found.notes == [NO_IDENTITY_NOTE]
    wrong = {**lacked, "needs_identity": False, "problems": ["encrypted to other keys"]}
    found = assess(status(last_drill=wrong), POLICY, now=T0 + 5, started=T0 - HOUR)
    assert found.reasons == ["last drill failed: encrypted to other keys"]


def test_a_good_drill_goes_stale_after_two_intervals() -> None:
    fresh = assess(status(), POLICY, now=T0 + 47 * HOUR, started=T0 - HOUR)
    assert fresh.reasons == []
    stale = assess(status(), POLICY, now=T0 + 49 * HOUR, started=T0 - HOUR)
    assert stale.reasons == ["no good drill for 49.0 h"] and stale.began == T0 + 48 * HOUR


def test_no_drill_yet_is_a_note_then_unsafe_after_one_interval() -> None:
    st = status(last_drill=None)
    early = assess(st, POLICY, now=T0 + HOUR, started=T0)
    assert early.reasons == [] and early.notes == ["no drill yet"]
    late = assess(st, POLICY, now=T0 + 25 * HOUR, started=T0)
    assert late.reasons == ["no drill yet after 25.0 h"] and late.began == T0 + 24 * HOUR


def test_no_drill_needed_without_an_upload_or_with_drills_off() -> None:
    assert (
        assess(
            status(last_drill=None, last_upload=None), POLICY, now=T0 + 99 * HOUR, started=T0
        ).reasons
        == []
    )
    off = SafetyPolicy(debounce_seconds=2.0, drill_interval_hours=0)
    found = assess(status(last_drill=None), off, now=T0 + 99 * HOUR, started=T0)
    assert found.reasons == [] and found.notes == []


def test_since_tracks_transitions() -> None:
    tracker = SafetyTracker(started=T0)
    safe = assess(status(), POLICY, now=T0 + 10, started=T0)
    assert tracker.update(safe, now=T0 + 10) == {
        "safe": True,
        "since": T0,
        "reasons": [],
        "notes": [],
    }
    assert tracker.update(safe, now=T0 + 20)["since"] == T0  # unchanged verdict, same since
    degraded = assess(status(degraded_reason="cloud: down"), POLICY, now=T0 + 30, started=T0)
    out = tracker.update(degraded, now=T0 + 30)
    assert out["safe"] is False and out["since"] == T0 + 30
    assert tracker.update(degraded, now=T0 + 90)["since"] == T0 + 30
    assert tracker.update(safe, now=T0 + 100)["since"] == T0 + 100


def test_since_dates_back_to_when_a_reason_began_but_not_before_the_last_verdict() -> None:
    tracker = SafetyTracker(started=T0)
    tracker.update(assess(status(), POLICY, now=T0 + 10, started=T0), now=T0 + 10)
    age = 2.0 + 30.0 + PASS_ALLOWANCE_SECONDS + 50
    late = assess(status(oldest_pending_age_seconds=age), POLICY, now=T0 + 500, started=T0)
    assert tracker.update(late, now=T0 + 500)["since"] == T0 + 450
    fresh = SafetyTracker(started=T0)
    very_late = assess(status(oldest_pending_age_seconds=10 * HOUR), POLICY, now=T0 + 5, started=T0)
    assert fresh.update(very_late, now=T0 + 5)["since"] == T0  # never before the daemon started


def test_unsafe_for_a_target_down_dates_from_when_it_went_down() -> None:
    """Without a service manager nothing asks for the verdict between two ``status`` calls:
    a bucket down since T0+100 read at T0+3600 said UNSAFE since T0+3600."""
    tracker = SafetyTracker(started=T0)
    tracker.update(assess(status(), POLICY, now=T0 + 10, started=T0), now=T0 + 10)
    down = status(degraded_reason="cloud: down", degraded_since=T0 + 100)
    out = tracker.update(assess(down, POLICY, now=T0 + 3600, started=T0), now=T0 + 3600)
    assert out["safe"] is False and out["since"] == T0 + 100


def test_first_line_of_status() -> None:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(T0))
    assert (
        safety_line({"safe": True, "since": T0, "reasons": [], "notes": []}) == f"safe since {when}"
    )
    safe_note = {"safe": True, "since": T0, "reasons": [], "notes": ["no drill yet"]}
    assert safety_line(safe_note) == f"safe since {when} (no drill yet)"
    unsafe = {"safe": False, "since": T0, "reasons": ["degraded: cloud: down", "x"], "notes": []}
    assert safety_line(unsafe) == f"UNSAFE since {when}: degraded: cloud: down; x"
    assert safety_line(None) is None and safety_line({"safe": "yes"}) is None
    st = {"state": "idle", "safety": unsafe, "version": "1", "pid": 1}
    assert (
        render_status(st, now=T0).splitlines()[0]
        == f"UNSAFE since {when}: degraded: cloud: down; x"
    )
    assert render_status({"state": "idle"}, now=T0).startswith("akoshad ")


def test_changes_the_queue_could_not_take_are_unsafe() -> None:
    # the state's disk full: the change is held in memory and retried, so the queue's oldest
    # change stays young while nothing is uploaded; status --check failed, the line said safe
    why = "1 change(s) could not be recorded on the queue (database or disk is full)"
    found = assess(status(unrecorded=why), POLICY, now=T0, started=T0 - HOUR)
    assert found.reasons == [f"{why}: not uploaded until they are"]
    assert not assess(status(unrecorded=None), POLICY, now=T0, started=T0 - HOUR).reasons


def test_drill_overdue_is_the_verdict_s_late_drill_but_not_a_failed_one() -> None:
    """What the webhook alerts announce as ``drill_overdue``: no good drill within two
    intervals, or none yet an interval after the start; a failed drill is the drill
    event's to tell."""
    from akoshad.runtime.safety import SafetyPolicy, drill_overdue

    daily, now = SafetyPolicy(2.0, 0.0, 24.0), 1_800_000_000.0
    upload = {"last_upload": {"upload_id": "u"}}
    old = {**upload, "last_drill": {"ok": True, "at": now - 50 * 3600}}
    assert drill_overdue(old, daily, now=now, started=now - 60) == "no good drill for 50.0 h"
    failed = {**upload, "last_drill": {"ok": False, "at": now - 50 * 3600, "problems": ["x"]}}
    assert drill_overdue(failed, daily, now=now, started=now - 60) is None
    assert drill_overdue(upload, daily, now=now, started=now - 25 * 3600) == (
        "no drill yet after 25.0 h"
    )
    assert drill_overdue(upload, daily, now=now, started=now - 3600) is None
    assert drill_overdue(old, SafetyPolicy(2.0), now=now, started=now - 60) is None  # drills off
