"""The queue tells the truth: a change is as old as when it was first seen, and a pass
after the state forgot the target holds the whole store, not only what changed since."""

from __future__ import annotations

from pathlib import Path

import pytest

from akoshad.targets.local import LocalTarget
from tests.f2_rig import close_rig, open_rig, rig_settings

SID = "queuetruth"


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


async def test_a_pass_after_the_state_forgot_the_target_compares_the_whole_store_first(
    tmp_path: Path,
) -> None:
    """Whatever made the state forget the target (a drill, a start, a command found the
    last upload gone), a pass planned from the queue alone would hold only the files
    changed since: the pass compares the store with the (emptied) ledger first."""
    from akoshad.runtime.target_identity import _forget_in
    from akoshad.store.ledger import KV_COMPARE_ALL

    settings = rig_settings(tmp_path, SID)
    rig = await open_rig(settings, LocalTarget(tmp_path / "outbox"), tmp_path / "state.db")
    rig.drain.compare_all = rig.feed.reconcile
    try:
        for name in ("a.json", "b.json", "c.json"):
            rig.write(name, b"{}")
        (first,) = await rig.sync()
        assert first.upload_id
        assert len((await rig.manifest(first.upload_id))["metadata"]["files"]) == 3
        await rig.state.transaction(lambda c: _forget_in(c, "local", False))
        rig.write("a.json", b'{"a": 2}')
        await rig.state.enqueue([("a.json", "modified")])  # only what the watcher saw
        _ok, (report,) = await rig.drain.until_empty()
        assert report.upload_id
        manifest = await rig.manifest(report.upload_id)
        assert {f["path"] for f in manifest["metadata"]["files"]} == {"a.json", "b.json", "c.json"}
        assert await rig.state.get_kv(KV_COMPARE_ALL.format(target="local")) is None
    finally:
        await close_rig(rig)
