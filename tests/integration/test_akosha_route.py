"""The Akosha route's bookkeeping with the fake Akosha: failures counted, bytes sent, one
line when Akosha answers again, memories held back requeued with a growing backoff."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from loguru import logger

from akoshad.pipeline.chain import CircuitBreaker
from akoshad.pipeline.routes import AkoshaRoute
from akoshad.pipeline.stats import Stats
from tests.akosha_fixtures import AkoshaServer, add_rows
from tests.integration.test_memory_sync import Rig


@pytest.fixture
async def rig(tmp_path: Path, akosha_server: AkoshaServer) -> AsyncIterator[Rig]:
    r = Rig(tmp_path, akosha_server.url)
    try:
        yield r
    finally:
        await r.close()


async def route_of(rig: Rig, stats: Stats, item_retries: int = 2) -> AkoshaRoute:
    breaker = CircuitBreaker("http", failure_threshold=5, reset_timeout=30)
    sync = await rig.sync(breaker=breaker, stats=stats, item_retries=item_retries)
    return AkoshaRoute(sync, breaker, stats, retry_backoff=2.0)


async def test_failures_bytes_and_the_line_when_akosha_answers_again(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), format="{level} {message}")
    try:
        stats = Stats()
        route = await route_of(rig, stats)
        add_rows(rig.snapshot, "conversations_v2", 0, 5)
        await asyncio.to_thread(akosha_server.stop)
        down = await route.deliver(rig.snapshot)
        assert down.error and "cannot connect" in down.error and down.retry_at is not None
        assert stats.counters.failures == 1
        assert stats.targets["http"].available is False
        await asyncio.to_thread(akosha_server.start)
        up = await route.deliver(rig.snapshot)
        assert up.error is None and up.report is not None
        assert up.report["delivered"] == 5 and up.report["bytes_sent"] > 5 * 384 * 4
        assert stats.counters.failures == 1
        again = [line for line in lines if "answers again" in line]
        assert [line.strip() for line in again] == ["INFO target http answers again (Akosha)"]
        await route.deliver(rig.snapshot)  # no outage before it: no second line
        assert len([line for line in lines if "answers again" in line]) == 1
        wait = await route.deliver(rig.snapshot, wait=True)  # circuit open: no new failure
        assert wait.error and stats.counters.failures == 1
    finally:
        logger.remove(sink)


async def test_memories_held_back_fail_the_pass_and_wait_longer_each_time(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    stats = Stats()
    route = await route_of(rig, stats, item_retries=0)
    mid = "testbox:c000001"
    akosha_server.fail({mid: 3}, error="database is locked")
    add_rows(rig.snapshot, "conversations_v2", 0, 2)
    waits = []
    for n in range(3):
        add_rows(rig.snapshot, "reflections_v2", n, n + 1)  # a new memory goes through
        outcome = await route.deliver(rig.snapshot)
        assert outcome.error and "1 memories not stored by Akosha yet" in outcome.error
        assert mid in outcome.error and "database is locked" in outcome.error
        assert outcome.report is not None and outcome.report["held"] == 1
        assert outcome.retry_at is not None
        waits.append(outcome.retry_at - time.time())
    assert 0.9 <= waits[0] <= 2.0 and 3.9 <= waits[2] <= 8.0  # 2 s, then 4 s, then 8 s
    assert stats.counters.failures == 3
    assert stats.targets["http"].available  # Akosha answers: not down
    assert (await route.sync.status())["held"] == 1
    done = await route.deliver(rig.snapshot)
    assert done.error is None and done.retry_at is None
    assert mid in akosha_server.stored()
    assert (await route.sync.status())["held"] == 0


async def test_memories_held_back_are_not_logged_at_every_pass(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    """A memory Akosha keeps not storing, while the store keeps changing (a copy delivered
    at every pass): its warning comes once, not with each pass (at most once an hour:
    ``ReasonLog``), each pass still fails and counts; one line when it is stored (before:
    a WARNING at every pass, for as long as Akosha held it back)."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m).strip()), format="{level} {message}")
    try:
        stats = Stats()
        route = await route_of(rig, stats, item_retries=0)
        mid = "testbox:c000001"
        akosha_server.fail({mid: 10}, error="database is locked")
        add_rows(rig.snapshot, "conversations_v2", 0, 2)
        for n in range(10):
            add_rows(rig.snapshot, "reflections_v2", n, n + 1)  # a new memory goes through
            outcome = await route.deliver(rig.snapshot)
            assert outcome.error and "1 memories not stored by Akosha yet" in outcome.error
        assert stats.counters.failures == 10
        done = await route.deliver(rig.snapshot)
        assert done.error is None and mid in akosha_server.stored()
    finally:
        logger.remove(sink)
    said = [line for line in lines if "not stored" in line or "did not store" in line]
    assert said == [
        f"WARNING 1 memories not stored by Akosha yet, sent again later ({mid}: "
        "database is locked)",
        "INFO the memories Akosha did not store before are stored or skipped now",
    ]
