"""Repacking: which packs to rewrite, the new packs, and where their chunks land.

A pack is the concatenation of stored chunk bodies; a chunk is ``(pack, offset, length)``.
A new pack is the live ranges of its source packs, concatenated in order (``NewPack.layout``);
``NewPack.relocate`` gives a chunk's offset in it, for rewriting the references to it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

from akoshad.storage.prune_refs import ChunkRef

REPACK_RATIO = 0.8
# bytes one prune's repack moves at most: the source packs read whole, and their live bytes
# written again (the packs that gain most first; the rest at the next prune). A prune holds
# the pass lock, so its length stays bounded also on a slow link
REPACK_BUDGET = 1024 * 1024 * 1024
STORED_BOUND = 1.2
Range = tuple[int, int]  # (offset, length)


@dataclass(frozen=True)
class PackRepack:
    """A pack to repack: its size and the merged ``(offset, length)`` ranges still live."""

    key: str
    size: int
    live_ranges: tuple[Range, ...]

    @property
    def live_bytes(self) -> int:
        return sum(length for _, length in self.live_ranges)


@dataclass(frozen=True)
class NewPack:
    """One pack to write: the live ranges of ``sources``, concatenated in order."""

    sources: tuple[PackRepack, ...]

    @property
    def live_bytes(self) -> int:
        return sum(s.live_bytes for s in self.sources)

    def layout(self) -> list[tuple[str, int, int, int]]:
        """``(source pack, offset, length, offset in the new pack)`` for each copied range."""
        out: list[tuple[str, int, int, int]] = []
        base = 0
        for source in self.sources:
            for offset, length in source.live_ranges:
                out.append((source.key, offset, length, base))
                base += length
        return out

    @cached_property
    def _spans(self) -> dict[str, tuple[list[int], list[tuple[int, int, int]]]]:
        spans: dict[str, tuple[list[int], list[tuple[int, int, int]]]] = {}
        for key, offset, length, base in self.layout():
            starts, items = spans.setdefault(key, ([], []))
            starts.append(offset)
            items.append((offset, length, base))
        return spans

    def relocate(self, ref: ChunkRef) -> int | None:
        """The offset of ``ref`` in the new pack, or None when it is not copied into it."""
        starts, items = self._spans.get(ref.pack, ([], []))
        if ref.length == 0 and any(s.key == ref.pack for s in self.sources):
            return 0  # an empty chunk: any offset reads nothing
        i = bisect.bisect_right(starts, ref.offset) - 1
        if i < 0:
            return None
        offset, length, base = items[i]
        if ref.offset + ref.length > offset + length:
            return None
        return base + ref.offset - offset


def merge_ranges(ranges: Iterable[Range]) -> tuple[Range, ...]:
    """Sorted, merged ``(offset, length)`` ranges (overlapping or touching ones joined)."""
    merged: list[list[int]] = []
    for offset, length in sorted(r for r in ranges if r[1] > 0):
        if merged and offset <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], offset + length)
        else:
            merged.append([offset, offset + length])
    return tuple((start, end - start) for start, end in merged)


def choose_repacks(
    pack_ranges: Mapping[str, list[Range]],
    listing: Mapping[str, int],
    whole_bytes: int,
    ratio: float,
    bound: float,
    budget: int = REPACK_BUDGET,
) -> list[PackRepack]:
    """Packs to repack: live share below ``ratio``, then the least live ones until the live
    data takes at most ``bound`` times the bytes referenced (``whole_bytes`` of objects plus
    the packs' live bytes), the least live first, within ``budget`` bytes moved (each pack
    read whole and its live bytes written: at least one pack; the others wait for the next
    prune). Missing packs, and packs referenced past their end, are left."""
    candidates: list[PackRepack] = []
    for key, ranges in pack_ranges.items():
        size = listing.get(key)
        merged = merge_ranges(ranges)
        if not size or any(o < 0 or o + n > size for o, n in merged):
            continue  # missing, or references past its end: never rewrite what we can't copy
        candidates.append(PackRepack(key, size, merged))
    candidates.sort(key=lambda p: (p.live_bytes / p.size, p.key))
    chosen = [p for p in candidates if p.live_bytes < ratio * p.size]
    referenced = whole_bytes + sum(p.live_bytes for p in candidates)
    stored = whole_bytes + sum(p.size for p in candidates)
    stored -= sum(p.size - p.live_bytes for p in chosen)
    for pack in candidates[len(chosen) :]:
        if stored <= bound * referenced or pack.live_bytes == pack.size:
            break
        chosen.append(pack)
        stored -= pack.size - pack.live_bytes
    within: list[PackRepack] = []
    moved = 0
    for pack in chosen:  # least live first: the most freed per byte moved
        cost = pack.size + pack.live_bytes  # read whole, live bytes written again
        if within and moved + cost > budget:
            break
        within.append(pack)
        moved += cost
    return within


def group_repacks(repacks: list[PackRepack], target: int) -> tuple[NewPack, ...]:
    """The new packs: sources grouped in key order, up to ``target`` live bytes each."""
    groups: list[list[PackRepack]] = []
    total = 0
    for pack in sorted(repacks, key=lambda p: p.key):
        if not groups or total + pack.live_bytes > target:
            groups.append([])
            total = 0
        groups[-1].append(pack)
        total += pack.live_bytes
    return tuple(NewPack(tuple(g)) for g in groups)
