"""A local outbox removed while the daemon runs (a clean-up, a disk unmounted under the
path): no outage is seen, the next write makes the directory again, and the upload after
it must not point at the objects that went with it."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import akoshad, daemon_config, manifests, start_daemon, stop_daemon, wait_for


def test_an_outbox_removed_under_the_daemon_gets_the_whole_store(
    tmp_path: Path, system_id: str
) -> None:
    """Before: the next upload sent the one changed file ('1 file(s) sent, N unchanged'),
    status said safe, and restore --latest failed on every other file until the next
    drill, a day later by default."""
    config, env = daemon_config(tmp_path, system_id, drill_interval_hours=0)
    outbox = tmp_path / "outbox"
    proc = start_daemon(config, env, tmp_path / "d.log")
    try:
        wait_for(lambda: outbox.exists() and manifests(outbox, system_id), 60)
        shutil.rmtree(outbox)
        (tmp_path / "store" / "notes.json").write_text('{"after": "the removal"}')
        wait_for(lambda: outbox.exists() and manifests(outbox, system_id), 60)
    finally:
        assert stop_daemon(proc) == 0
    dest = tmp_path / "back"
    restore = akoshad("restore", "--config", str(config), "--latest", "--dest", str(dest), env=env)
    assert restore.returncode == 0, restore.stdout + restore.stderr
    want = sorted(str(p.relative_to(tmp_path / "store")) for p in (tmp_path / "store").rglob("*"))
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == want
    assert "no longer holds upload" in (tmp_path / "d.log").read_text()


def test_an_outbox_that_cannot_be_listed_fails_as_the_target(
    tmp_path: Path, system_id: str
) -> None:
    """The outbox's path turned into a file (as a disk failing with EIO): the upload fails,
    and so did the clean-up of its objects, whose OSError went past the upload's failure.
    Before: 'drain pass failed: [Errno 20] Not a directory' (the words of a broken
    state_dir), a failure event with that error and failed 0, each pass counted twice in
    failures and never in akoshad_uploads_total{outcome="failed"}."""
    config, env = daemon_config(tmp_path, system_id, drill_interval_hours=0)
    outbox, log = tmp_path / "outbox", tmp_path / "d.log"
    proc = start_daemon(config, env, log)
    try:
        wait_for(lambda: outbox.exists() and manifests(outbox, system_id), 60)
        outbox.rename(tmp_path / "outbox.away")
        outbox.write_text("")
        (tmp_path / "store" / "notes.json").write_text('{"after": "the outbox broke"}')
        wait_for(lambda: "upload to local failed" in log.read_text(), 60)
        outbox.unlink()
        (tmp_path / "outbox.away").rename(outbox)
        wait_for(lambda: "works again" in log.read_text(), 60)
    finally:
        assert stop_daemon(proc) == 0
    text = log.read_text()
    assert "upload to local failed: local target write failed: Not a directory" in text
    assert "drain pass failed" not in text
