#!/usr/bin/env python3
"""How many uploads the retention policy keeps over simulated weeks of use.

Uploads every ``--every`` minutes during work hours (9:00-18:00, Monday to Friday by
default), none at night; the daemon prunes every ``prune_interval_hours``. Prints, per
simulated week, the uploads made so far and the uploads kept after the last prune. The
bytes the bucket holds over the same days (real format-2 uploads, the real prune with its
repacks): ``python bench/prune_bench.py --format 2 --days 30``.

python bench/retention_sim.py [--days 30] [--every 30] [--weekends]
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from akoshad.storage.retention import Retention, Upload, apply_retention


def simulate(
    days: int, every_minutes: int, weekends: bool, policy: Retention
) -> list[tuple[datetime, int, int, int]]:
    """Per prune: (its time, uploads made so far, uploads in the bucket before, after it)."""
    start = datetime(2026, 11, 2, tzinfo=UTC)  # a Monday
    end = start + timedelta(days=days)
    step = timedelta(minutes=every_minutes)
    interval = timedelta(hours=policy.prune_interval_hours or 24)
    kept: list[Upload] = []
    made = 0
    out: list[tuple[datetime, int, int, int]] = []
    now, next_prune = start, start + interval
    while now <= end:
        if now >= next_prune or now == end:
            decision = apply_retention(kept, policy, now=now)
            before = len(kept)
            kept = [k.upload for k in decision.kept] + list(decision.future)
            out.append((now, made, before, len(kept)))
            next_prune += interval
        work_day = weekends or now.weekday() < 5
        if work_day and 9 <= now.hour < 18:
            made += 1
            kept.append(Upload(f"{now:%Y%m%dT%H%M%S}000000Z-{made:06x}", now))
        now += step
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--every", type=int, default=30, help="minutes between uploads")
    parser.add_argument("--weekends", action="store_true", help="work on weekends too")
    args = parser.parse_args()
    policy = Retention()
    print(f"policy: {policy.describe()}, prune every {policy.prune_interval_hours:g} h")
    runs = simulate(args.days, args.every, args.weekends, policy)
    for run in runs:
        when, made, _before, kept = run
        if when.weekday() == 0 or run is runs[-1]:
            print(f"{when:%Y-%m-%d %H:%M}: {made:6d} uploads made, {kept:3d} kept")
    made, kept = runs[-1][1], runs[-1][3]
    peak = max(before for _, _, before, _ in runs)
    print(
        f"after {args.days} days: {made} uploads made, {kept} kept ({kept / made:.1%}); "
        f"at most {peak} in the bucket (just before a prune)"
    )


if __name__ == "__main__":
    main()
