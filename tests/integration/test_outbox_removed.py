"""A local outbox removed while the daemon runs (a clean-up, a disk unmounted under the
path): no outage is seen, the next write makes the directory again, and the upload after
it must not point at the objects that went with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.helpers import akoshad, daemon_config, manifests, start_daemon, stop_daemon, wait_for
from tests.s3server import WeedServer


def test_an_outbox_removed_under_the_daemon_gets_the_whole_store(
    tmp_path: Path, system_id: str
) -> None:
    """Before: the next upload sent the one changed file ('1 file(s) sent, N unchanged'),
    status said safe, and restore --latest failed on every other file until the next
    drill, a day later by default. The directory is not made again (a disk not mounted
    under the path: the store would land on the disk beneath, status safe): the upload
    fails saying so until the directory is there again; made anew, empty, it gets the
    whole store."""
    config, env = daemon_config(tmp_path, system_id, drill_interval_hours=0)
    outbox, log = tmp_path / "outbox", tmp_path / "d.log"
    proc = start_daemon(config, env, log)
    try:
        wait_for(lambda: outbox.exists() and manifests(outbox, system_id), 60)
        shutil.rmtree(outbox)
        (tmp_path / "store" / "notes.json").write_text('{"after": "the removal"}')
        wait_for(lambda: "it is not made again" in log.read_text(), 60)
        assert not outbox.exists()
        outbox.mkdir()
        wait_for(lambda: manifests(outbox, system_id), 60)
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


def test_run_once_never_makes_again_an_outbox_it_uploaded_to(
    tmp_path: Path, system_id: str
) -> None:
    """local_target_dir on a disk that is not mounted (or removed): run --once made the
    directory on the disk beneath, sent the whole store there and exited 0, status safe,
    the backup on the wrong disk. Once this machine has uploaded there, a missing
    directory is exit 1 with one line saying why, and nothing is made."""
    config, env = daemon_config(tmp_path, system_id, drill_interval_hours=0)
    outbox = tmp_path / "outbox"
    first = akoshad("run", "--once", "--config", str(config), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    shutil.rmtree(outbox)
    unchanged = akoshad("run", "--once", "--config", str(config), env=env)
    assert unchanged.returncode == 1, unchanged.stdout + unchanged.stderr  # not "nothing changed"
    assert f"local_target_dir {outbox} does not exist" in unchanged.stdout + unchanged.stderr
    (tmp_path / "store" / "notes.json").write_text('{"after": "the disk went"}')
    again = akoshad("run", "--once", "--config", str(config), env=env)
    assert again.returncode == 1, again.stdout + again.stderr
    assert f"local_target_dir {outbox} does not exist" in again.stdout + again.stderr
    assert not outbox.exists()
    outbox.mkdir()
    last = akoshad("run", "--once", "--config", str(config), env=env)
    assert last.returncode == 0, last.stdout + last.stderr
    assert manifests(outbox, system_id)


def test_an_outbox_mounted_back_is_up_again_with_nothing_to_upload(
    tmp_path: Path, system_id: str
) -> None:
    """A daemon started while its outbox's disk was not mounted shows the local target
    down; once the directory is back, it is up again within seconds, with no change in
    the store to upload (it stayed down, status UNSAFE, until the store's next change)."""
    config, env = daemon_config(tmp_path, system_id, drill_interval_hours=0)
    outbox, away = tmp_path / "outbox", tmp_path / "outbox.away"
    first = akoshad("run", "--once", "--config", str(config), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    outbox.rename(away)  # the disk unmounted

    def local() -> dict[str, object]:
        res = akoshad("status", "--json", "--config", str(config), env=env)
        if res.returncode != 0:
            return {}
        found = json.loads(res.stdout)["targets"]["local"]
        assert isinstance(found, dict)
        return found

    proc = start_daemon(config, env, tmp_path / "d.log")
    try:
        down = wait_for(lambda: (t := local()) and t.get("available") is False and t, 60)
        assert "does not exist, though this machine has uploaded there" in str(down["last_error"])
        assert not outbox.exists()
        away.rename(outbox)  # mounted again
        wait_for(lambda: local().get("available") is True, 30)
    finally:
        assert stop_daemon(proc) == 0


def test_an_outbox_left_for_a_bucket_may_be_removed(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """A machine that uploaded to the outbox (the default), then got a bucket, and whose
    old outbox was removed (its copy no longer needed): the daemon showed the local target
    down ('local_target_dir ... does not exist, though this machine has uploaded there'),
    status UNSAFE and --check failing for good, and each run --once logged it as an
    ERROR, though no upload goes to the outbox while the bucket is the primary."""
    config, env = daemon_config(tmp_path, system_id, drill_interval_hours=0)
    first = akoshad("run", "--once", "--config", str(config), env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    config, env = daemon_config(
        tmp_path,
        system_id,
        store=False,
        drill_interval_hours=0,
        cloud_sync=s3.cloud_sync(system_id),
    )
    shutil.rmtree(tmp_path / "outbox")
    (tmp_path / "store" / "notes.json").write_text('{"after": "the bucket came"}')
    once = akoshad("run", "--once", "--config", str(config), env=env)
    assert once.returncode == 0, once.stdout + once.stderr
    assert "does not exist" not in once.stdout + once.stderr
    assert s3.keys(f"systems/{system_id}/uploads/")
    proc = start_daemon(config, env, tmp_path / "d.log")
    try:
        wait_for(lambda: akoshad("status", "--config", str(config), env=env).returncode == 0, 60)
        check = akoshad("status", "--check", "--config", str(config), env=env)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        assert stop_daemon(proc) == 0
    assert "does not exist" not in (tmp_path / "d.log").read_text()


def test_a_prune_or_drill_through_the_daemon_of_an_outbox_gone_fails(
    tmp_path: Path, system_id: str
) -> None:
    """The outbox's disk unmounted under a daemon that uploaded there: akoshad prune
    through it said 'removed 0 upload(s), kept 0', exit 0, and recorded a good prune;
    akoshad drill said 'nothing to drill: no upload'. An outbox this machine uploaded to
    that is gone lists nothing: both fail saying so."""
    config, env = daemon_config(tmp_path, system_id, drill_interval_hours=0)
    outbox, away = tmp_path / "outbox", tmp_path / "outbox.away"
    proc = start_daemon(config, env, tmp_path / "d.log")
    try:
        wait_for(lambda: outbox.exists() and manifests(outbox, system_id), 60)
        outbox.rename(away)  # the disk unmounted
        prune = akoshad("prune", "--config", str(config), env=env)
        drill = akoshad("drill", "--config", str(config), env=env)
        away.rename(outbox)
    finally:
        assert stop_daemon(proc) == 0
    gone = f"local_target_dir {outbox} does not exist, though this machine has uploaded there"
    assert prune.returncode == 1, prune.stdout + prune.stderr
    assert gone in prune.stdout + prune.stderr
    assert "kept 0" not in prune.stdout + prune.stderr
    assert drill.returncode == 1, drill.stdout + drill.stderr
    assert "nothing to drill" not in drill.stdout + drill.stderr
    assert gone in drill.stdout + drill.stderr
