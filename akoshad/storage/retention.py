"""Which uploads the ``retention:`` policy keeps: restic's ``forget`` rules, exactly.

Uploads are ordered newest first. ``keep_last`` keeps the newest N. Each time rule
(hourly, daily, ISO weekly, monthly) walks the list and keeps the newest upload of each
distinct period until it has kept N of them; while a rule still has counts left when it
reaches the oldest upload, it keeps that one too (restic does the same, to stretch the
history as far back as the counts allow). An upload kept by any rule stays, with every rule
that kept it as its reasons ("last snapshot", "daily snapshot", ... as restic prints them).
When every ``keep_*`` is 0 the policy is empty and everything is kept ("policy is empty"),
as restic does; ``enabled: false`` keeps everything too. The newest upload is always kept.

Uploads whose time is after ``now`` (a clock that was wrong) are never removed and never
count toward a rule: they are returned apart, in ``future``.

Periods are cut in UTC by default, unlike restic (which uses the snapshot's local time):
a daemon's retention then does not shift with DST changes or when a laptop changes time
zone, and two machines restoring the same bucket see the same periods. Pass ``tz`` (e.g.
``ZoneInfo("Europe/Paris")``) for local days and weeks. Naive datetimes are taken as UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Retention(BaseModel):
    """The ``retention:`` configuration group."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keep_last: int = Field(default=10, ge=0)
    keep_hourly: int = Field(default=24, ge=0)
    keep_daily: int = Field(default=30, ge=0)
    keep_weekly: int = Field(default=52, ge=0)
    keep_monthly: int = Field(default=0, ge=0)
    prune_interval_hours: float = Field(default=24.0, ge=0, allow_inf_nan=False)
    enabled: bool = True

    @field_validator(
        "keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", mode="before"
    )
    @classmethod
    def _not_a_switch(cls, value: object) -> object:
        """A count, never ``true``/``false``: YAML's ``keep_daily: yes`` would otherwise
        keep 1 (and ``no`` none), deleting what the user meant to keep."""
        if isinstance(value, bool):
            raise ValueError(
                f"a number of uploads is needed, not {str(value).lower()} (YAML reads yes, no, "
                "on and off as true and false)"
            )
        return value

    def is_empty(self) -> bool:
        """True when no ``keep_*`` rule is set (restic: keep everything)."""
        return not any(rule[0] for rule in _rules(self))

    def rules(self) -> dict[str, int | bool]:
        """What decides which uploads a prune keeps (the counts and ``enabled``; not when
        the daemon prunes): two policies with the same rules prune alike."""
        return {k: v for k, v in self.model_dump().items() if k != "prune_interval_hours"}

    def describe(self) -> str:
        """One line, like restic's: ``keep 10 latest, 24 hourly, ... uploads``."""
        if not self.enabled:
            return "keep all uploads (retention disabled)"
        parts = [f"{count} {word}" for count, _, word, _ in _rules(self) if count]
        line = f"keep {', '.join(parts)} uploads" if parts else "keep all uploads (empty policy)"
        if not self.model_fields_set:  # nothing of the group configured: say so where it
            # shows (prune's output, its log line, last_prune), so that an upgrade from an
            # akoshad without retention does not delete by a policy nobody saw
            line += " (the default policy: no retention setting is configured)"
        return line


@dataclass(frozen=True)
class Upload:
    """One upload: its id and when it was made (aware, or naive = UTC)."""

    upload_id: str
    uploaded_at: datetime


@dataclass(frozen=True)
class Kept:
    """An upload the policy keeps, and every rule that kept it."""

    upload: Upload
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Decision:
    """The outcome of a policy: ``kept``, ``removed`` and ``future``, each newest first."""

    kept: tuple[Kept, ...]
    removed: tuple[Upload, ...]
    future: tuple[Upload, ...]

    @property
    def keep_ids(self) -> frozenset[str]:
        """Every upload that must stay: the kept ones and the future ones."""
        return frozenset(k.upload.upload_id for k in self.kept) | {u.upload_id for u in self.future}

    @property
    def removed_ids(self) -> frozenset[str]:
        return frozenset(u.upload_id for u in self.removed)


Bucker = Callable[[datetime, int], int]

REASON_LAST = "last snapshot"
REASON_EMPTY = "policy is empty"
REASON_DISABLED = "retention disabled"
REASON_NEWEST = "newest upload"


def _always(_: datetime, nr: int) -> int:
    return nr


def _hour(d: datetime, _: int) -> int:
    return d.year * 1_000_000 + d.month * 10_000 + d.day * 100 + d.hour


def _day(d: datetime, _: int) -> int:
    return d.year * 10_000 + d.month * 100 + d.day


def _week(d: datetime, _: int) -> int:
    year, week, _weekday = d.isocalendar()
    return year * 100 + week


def _month(d: datetime, _: int) -> int:
    return d.year * 100 + d.month


def _rules(policy: Retention) -> list[tuple[int, Bucker, str, str]]:
    """(count, period function, word for ``describe``, restic's reason) per rule."""
    return [
        (policy.keep_last, _always, "latest", REASON_LAST),
        (policy.keep_hourly, _hour, "hourly", "hourly snapshot"),
        (policy.keep_daily, _day, "daily", "daily snapshot"),
        (policy.keep_weekly, _week, "weekly", "weekly snapshot"),
        (policy.keep_monthly, _month, "monthly", "monthly snapshot"),
    ]


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _newest_first(uploads: Iterable[Upload]) -> list[Upload]:
    # restic sorts by time (stable); ties are broken by the id so the outcome is stable.
    return sorted(uploads, key=lambda u: (_aware(u.uploaded_at), u.upload_id), reverse=True)


def apply_retention(
    uploads: Iterable[Upload | tuple[str, datetime]],
    policy: Retention,
    *,
    now: datetime | None = None,
    tz: tzinfo = UTC,
) -> Decision:
    """Split ``uploads`` into kept (with reasons), removed, and future ones.

    Raises ``ValueError`` when an upload id appears twice.
    """
    items = [u if isinstance(u, Upload) else Upload(u[0], u[1]) for u in uploads]
    if len({u.upload_id for u in items}) != len(items):
        raise ValueError("duplicate upload id")
    cutoff = _aware(now) if now is not None else datetime.now(UTC)
    future = _newest_first(u for u in items if _aware(u.uploaded_at) > cutoff)
    listed = _newest_first(u for u in items if _aware(u.uploaded_at) <= cutoff)
    if not policy.enabled or policy.is_empty():
        reason = REASON_DISABLED if not policy.enabled else REASON_EMPTY
        return Decision(tuple(Kept(u, (reason,)) for u in listed), (), tuple(future))
    rules = _rules(policy)
    counts = [count for count, _, _, _ in rules]
    last: list[int | None] = [None] * len(rules)
    kept: list[Kept] = []
    removed: list[Upload] = []
    for nr, upload in enumerate(listed):
        local = _aware(upload.uploaded_at).astimezone(tz)
        reasons: list[str] = []
        for i, (_, bucker, _, reason) in enumerate(rules):
            if counts[i] <= 0:
                continue
            value = bucker(local, nr)
            if value != last[i] or nr == len(listed) - 1:
                last[i] = value
                counts[i] -= 1
                reasons.append(reason)
        if nr == 0 and not reasons:  # unreachable with a non-empty policy; kept as a guard
            reasons.append(REASON_NEWEST)
        if reasons:
            kept.append(Kept(upload, tuple(reasons)))
        else:
            removed.append(upload)
    return Decision(tuple(kept), tuple(removed), tuple(future))
