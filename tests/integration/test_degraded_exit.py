"""Trouble that a service manager and a webhook receiver can see: degraded/recovered events,
and ``degraded_fail_after_minutes`` making the daemon exit non-zero by itself."""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from pathlib import Path

from akoshad.names import EXIT_DEGRADED
from tests.helpers import start_daemon, stop_daemon, wait_for
from tests.integration.test_pipeline_local import Setup
from tests.s3server import WeedServer
from tests.storegen import make_store
from tests.webhook_receiver import Received, Receiver


def test_degraded_too_long_exits_nonzero_by_itself(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    rx = Receiver().start()
    try:
        # 0.05 min = 3 s of continuous degradation
        s = Setup(
            tmp_path,
            cloud_sync=s3.cloud_sync(system_id, cloud_bucket="no-such-bucket-here"),
            degraded_fail_after_minutes=0.05,
            webhooks=[{"url": rx.url()}],
        )
        make_store(s.store)
        log = tmp_path / "d.log"
        t0 = time.monotonic()
        proc = start_daemon(s.config, s.env, log)
        try:
            code = proc.wait(40)
        finally:
            if proc.poll() is None:
                stop_daemon(proc)
        elapsed = time.monotonic() - t0
        text = log.read_text()
        assert code == EXIT_DEGRADED, text
        assert 3.0 <= elapsed < 40, elapsed
        assert "degraded_fail_after_minutes is 0.05: exiting with code 69" in text
        assert "no-such-bucket-here" in text and "Traceback" not in text
        assert "stopped;" in text  # the clean shutdown path ran (queue persisted)
        (degraded,) = wait_for(lambda: rx.events("degraded"), 10)
        assert degraded.payload["target"] == "cloud"
        assert "no-such-bucket-here" in degraded.payload["error"]
    finally:
        rx.stop()


def test_local_target_trouble_sends_failure_degraded_then_recovered(tmp_path: Path) -> None:
    rx = Receiver(secret="k3y-deg-test").start()
    try:
        s = Setup(
            tmp_path,
            webhooks=[{"url": rx.url(), "secret": "k3y-deg-test"}],
            degraded_fail_after_minutes=0,  # never: trouble is reported, the daemon stays
            cloud_sync={"system_id": "testbox", "retry_backoff_seconds": 0.2},
            # one upload per change: paced at the default 30 s, the failing upload came
            # just when the 30 s wait for its event ran out (a flake on a loaded machine)
            min_upload_interval_seconds=0,
        )
        make_store(s.store)
        proc = start_daemon(s.config, s.env, tmp_path / "d.log")
        try:
            wait_for(lambda: rx.events("upload"), 30)
            uploads = s.outbox / "systems" / "testbox" / "uploads"
            aside = tmp_path / "aside"
            shutil.move(uploads, aside)
            uploads.write_text("not a directory")  # every new upload fails now
            (s.store / "akosha_sync_state.json").write_text('{"changed": 3}')
            (failure,) = wait_for(lambda: _pass_failures(rx)[:1], 30)
            assert failure.payload["failed"] >= 1 and failure.payload["error"]
            # the last upload's manifest moved aside with it: the target looks emptied
            (emptied,) = [r for r in rx.events("failure") if "kind" in r.payload]
            assert emptied.payload["kind"] == "target_emptied"
            (degraded,) = wait_for(lambda: rx.events("degraded"), 10)
            assert degraded.payload["target"] == "local" and degraded.payload["error"]
            time.sleep(1.0)
            uploads.unlink()
            shutil.move(aside, uploads)
            # a file in the outbox's way is a permanent error: the next change tries again
            (s.store / "akosha_sync_state.json").write_text('{"changed": 4}')
            (recovered,) = wait_for(lambda: rx.events("recovered"), 60)
            assert recovered.payload["target"] == "local"
            assert recovered.payload["after_seconds"] >= 1.0
            wait_for(lambda: len(rx.events("upload")) >= 2, 10)
            assert proc.poll() is None
            assert all(r.signature_ok for r in rx.events())
            names = [r.payload["event"] for r in rx.events()]
            assert names.index("degraded") < names.index("recovered")
        finally:
            assert stop_daemon(proc) == 0
    finally:
        rx.stop()


def test_a_local_outbox_that_keeps_failing_is_announced_once_per_kind(tmp_path: Path) -> None:
    """A local outbox that refuses every upload while the store keeps changing (a full
    disk fails a pass at every change: some 2,900 ``failure`` events a day): one ``failure``
    event and one ERROR line for the run of failures, not one per failed pass; a new kind of
    failure gets its own at once; when an upload works again, one INFO line and the
    ``recovered`` event."""
    rx = Receiver().start()
    try:
        s = Setup(
            tmp_path,
            webhooks=[{"url": rx.url(), "events": ["failure", "recovered", "upload"]}],
            degraded_fail_after_minutes=0,
            cloud_sync={"system_id": "testbox", "retry_backoff_seconds": 0.2},
            min_upload_interval_seconds=0,
        )
        make_store(s.store)
        log = tmp_path / "d.log"
        proc = start_daemon(s.config, s.env, log)
        failed = 0

        def fail_passes(n: int) -> None:
            nonlocal failed
            for _ in range(n):  # a new change each time: a pass each time
                failed += 1
                (s.store / "notes.md").write_text(f"change {failed}: {os.urandom(8).hex()}")
                wait_for(functools.partial(_failed_at_least, s, failed), 30)

        try:
            wait_for(lambda: rx.events("upload"), 30)
            systems = s.outbox / "systems" / "testbox"
            in_the_way = [systems / "uploads", systems / "packs"]
            for path in in_the_way:
                shutil.move(path, tmp_path / path.name)
            in_the_way[0].write_text("not a directory")  # every upload fails there now
            fail_passes(5)
            in_the_way[1].write_text("not a directory")  # earlier: another kind of failure
            in_the_way[0].unlink()
            shutil.move(tmp_path / "uploads", in_the_way[0])
            fail_passes(3)
            in_the_way[1].unlink()
            shutil.move(tmp_path / "packs", in_the_way[1])
            (s.store / "notes.md").write_text("the outbox takes uploads again")
            (recovered,) = wait_for(lambda: rx.events("recovered"), 60)
            assert recovered.payload["target"] == "local"
            wait_for(lambda: len(rx.events("upload")) >= 2, 10)
        finally:
            assert stop_daemon(proc) == 0
        failures = [r.payload for r in _pass_failures(rx)]
        assert len(failures) == 2, failures
        assert "uploads" in failures[0]["error"] and "packs" in failures[1]["error"]
        assert failures[1]["repeated"] == 4  # the failed passes not announced one by one
        text = log.read_text()
        assert text.count("upload to local failed:") == 2, text
        assert text.count(f"upload to local works again after {failed} failed pass(es)") == 1
        assert "Traceback" not in text
    finally:
        rx.stop()


def _pass_failures(rx: Receiver) -> list[Received]:
    """The ``failure`` events of failed passes (not those with a ``kind``: the last upload's
    manifest moved aside looks like an emptied target, ``target_emptied``)."""
    return [r for r in rx.events("failure") if "kind" not in r.payload]


def _failed_at_least(s: Setup, n: int) -> bool:
    """The running daemon's ``counters.failures`` is ``n`` or more."""
    res = s.cli("status", "--json")
    return res.returncode == 0 and int(json.loads(res.stdout)["counters"]["failures"]) >= n
