"""An idle watch wakes a few times a second, not twenty, and still sees a change at once
and stops quickly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from pathlib import Path

from akoshad.pipeline.debounce import Kind
from akoshad.pipeline.storefiles import PathFilter
from akoshad.pipeline.watch import StoreWatcher


class CountingEvent(asyncio.Event):
    """The watch's stop event, counting its looks (watchfiles looks once per step)."""

    def __init__(self) -> None:
        super().__init__()
        self.looks = 0

    def is_set(self) -> bool:
        self.looks += 1
        return super().is_set()


async def test_an_idle_watch_wakes_a_few_times_a_second(tmp_path: Path) -> None:
    """watchfiles' step was 50 ms: the watch thread woke (and took the GIL) 20 times a
    second with nothing to do, about 40 looks in these 2 s."""
    seen: list[tuple[str, Kind]] = []
    added = asyncio.Event()

    def on_change(changes: Iterable[tuple[str, Kind]]) -> None:
        seen.extend(changes)
        if ("a.json", "added") in seen:
            added.set()

    stop = CountingEvent()
    watcher = StoreWatcher(tmp_path, PathFilter(), on_change, lambda: None, stop)
    task = asyncio.create_task(watcher.run())
    try:
        await asyncio.sleep(1.5)  # the watch is set and has answered once
        before = stop.looks
        await asyncio.sleep(2.0)
        assert stop.looks - before <= 14  # 200 ms steps: 10, and the loop's own looks
        (tmp_path / "a.json").write_text("{}")
        await asyncio.wait_for(added.wait(), 3)  # seen within a step or two
    finally:
        t0 = time.monotonic()
        stop.set()
        await asyncio.wait_for(task, 5)
    assert time.monotonic() - t0 < 1.0  # a stop is seen at the next step


async def test_a_change_written_before_a_sync_is_handed_over_first(tmp_path: Path) -> None:
    """A file written just before ``sync --wait`` was still in the watch's hands (a step
    or two) when the sync drained the queue: "sync done" without it. ``handed_over``
    returns once every change made before it reached ``on_change``."""
    seen: list[tuple[str, Kind]] = []
    stop = asyncio.Event()
    watcher = StoreWatcher(tmp_path, PathFilter(), seen.extend, lambda: None, stop)
    task = asyncio.create_task(watcher.run())
    try:
        assert await watcher.handed_over(5)  # the watch set and answered once
        for i in range(5):
            (tmp_path / f"n{i}.json").write_text("{}")
            assert await watcher.handed_over(5)
            assert (f"n{i}.json", "added") in seen
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert await watcher.handed_over(0)  # nothing watched: at once
