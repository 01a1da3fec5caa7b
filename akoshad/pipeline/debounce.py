"""Coalescing of change events: a pure table with an injected clock.

A path is released when it has been quiet for ``quiet`` seconds, or ``max_delay`` seconds
after its first unreleased event even if it never goes quiet. Events on one path combine
by ``COMBINE`` (previous kind, new kind) -> kind; every cell is unit-tested.

The released kind is advice for logs and status: the drain captures whatever is on disk
when it runs, so a combination can never lose a change (a path that ends up missing is a
deletion, one that exists is captured).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["added", "modified", "deleted"]

# (previous, new) -> combined. A rename arrives as deleted(old) + added(new) on two paths.
COMBINE: dict[tuple[Kind, Kind], Kind] = {
    ("added", "added"): "added",
    ("added", "modified"): "added",
    ("added", "deleted"): "deleted",  # created then removed: the drain finds nothing to send
    ("modified", "added"): "modified",
    ("modified", "modified"): "modified",
    ("modified", "deleted"): "deleted",
    ("deleted", "added"): "modified",  # removed then recreated: content may differ
    ("deleted", "modified"): "modified",
    ("deleted", "deleted"): "deleted",
}


@dataclass
class _Pending:
    kind: Kind
    first: float
    last: float
    seen: float  # when the change was first seen (ages, first_seen): ``first`` or earlier


class Debouncer:
    """Holds paths until they are due. Not thread-safe; no I/O; time is passed in."""

    def __init__(self, quiet: float, max_delay: float) -> None:
        if quiet < 0 or max_delay < quiet:
            raise ValueError("need 0 <= quiet <= max_delay")
        self.quiet = quiet
        self.max_delay = max_delay
        self._pending: dict[str, _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def paths(self) -> list[str]:
        return sorted(self._pending)

    def touch(self, path: str, kind: Kind, now: float, seen: float | None = None) -> None:
        """Record an event on ``path`` at time ``now``; ``seen``: the change was seen
        earlier (a released path held again: its age still counts from then, while its
        due time counts from ``now``)."""
        entry = self._pending.get(path)
        first_seen = now if seen is None else min(seen, now)
        if entry is None:
            self._pending[path] = _Pending(kind, now, now, first_seen)
            return
        entry.kind = COMBINE[(entry.kind, kind)]
        entry.last = max(entry.last, now)
        entry.seen = min(entry.seen, first_seen)

    def _due_at(self, entry: _Pending) -> float:
        return min(entry.last + self.quiet, entry.first + self.max_delay)

    def due(self, now: float) -> list[tuple[str, Kind]]:
        """Release and return the paths that are due at ``now``, oldest first."""
        ready = sorted(
            (entry.first, path)
            for path, entry in self._pending.items()
            if self._due_at(entry) <= now
        )
        out: list[tuple[str, Kind]] = []
        for _first, path in ready:
            out.append((path, self._pending.pop(path).kind))
        return out

    def next_deadline(self) -> float | None:
        """When the next path becomes due, or None when nothing is pending."""
        if not self._pending:
            return None
        return min(self._due_at(e) for e in self._pending.values())

    def firsts(self) -> dict[str, float]:
        """When each pending path's change was first seen (its first unreleased event)."""
        return {path: entry.seen for path, entry in self._pending.items()}

    def oldest(self) -> float | None:
        """When the longest-waiting path's change was first seen, or None."""
        return min((e.seen for e in self._pending.values()), default=None)

    def flush(self) -> list[tuple[str, Kind]]:
        """Release everything now (shutdown: persist what was seen to the queue)."""
        out = [(p, e.kind) for p, e in sorted(self._pending.items(), key=lambda i: i[1].first)]
        self._pending.clear()
        return out
