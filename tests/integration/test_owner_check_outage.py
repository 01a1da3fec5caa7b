"""An S3 outage that the owner check meets first (the daemon was idle longer than the
check's interval, so the pass's first request is the owner record's GET): the cloud's
circuit breaker hears it as it hears a failed upload. Before, such a pass returned before
the breaker was told, so the circuit stayed closed for the whole outage and every pass
(one each 10 s, whatever the breaker's interval) sent the dead endpoint a check again."""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from akoshad.pipeline.chain import BreakerState
from akoshad.runtime.wiring import wire
from tests.s3server import WeedServer

pytestmark = pytest.mark.s3


async def test_an_outage_first_met_by_the_owner_check_opens_the_circuit(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "notes.md").write_text("first\n")
    settings = s3.settings(
        system_id,
        home=tmp_path,
        data_dir=str(store),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        cloud_sync={"max_retries": 0},
    )
    try:
        async with AsyncExitStack() as stack:
            p = await wire(settings, stack, stop_event=asyncio.Event(), wake=asyncio.Event())
            stack.push_async_callback(p.owners.close)
            assert p.cloud is not None and p.drain.owners is not None
            await p.cloud.start(clean_up=False)
            stack.push_async_callback(p.cloud.target.close)

            async def pass_of_a_change(n: int) -> None:
                (store / "notes.md").write_text(f"change {n}\n")
                await p.state.requeue("notes.md", time.time(), "changed")
                await p.drain.run_pass()

            await pass_of_a_change(0)
            assert p.cloud.breaker.state is BreakerState.CLOSED
            assert s3.keys(f"systems/{system_id}/uploads/"), "the first upload landed"
            owner = await p.drain.owners.ownership(p.cloud.target)
            owner.interval = 0.0  # the owner record is read again by every pass (idle daemon)
            s3.stop()
            for n in range(1, 4):  # the breaker opens after 3 failures in a row
                await pass_of_a_change(n)
            assert p.cloud.breaker.state is BreakerState.OPEN
            assert not p.cloud.checked  # the read-only check comes first once it is back
            status = p.stats.target("cloud")
            assert not status.available and status.last_error
    finally:
        if s3.proc is None:
            s3.start()
