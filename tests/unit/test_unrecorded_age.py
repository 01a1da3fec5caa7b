"""Changes the queue cannot take (the state's disk full) keep their age: ``status``'s
``oldest_pending_age_seconds`` (``akoshad_oldest_pending_seconds``, the ``behind`` check and
the AkoshadBehind alert) and the queue's ``first_seen`` once they are recorded count from
when they were seen, not from their last retry 2 s ago."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from akoshad.pipeline.feed import ChangeFeed
from akoshad.pipeline.stats import Stats
from akoshad.store.db import StateDB
from akoshad.targets.local import LocalTarget
from tests.f2_rig import rig_settings


@pytest.fixture
async def feed(tmp_path: Path) -> AsyncIterator[ChangeFeed]:
    settings = rig_settings(tmp_path, "age")
    (tmp_path / "store" / "a.json").write_text("{}")
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    target = LocalTarget(tmp_path / "outbox")
    yield ChangeFeed(settings, state, target, Stats())
    await state.close()


async def test_changes_the_queue_cannot_take_keep_their_age(
    feed: ChangeFeed, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_enqueue = feed.state.enqueue

    async def disk_full(*_args: Any, **_kwargs: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    feed.on_change([("a.json", "modified")])
    seen = feed.debouncer.oldest()
    assert seen is not None
    monkeypatch.setattr(feed.state, "enqueue", disk_full)
    for _ in range(3):  # released, refused, held again: three retries later
        await asyncio.sleep(0.05)
        await feed.flush()
        assert feed.unrecorded is not None
    assert feed.debouncer.oldest() == seen  # before: the last retry's time
    monkeypatch.setattr(feed.state, "enqueue", real_enqueue)
    await feed.flush()
    assert feed.unrecorded is None
    first_seen = await feed.state.oldest_queued()
    assert first_seen is not None
    assert abs(first_seen - (seen + time.time() - time.monotonic())) < 0.02
