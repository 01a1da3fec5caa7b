"""The age of a pending change counts from when it was first seen."""

from __future__ import annotations

from pathlib import Path

import pytest

from akoshad.targets.local import LocalTarget
from tests.f2_rig import close_rig, open_rig, rig_settings

SID = "pendingage"


async def test_a_change_released_by_max_delay_keeps_its_age(tmp_path: Path) -> None:
    """A file that never went quiet is released to the queue by ``max_delay_seconds``: its
    queued change is dated by its first event in the debouncer, so the age of the oldest
    pending change (status, metrics, behind, safe) goes on growing instead of restarting."""
    import time

    settings = rig_settings(tmp_path, SID)
    rig = await open_rig(settings, LocalTarget(tmp_path / "outbox"), tmp_path / "state.db")
    try:
        rig.write("busy.json", b"{}")
        rig.write("calm.json", b"{}")
        now = time.monotonic()
        rig.feed.debouncer.touch("busy.json", "modified", now - 50)
        rig.feed.debouncer.touch("busy.json", "modified", now)  # never quiet
        rig.feed.debouncer.touch("calm.json", "modified", now - 5)
        await rig.feed.flush()
        rows = {i.path: i.first_seen for i in await rig.state.queue_items()}
        assert rows["busy.json"] == pytest.approx(time.time() - 50, abs=2)
        assert rows["calm.json"] == pytest.approx(time.time() - 5, abs=2)
        oldest = await rig.state.oldest_queued()
        assert oldest is not None and time.time() - oldest == pytest.approx(50, abs=2)
    finally:
        await close_rig(rig)
