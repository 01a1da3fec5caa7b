"""Retention: restic's forget rules on hand-built timelines, and their properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from akoshad.storage.retention import Retention, Upload, apply_retention

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
ZERO = {"keep_last": 0, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0, "keep_monthly": 0}


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def policy(**keep: int) -> Retention:
    return Retention.model_validate({**ZERO, **keep})


def timeline(*times: str) -> list[Upload]:
    return [Upload(f"u{i:03d}", t(when)) for i, when in enumerate(times)]


def kept_times(uploads: list[Upload], pol: Retention, **kw: object) -> list[str]:
    decision = apply_retention(uploads, pol, now=NOW, **kw)  # type: ignore[arg-type]
    return [k.upload.uploaded_at.strftime("%Y-%m-%d %H:%M") for k in decision.kept]


HOURS = timeline(
    "2026-11-29 10:05", "2026-11-29 10:30", "2026-11-29 11:10", "2026-11-29 11:50",
    "2026-11-29 12:20",
)  # fmt: skip
DAYS = timeline(
    "2026-11-25 09:00", "2026-11-26 09:00", "2026-11-26 18:00", "2026-11-27 09:00",
    "2026-11-28 09:00", "2026-11-28 20:00",
)  # fmt: skip
# 2025-12-28 is a Sunday of ISO week 2025-W52; 2025-12-29..2026-01-04 is ISO week 2026-W01.
WEEKS = timeline("2025-12-21 10:00", "2025-12-28 10:00", "2025-12-29 10:00", "2026-01-04 10:00",
                 "2026-01-05 10:00")  # fmt: skip
MONTHS = timeline("2026-08-31 10:00", "2026-09-01 10:00", "2026-09-15 10:00",
                  "2026-10-31 23:00", "2026-11-02 10:00")  # fmt: skip

CASES = [
    # (name, uploads, policy, kept newest first)
    ("last 3 of 5", HOURS, policy(keep_last=3), ["2026-11-29 12:20", "2026-11-29 11:50",
                                                 "2026-11-29 11:10"]),
    ("last 10 of 5 keeps all", HOURS, policy(keep_last=10), [
        "2026-11-29 12:20", "2026-11-29 11:50", "2026-11-29 11:10", "2026-11-29 10:30",
        "2026-11-29 10:05"]),
    ("hourly 2: newest of each of 2 hours", HOURS, policy(keep_hourly=2),
     ["2026-11-29 12:20", "2026-11-29 11:50"]),
    ("hourly 5 of 3 hours: counts left, the oldest stays", HOURS, policy(keep_hourly=5),
     ["2026-11-29 12:20", "2026-11-29 11:50", "2026-11-29 10:30", "2026-11-29 10:05"]),
    ("daily 3", DAYS, policy(keep_daily=3),
     ["2026-11-28 20:00", "2026-11-27 09:00", "2026-11-26 18:00"]),
    ("daily 10: one a day, plus the oldest", DAYS, policy(keep_daily=10),
     ["2026-11-28 20:00", "2026-11-27 09:00", "2026-11-26 18:00", "2026-11-25 09:00"]),
    ("weekly 2: ISO weeks across the new year", WEEKS, policy(keep_weekly=2),
     ["2026-01-05 10:00", "2026-01-04 10:00"]),
    ("weekly 3", WEEKS, policy(keep_weekly=3),
     ["2026-01-05 10:00", "2026-01-04 10:00", "2025-12-28 10:00"]),
    ("monthly 2", MONTHS, policy(keep_monthly=2), ["2026-11-02 10:00", "2026-10-31 23:00"]),
    ("monthly 3", MONTHS, policy(keep_monthly=3),
     ["2026-11-02 10:00", "2026-10-31 23:00", "2026-09-15 10:00"]),
    ("last 1 + daily 2", DAYS, policy(keep_last=1, keep_daily=2),
     ["2026-11-28 20:00", "2026-11-27 09:00"]),
    ("last 2 + hourly 1: the rules overlap on the newest", HOURS,
     policy(keep_last=2, keep_hourly=1), ["2026-11-29 12:20", "2026-11-29 11:50"]),
    ("hourly 1 + daily 1 + weekly 1 + monthly 1: only the newest", DAYS,
     policy(keep_hourly=1, keep_daily=1, keep_weekly=1, keep_monthly=1),
     ["2026-11-28 20:00"]),
    ("daily 2 + weekly 2", WEEKS, policy(keep_daily=2, keep_weekly=2),
     ["2026-01-05 10:00", "2026-01-04 10:00"]),
    ("daily 1 + monthly 2", MONTHS, policy(keep_daily=1, keep_monthly=2),
     ["2026-11-02 10:00", "2026-10-31 23:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("uploads", "pol", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_rules_on_hand_built_timelines(
    uploads: list[Upload], pol: Retention, expected: list[str]
) -> None:
    assert kept_times(uploads, pol) == expected


def test_reasons_name_every_rule_that_kept_an_upload() -> None:
    decision = apply_retention(DAYS, policy(keep_last=1, keep_daily=2, keep_weekly=1), now=NOW)
    reasons = {k.upload.uploaded_at.strftime("%d %H"): k.reasons for k in decision.kept}
    assert reasons == {
        "28 20": ("last snapshot", "daily snapshot", "weekly snapshot"),
        "27 09": ("daily snapshot",),
    }
    assert [u.uploaded_at.day for u in decision.removed] == [28, 26, 26, 25]


def test_oldest_kept_while_counts_are_left_names_the_rule() -> None:
    decision = apply_retention(HOURS, policy(keep_hourly=5), now=NOW)
    assert decision.kept[-1].upload.uploaded_at == t("2026-11-29 10:05")
    assert decision.kept[-1].reasons == ("hourly snapshot",)


def test_default_policy_on_a_month_of_half_hourly_uploads() -> None:
    start = t("2026-11-01 00:00")
    uploads = [Upload(f"u{i:05d}", start + timedelta(minutes=30 * i)) for i in range(48 * 29)]
    decision = apply_retention(uploads, Retention(), now=NOW)
    # 24 hourly (hh:30 of the last 24 hours) + the 5 hh:00 among the 10 latest + 28 daily
    # (the 29th, the newest, is an hourly one) + the oldest (daily counts are left); the
    # weekly ones are all daily ones already.
    assert len(decision.kept) == 24 + 5 + 28 + 1
    assert decision.kept[-1].upload.upload_id == "u00000"


def test_empty_policy_and_disabled_keep_everything() -> None:
    empty = apply_retention(DAYS, policy(), now=NOW)
    assert len(empty.kept) == len(DAYS) and not empty.removed
    assert {k.reasons for k in empty.kept} == {("policy is empty",)}
    off = apply_retention(DAYS, Retention(enabled=False, keep_last=1), now=NOW)
    assert len(off.kept) == len(DAYS) and not off.removed
    assert {k.reasons for k in off.kept} == {("retention disabled",)}


def test_future_uploads_are_apart_never_removed_and_never_counted() -> None:
    uploads = [*DAYS, Upload("zz-future", NOW + timedelta(days=3))]
    decision = apply_retention(uploads, policy(keep_last=1), now=NOW)
    assert [u.upload_id for u in decision.future] == ["zz-future"]
    assert [k.upload.uploaded_at for k in decision.kept] == [t("2026-11-28 20:00")]
    assert "zz-future" in decision.keep_ids and "zz-future" not in decision.removed_ids


def test_periods_are_utc_by_default_and_follow_tz() -> None:
    uploads = timeline("2026-11-29 20:00", "2026-11-29 21:30", "2026-11-29 22:30")
    # UTC: one day, so the newest, then the oldest (counts left).
    assert kept_times(uploads, policy(keep_daily=2)) == ["2026-11-29 22:30", "2026-11-29 20:00"]
    # UTC+2: 22:30Z and 21:30Z fall on two different local days.
    plus2 = timezone(timedelta(hours=2))
    assert kept_times(uploads, policy(keep_daily=2), tz=plus2) == [
        "2026-11-29 22:30",
        "2026-11-29 21:30",
    ]


def test_dst_fall_back_hour_is_one_local_hour() -> None:
    # 2026-10-25 in Paris: 02:00-03:00 local happens twice (00:xxZ and 01:xxZ).
    uploads = timeline("2026-10-25 00:10", "2026-10-25 00:50", "2026-10-25 01:10")
    paris = ZoneInfo("Europe/Paris")
    assert kept_times(uploads, policy(keep_hourly=1), tz=paris) == ["2026-10-25 01:10"]
    assert kept_times(uploads, policy(keep_hourly=2), tz=paris) == [
        "2026-10-25 01:10",
        "2026-10-25 00:10",  # one local hour only: the oldest is kept, counts being left
    ]


def test_naive_times_are_utc_and_ties_break_on_the_id() -> None:
    same = datetime(2026, 11, 29, 10, 0)
    decision = apply_retention(
        [("b", same), ("a", same), ("c", same)], policy(keep_last=1), now=NOW
    )
    assert [k.upload.upload_id for k in decision.kept] == ["c"]
    assert [u.upload_id for u in decision.removed] == ["b", "a"]


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        apply_retention([("a", NOW), ("a", NOW - timedelta(hours=1))], Retention(), now=NOW)


def test_no_uploads() -> None:
    decision = apply_retention([], Retention(), now=NOW)
    assert decision.kept == () and decision.removed == () and decision.future == ()


def test_retention_model_defaults_and_bounds() -> None:
    r = Retention()
    assert (r.keep_last, r.keep_hourly, r.keep_daily, r.keep_weekly, r.keep_monthly) == (
        10, 24, 30, 52, 0,
    )  # fmt: skip
    assert r.prune_interval_hours == 24.0 and r.enabled is True
    assert r.describe() == (
        "keep 10 latest, 24 hourly, 30 daily, 52 weekly uploads (the default policy: no "
        "retention setting is configured)"
    )
    assert Retention(keep_last=10).describe() == (
        "keep 10 latest, 24 hourly, 30 daily, 52 weekly uploads"
    )
    assert Retention(prune_interval_hours=0.5).prune_interval_hours == 0.5
    for bad in ({"keep_last": -1}, {"keep_daily": "x"}, {"prune_interval_hours": -1},
                {"prune_interval_hours": float("nan")}, {"keep_yearly": 1}):  # fmt: skip
        with pytest.raises(ValidationError):
            Retention.model_validate(bad)
    with pytest.raises(ValidationError):
        r.keep_last = 3


# ---- properties ------------------------------------------------------------------------

BASE = datetime(2026, 1, 1, tzinfo=UTC)
times = st.integers(min_value=0, max_value=400 * 24 * 60).map(lambda m: BASE + timedelta(minutes=m))
uploads_st = st.lists(times, max_size=60).map(
    lambda ts: [Upload(f"id{i:03d}", when) for i, when in enumerate(ts)]
)
counts = st.integers(min_value=0, max_value=8)
policies = st.builds(
    Retention,
    keep_last=counts, keep_hourly=counts, keep_daily=counts, keep_weekly=counts,
    keep_monthly=counts, enabled=st.booleans(),
)  # fmt: skip
PNOW = BASE + timedelta(days=300)  # some generated uploads are in the future


def _period(rule: str, when: datetime, nr: int) -> object:
    iso = when.isocalendar()
    return {
        "keep_last": nr,
        "keep_hourly": (when.year, when.month, when.day, when.hour),
        "keep_daily": when.date(),
        "keep_weekly": (iso.year, iso.week),
        "keep_monthly": (when.year, when.month),
    }[rule]


def oracle(uploads: list[Upload], pol: Retention) -> set[str]:
    """restic's rule, restated: per rule, the newest of each of the first N periods, and
    the oldest upload when fewer than N periods start before it."""
    past = sorted((u for u in uploads if u.uploaded_at <= PNOW),
                  key=lambda u: (u.uploaded_at, u.upload_id), reverse=True)  # fmt: skip
    rules = {name: getattr(pol, name) for name in ZERO}
    if not pol.enabled or not any(rules.values()):
        return {u.upload_id for u in past}
    keep: set[str] = set()
    for name, n in rules.items():
        if not n:
            continue
        heads = [i for i, u in enumerate(past)
                 if i == 0 or _period(name, u.uploaded_at, i)
                 != _period(name, past[i - 1].uploaded_at, i - 1)]  # fmt: skip
        keep |= {past[i].upload_id for i in heads[:n]}
        if past and len([i for i in heads if i < len(past) - 1]) < n:
            keep.add(past[-1].upload_id)
    return keep


@settings(max_examples=300, deadline=None)
@given(uploads_st, policies)
def test_matches_a_restatement_of_restic(uploads: list[Upload], pol: Retention) -> None:
    decision = apply_retention(uploads, pol, now=PNOW)
    assert {k.upload.upload_id for k in decision.kept} == oracle(uploads, pol)


@settings(max_examples=300, deadline=None)
@given(uploads_st, policies)
def test_partition_newest_kept_and_keep_last(uploads: list[Upload], pol: Retention) -> None:
    decision = apply_retention(uploads, pol, now=PNOW)
    kept = [k.upload.upload_id for k in decision.kept]
    removed = [u.upload_id for u in decision.removed]
    future = [u.upload_id for u in decision.future]
    assert sorted(kept + removed + future) == sorted(u.upload_id for u in uploads)
    assert all(u.uploaded_at > PNOW for u in decision.future)
    past = [u for u in uploads if u.uploaded_at <= PNOW]
    if past:
        newest = max(past, key=lambda u: (u.uploaded_at, u.upload_id))
        assert newest.upload_id in kept
    assert len(kept) >= min(pol.keep_last, len(past))
    assert all(k.reasons for k in decision.kept)


@settings(max_examples=300, deadline=None)
@given(uploads_st, policies)
def test_idempotent(uploads: list[Upload], pol: Retention) -> None:
    first = apply_retention(uploads, pol, now=PNOW)
    survivors = [k.upload for k in first.kept] + list(first.future)
    again = apply_retention(survivors, pol, now=PNOW)
    assert again.removed == ()


@settings(max_examples=300, deadline=None)
@given(uploads_st, policies, st.sampled_from(sorted(ZERO)), st.integers(1, 5))
def test_raising_a_count_never_removes_more(
    uploads: list[Upload], pol: Retention, rule: str, more: int
) -> None:
    if pol.is_empty():
        return  # raising a count from an empty policy starts removing, as in restic
    raised = pol.model_copy(update={rule: getattr(pol, rule) + more})
    before = apply_retention(uploads, pol, now=PNOW).removed_ids
    after = apply_retention(uploads, raised, now=PNOW).removed_ids
    assert after <= before
