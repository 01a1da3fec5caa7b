"""A bucket emptied while its target is down (deleted and made again, a lifecycle rule, a
hand): the first upload after the outage must not point at the objects that are gone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import akoshad, daemon_config, start_daemon, stop_daemon, tree_files, wait_for
from tests.s3server import WeedServer

pytestmark = pytest.mark.s3


def _empty(s3: WeedServer, prefix: str) -> None:
    """Delete every object under ``prefix`` behind the daemon's back."""
    client = s3.client()
    for key in s3.keys(prefix):
        client.delete_object(Bucket=s3.bucket, Key=key)


def _restored_latest(config: Path, env: dict[str, str], dest: Path) -> Path:
    """``restore --latest`` into ``dest``, which it returns; it must succeed."""
    res = akoshad("restore", "--config", str(config), "--latest", "--dest", str(dest), env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    return dest


def test_a_bucket_emptied_during_an_outage_gets_the_whole_store(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """Before: the upload after the outage sent the one changed file, was logged and
    announced as a success ('works again', events upload and recovered, status safe) and
    its manifest pointed at packs that were gone: restoring it failed, and nothing said so
    until the next drill (a day later by default)."""
    config, env = daemon_config(tmp_path, system_id, cloud_sync=s3.cloud_sync(system_id))
    log = tmp_path / "d.log"
    prefix = f"systems/{system_id}/"
    proc = start_daemon(config, env, log)
    try:
        wait_for(lambda: s3.keys(prefix + "uploads/"), 60)
        _empty(s3, prefix)  # then the server goes away for a while
        s3.stop()
        (tmp_path / "store" / "notes.json").write_text('{"during": "the outage"}')
        wait_for(lambda: "upload to cloud failed" in log.read_text(), 60)
        s3.start()
        wait_for(lambda: "works again" in log.read_text(), 90)
    finally:
        if s3.proc is None:
            s3.start()
        assert stop_daemon(proc) == 0
    dest = _restored_latest(config, env, tmp_path / "back")
    assert tree_files(dest) == tree_files(tmp_path / "store")
    shutil.rmtree(dest)


def test_a_bucket_emptied_without_an_outage_gets_the_whole_store(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """The bucket emptied by a hand (or deleted, and made again by SeaweedFS' first write)
    while the daemon runs, no request failing. Before: the next upload sent the one changed
    file ('1 file(s) sent, N unchanged'), status said safe, and restore --latest failed
    on every other file until the next drill."""
    config, env = daemon_config(
        tmp_path, system_id, cloud_sync=s3.cloud_sync(system_id), drill_interval_hours=0
    )
    log = tmp_path / "d.log"
    prefix = f"systems/{system_id}/"
    proc = start_daemon(config, env, log)
    try:
        wait_for(lambda: s3.keys(prefix + "uploads/"), 60)
        _empty(s3, prefix)
        (tmp_path / "store" / "notes.json").write_text('{"after": "the bucket was emptied"}')
        wait_for(lambda: "no longer holds upload" in log.read_text(), 60)
        wait_for(
            lambda: [k for k in s3.keys(prefix + "uploads/") if k.endswith("manifest.json")], 60
        )
    finally:
        assert stop_daemon(proc) == 0
    dest = _restored_latest(config, env, tmp_path / "back")
    assert tree_files(dest) == tree_files(tmp_path / "store")
