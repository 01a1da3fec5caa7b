"""Memory of passes over a store of many files: a pass keeps no captures once it is over
(a real local target and state database)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from akoshad.pipeline.capture.snapshot import Snapshotter
from akoshad.pipeline.drain import Drain
from akoshad.pipeline.stats import Stats
from akoshad.pipeline.upload import Uploader
from akoshad.store.db import StateDB
from akoshad.targets.local import LocalTarget


@dataclass
class Rig:
    store: Path
    state: StateDB
    drain: Drain

    async def add(self, *names: str) -> None:
        for name in names:
            (self.store / name).write_text(f'{{"name": "{name}"}}\n')
        await self.state.enqueue([(name, "added") for name in names])


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    store = tmp_path / "store"
    store.mkdir()
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    target = LocalTarget(tmp_path / "outbox")
    await target.start()
    stats = Stats()
    snapshotter = Snapshotter(store, tmp_path / "state" / "staging")
    uploader = Uploader(
        state=state,
        snapshotter=snapshotter,
        system_id="many",
        stats=stats,
        staging_dir=tmp_path / "state" / "packs",
    )
    drain = Drain(
        state=state,
        snapshotter=snapshotter,
        uploader=uploader,
        stats=stats,
        local=target,
        retry_backoff=0.1,
        clock=lambda: time.time() + 3600,  # every queued row is due
    )
    yield Rig(store, state, drain)
    await target.close()
    await state.close()


async def test_a_pass_keeps_no_captures_once_it_is_over(rig: Rig) -> None:
    """The report of a pass is kept (the daemon's last one until the next pass, every one
    of a drain until its end): a capture per file (~500 bytes) kept with it made a first
    upload of 200,000 files in passes hold all of them in its last pass."""
    await rig.add("a.json", "b.json")
    report = await rig.drain.run_pass()
    assert (
        report is not None
        and report.upload_id
        and sorted(report.files_uploaded)
        == [
            "a.json",
            "b.json",
        ]
    )
    assert report.captures == [] and rig.drain.last_report is report
