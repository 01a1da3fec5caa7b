"""Memory of passes over a store of many files: a pass keeps no captures once it is over,
and a store past ``CLAIM_ALL`` files is taken ``CLAIM_BATCH`` files a pass (a real local
target and state database)."""

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
from akoshad.store import queue
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


async def test_a_store_past_claim_all_files_is_uploaded_claim_batch_files_a_pass(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue, "CLAIM_ALL", 4)
    monkeypatch.setattr(queue, "CLAIM_BATCH", 2)
    await rig.add("a.json", "b.json", "c.json", "d.json")  # at most CLAIM_ALL: one upload
    ok, reports = await rig.drain.until_empty()
    assert ok and [r.claimed for r in reports] == [4] and reports[0].upload_id
    await rig.add("e.json")  # 4 in the ledger, 1 due: the pass takes it
    ok, reports = await rig.drain.until_empty()
    assert ok and [r.claimed for r in reports] == [1]
    names = [f"n{i}.json" for i in range(5)]
    await rig.add(*names)  # 5 in the ledger, 5 due: 2 a pass, drained whole
    ok, reports = await rig.drain.until_empty()
    assert ok and [r.claimed for r in reports] == [2, 2, 1]
    assert all(r.upload_id for r in reports) and await rig.state.queue_depth() == 0
    ledger = await rig.state.ledger("local")
    assert set(names) <= set(ledger) and len(ledger) == 10


async def test_the_claim_limit_counts_the_biggest_ledger_and_the_rows_due(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queue, "CLAIM_ALL", 10)
    monkeypatch.setattr(queue, "CLAIM_BATCH", 3)
    await rig.state.enqueue([(f"f{i}", "added") for i in range(10)], now=1.0)
    assert len(await rig.state.claim(now=2.0)) == 10  # a store of CLAIM_ALL: whole
    await rig.state.enqueue([(f"g{i}", "added") for i in range(11)], now=3.0)
    assert len(await rig.state.claim(now=4.0)) == 3  # past it: CLAIM_BATCH
    assert len(await rig.state.claim(now=5.0, limit=100)) == 8  # a limit given is kept
