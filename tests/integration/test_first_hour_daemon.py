"""The daemon in a new user's first hour: a mistyped bucket, a missing data_dir, a script
asking whether all is well, counters that say what they count, and an MCP sync that gives
an answer in bounded time. Subprocess daemons as users run them; SeaweedFS for S3."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.faultproxy import FaultPlan, FaultProxy
from tests.helpers import akoshad, daemon_config, manifests, start_daemon, stop_daemon, wait_for
from tests.integration.test_mcp_tools import call
from tests.s3server import WeedServer
from tests.storegen import make_store

SYSTEM = "firsthour"


class Rig:
    """A store, a state, an outbox and a config in ``tmp``; ``cloud`` adds a bucket."""

    def __init__(self, tmp: Path, data_dir: Path | None = None, **extra: Any) -> None:
        self.tmp = tmp
        self.store = data_dir or tmp / "store"
        self.outbox = tmp / "outbox"
        self.state = tmp / "state"
        self.log = tmp / "daemon.log"
        settings: dict[str, Any] = {
            "debounce_seconds": 0.3,
            "max_delay_seconds": 5,
            "min_upload_interval_seconds": 30,  # the default (daemon_config turns pacing off)
        }
        if data_dir is not None:
            settings["data_dir"] = str(data_dir)
        settings.update(extra)
        self.config, self.env = daemon_config(
            tmp, SYSTEM, store=False, socket_path=tmp / "ak.sock", **settings
        )
        self.env["HOME"] = str(tmp / "home")

    def cli(self, *args: str) -> Any:
        return akoshad(*args, "--config", str(self.config), env=self.env)

    def status(self) -> dict[str, Any]:
        res = self.cli("status", "--json")
        assert res.returncode == 0, res.stderr
        return dict(json.loads(res.stdout))

    def start(self) -> Any:
        proc = start_daemon(self.config, self.env, self.log)
        try:
            wait_for(lambda: self.cli("status").returncode == 0, 40)
        except BaseException:
            stop_daemon(proc)
            print(self.log.read_text())
            raise
        return proc


# ---- 11.2: a mistyped bucket is reported, never created --------------------------------------
def _bucket_exists(s3: WeedServer, bucket: str) -> bool:
    client = s3.client()
    names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    try:
        client.head_bucket(Bucket=bucket)
        headed = True
    except ClientError:
        headed = False
    assert headed == (bucket in names)
    return headed


def test_missing_bucket_stays_degraded_and_is_never_created(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    typo = f"typo-{system_id}"
    rig = Rig(tmp_path, cloud_sync=s3.cloud_sync(system_id, cloud_bucket=typo))
    make_store(rig.store)
    assert not _bucket_exists(s3, typo)
    proc = rig.start()
    try:
        # the breaker opens for max(5 s, 4 x retry_backoff) = 5 s, then probes: watch for
        # well over two open periods; every probe must be a read, never a write
        seen: set[str] = set()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 14:
            st = rig.status()
            assert st["state"] == "degraded", st
            cloud = st["targets"]["cloud"]
            assert cloud["available"] is False
            assert f"bucket {typo!r} does not exist" in cloud["last_error"]
            seen.add(cloud["circuit"])
            assert not _bucket_exists(s3, typo)
            time.sleep(0.5)
        assert "open" in seen
        assert st["pending"] == 8
        res = rig.cli("status", "--check")
        assert res.returncode == 1 and "degraded" in res.stdout and typo in res.stdout
        # the daemon kept probing: once the bucket is created, the next probe passes and
        # the backup lands there without any command
        s3.client().create_bucket(Bucket=typo)
        wait_for(lambda: rig.status()["state"] == "idle", 40, interval=0.5)
        keys = s3.client().list_objects_v2(Bucket=typo, Prefix=f"systems/{system_id}/")
        assert any(o["Key"].endswith("/manifest.json") for o in keys.get("Contents", []))
        assert rig.cli("status", "--check").returncode == 0
    finally:
        assert stop_daemon(proc) == 0
    assert "could not remove objects" not in rig.log.read_text()


# ---- 11.3: a missing data_dir is said plainly ------------------------------------------------
def test_missing_data_dir_config_check_warns_and_run_once_fails(tmp_path: Path) -> None:
    missing = tmp_path / "claude" / "dta"
    rig = Rig(tmp_path, data_dir=missing)
    res = rig.cli("config", "check")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("configuration ok")
    (line,) = res.stderr.strip().splitlines()
    assert "warning" in line and str(missing) in line and "does not exist" in line
    res = rig.cli("run", "--once")
    assert res.returncode == 1
    assert str(missing) in res.stderr and "does not exist" in res.stderr
    assert "waiting" not in res.stderr  # run --once exits: nothing waits for it
    assert "Traceback" not in res.stderr
    assert not rig.outbox.exists() or not any(rig.outbox.rglob("manifest.json"))


def test_run_once_that_selects_no_file_and_never_uploaded_fails(tmp_path: Path) -> None:
    """An ``include`` that matches nothing (a typo) is not a backup: the first run --once
    exits 1 and says why; once a file is selected it backs up; a store that then empties
    (an unmounted disk, a directory made anew) does not empty the backup: exit 1, the last
    upload kept; a file deleted beside others leaves the next upload as usual."""
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "notes.json").write_text("{}")
    rig = Rig(tmp_path, include=["*.jsn"])
    res = rig.cli("run", "--once")
    assert res.returncode == 1, res.stderr
    assert "nothing to back up, nothing was ever uploaded" in res.stderr
    assert "include: *.jsn" in res.stderr and "Traceback" not in res.stderr
    assert not rig.outbox.exists() or not any(rig.outbox.rglob("manifest.json"))
    rig = Rig(tmp_path, include=["*.json"])
    (tmp_path / "store" / "more.json").write_text("[]")
    assert rig.cli("run", "--once").returncode == 0
    (tmp_path / "store" / "more.json").unlink()
    assert rig.cli("run", "--once").returncode == 0  # one file gone: a change like any other
    assert len(manifests(rig.outbox, SYSTEM)) == 2
    (tmp_path / "store" / "notes.json").unlink()
    res = rig.cli("run", "--once")  # the last one gone: the store selects nothing
    assert res.returncode == 1, res.stderr
    assert "nothing to back up, the last upload is kept as it is" in res.stderr
    assert len(manifests(rig.outbox, SYSTEM)) == 2
    dest = tmp_path / "back"
    assert rig.cli("restore", "--latest", "--dest", str(dest)).returncode == 0
    assert [p.name for p in dest.iterdir()] == ["notes.json"]


def test_a_file_excluded_after_its_upload_leaves_the_backup_unread(tmp_path: Path) -> None:
    """``exclude`` added for a file already backed up: the next upload drops it from the
    snapshot and never reads it again (before, its queued removal captured it anew, new
    content included)."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "notes.json").write_text('{"n": 1}')
    (store / "private.json").write_text('{"v": "first"}')
    assert Rig(tmp_path).cli("run", "--once").returncode == 0
    (store / "private.json").write_text('{"v": "EXCLUDED-CONTENT"}')
    rig = Rig(tmp_path, exclude=["private.json"])
    res = rig.cli("run", "--once")
    assert res.returncode == 0, res.stderr
    assert len(manifests(rig.outbox, SYSTEM)) == 2
    dest = tmp_path / "back"
    res = rig.cli("restore", "--latest", "--dest", str(dest))
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["notes.json"]
    every = b"".join(p.read_bytes() for p in rig.outbox.rglob("*") if p.is_file())
    assert b"EXCLUDED-CONTENT" not in every  # never read: no object holds it


def test_an_include_that_leaves_every_file_out_keeps_the_last_upload(tmp_path: Path) -> None:
    """An ``include`` typo after the store was backed up selects none of its files: that is
    not a reason to empty the backup. ``run --once`` exits 1 and says why, makes no upload,
    and the last upload still restores the store."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "notes.json").write_text('{"n": 1}')
    assert Rig(tmp_path).cli("run", "--once").returncode == 0
    rig = Rig(tmp_path, include=["*.jsn"])
    res = rig.cli("run", "--once")
    assert res.returncode == 1, res.stderr
    assert "nothing to back up, the last upload is kept as it is" in res.stderr
    assert "include: *.jsn" in res.stderr and "1 file(s) left out" in res.stderr
    assert len(manifests(rig.outbox, SYSTEM)) == 1
    dest = tmp_path / "back"
    assert rig.cli("restore", "--latest", "--dest", str(dest)).returncode == 0
    assert (dest / "notes.json").read_text() == '{"n": 1}'
    proc = rig.start()  # the daemon says the same, and sends nothing
    try:
        st = wait_for(lambda: (s := rig.status())["nothing_selected"] and s, 20, interval=0.3)
        assert "the last upload is kept as it is" in st["nothing_selected"]
        check = rig.cli("status", "--check")
        assert check.returncode == 1 and "nothing to back up in data_dir" in check.stdout
    finally:
        assert stop_daemon(proc) == 0
    assert len(manifests(rig.outbox, SYSTEM)) == 1


def test_a_data_dir_made_anew_empty_does_not_empty_the_backup(tmp_path: Path) -> None:
    """While the daemon runs, ``data_dir`` is moved away and made again, empty (a disk not
    mounted, a directory recreated): no upload drops every file; the status says why
    (``status --check`` fails); files written there again go up as usual."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "notes.json").write_text('{"n": 1}')
    (store / "old.json").write_text('{"gone": true}')
    rig = Rig(tmp_path, data_dir=store, min_upload_interval_seconds=0)
    proc = rig.start()
    try:
        wait_for(lambda: manifests(rig.outbox, SYSTEM), 40, interval=0.3)
        store.rename(tmp_path / "store.bak")
        store.mkdir()
        st = wait_for(lambda: (s := rig.status())["nothing_selected"] and s, 30, interval=0.3)
        assert st["nothing_selected"].endswith("; the last upload is kept as it is")
        assert rig.cli("status", "--check").returncode == 1
        assert len(manifests(rig.outbox, SYSTEM)) == 1
        (store / "notes.json").write_text('{"n": 2}')
        wait_for(lambda: len(manifests(rig.outbox, SYSTEM)) >= 2, 40, interval=0.3)
        wait_for(lambda: rig.status()["nothing_selected"] is None, 20, interval=0.3)
        wait_for(lambda: rig.status()["pending"] == 0, 20, interval=0.3)
        # the store has files again: the one that did not come back leaves the backup now,
        # not at the next start
        res = rig.cli("restore", "--latest", "--dest", str(tmp_path / "back"))
        assert res.returncode == 0, res.stderr
        assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["notes.json"]
        assert (tmp_path / "back" / "notes.json").read_text() == '{"n": 2}'
    finally:
        assert stop_daemon(proc) == 0


def test_a_data_dir_emptied_under_the_daemon_does_not_empty_the_backup(tmp_path: Path) -> None:
    """Every file of a watched store deleted (``rm data/*``, a disk unmounted under it):
    the deletions make no upload that holds no file (before: an upload of 0 files, which
    ``restore --latest`` restored, exit 0, with ``status --check`` OK); the last upload
    stays, the status says why until a file is there again, which goes up as usual."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "notes.json").write_text('{"n": 1}')
    (store / "old.json").write_text('{"gone": true}')
    rig = Rig(tmp_path, data_dir=store, min_upload_interval_seconds=0)
    proc = rig.start()
    try:
        wait_for(lambda: manifests(rig.outbox, SYSTEM), 40, interval=0.3)
        wait_for(lambda: rig.status()["pending"] == 0, 20, interval=0.3)
        for f in list(store.iterdir()):
            f.unlink()
        st = wait_for(lambda: (s := rig.status())["nothing_selected"] and s, 30, interval=0.3)
        assert st["nothing_selected"].endswith("; the last upload is kept as it is")
        assert rig.cli("sync", "--wait").returncode == 1
        assert rig.cli("status", "--check").returncode == 1
        assert len(manifests(rig.outbox, SYSTEM)) == 1
        (store / "notes.json").write_text('{"n": 2}')
        wait_for(lambda: len(manifests(rig.outbox, SYSTEM)) >= 2, 40, interval=0.3)
        wait_for(lambda: rig.status()["nothing_selected"] is None, 20, interval=0.3)
        wait_for(lambda: rig.status()["pending"] == 0, 20, interval=0.3)
        res = rig.cli("restore", "--latest", "--dest", str(tmp_path / "back"))
        assert res.returncode == 0, res.stderr
        assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["notes.json"]
    finally:
        assert stop_daemon(proc) == 0


def test_daemon_waiting_for_data_dir_says_so_then_backs_it_up(tmp_path: Path) -> None:
    missing = tmp_path / "later"
    # no pacing: a change that lands after the first upload goes up at once, not 30 s later
    rig = Rig(tmp_path, data_dir=missing, min_upload_interval_seconds=0)
    proc = rig.start()
    try:
        st = rig.status()
        assert st["waiting_for_data_dir"] is True
        (warning,) = st["warnings"]
        assert str(missing) in warning and "does not exist" in warning
        human = rig.cli("status")
        assert human.returncode == 0  # plain status: exit 0 whatever the state
        assert f"WARNING    data_dir {missing} does not exist" in human.stdout
        check = rig.cli("status", "--check")
        assert check.returncode == 1
        assert f"waiting for data_dir {missing} to appear" in check.stdout
        # nothing is backed up: never "safe" (the status line, its JSON, the metric)
        assert human.stdout.startswith("UNSAFE since ")
        assert f"data_dir {missing} does not exist" in human.stdout.splitlines()[0]
        assert st["safety"]["safe"] is False
        assert any(f"data_dir {missing} does not exist" in r for r in st["safety"]["reasons"])
        # the daemon still waits for it, and backs it up once it is there (built beside it
        # and renamed into place: the store appears whole)
        make_store(tmp_path / "building")
        (tmp_path / "building").rename(missing)
        wait_for(lambda: manifests(rig.outbox, SYSTEM), 40, interval=0.3)
        wait_for(lambda: rig.status()["pending"] == 0, 20, interval=0.3)
        st = rig.status()
        assert st["warnings"] == [] and st["waiting_for_data_dir"] is False
        assert st["safety"]["safe"] is True, st["safety"]
        assert rig.cli("status", "--check").returncode == 0
    finally:
        assert stop_daemon(proc) == 0


@pytest.mark.parametrize("include", [None, ["*.duckb"]])
def test_daemon_that_selects_no_file_and_never_uploaded_is_not_safe(
    tmp_path: Path, include: list[str] | None
) -> None:
    """An empty ``data_dir``, or an ``include`` that selects none of its files, on a state
    that never uploaded: no backup. The status, its check and ``sync --wait`` say so; once
    a selected file is there and uploaded, all is well."""
    store = tmp_path / "store"
    store.mkdir()
    if include is not None:
        (store / "notes.json").write_text("{}")
    extra: dict[str, Any] = {} if include is None else {"include": include}
    rig = Rig(tmp_path, data_dir=store, min_upload_interval_seconds=0, **extra)
    proc = rig.start()
    try:
        st = wait_for(lambda: (s := rig.status())["nothing_selected"] and s, 20, interval=0.3)
        assert "nothing to back up in data_dir (check include/exclude)" in st["nothing_selected"]
        assert st["safety"]["safe"] is False
        assert st["safety"]["reasons"] == [st["nothing_selected"]]
        assert rig.cli("status").stdout.startswith("UNSAFE since ")
        check = rig.cli("status", "--check")
        assert check.returncode == 1, check.stdout
        assert check.stdout.startswith("akoshad UNHEALTHY: nothing to back up in data_dir")
        sync = rig.cli("sync", "--wait")
        assert sync.returncode == 1, (sync.stdout, sync.stderr)
        assert "nothing to back up in data_dir" in sync.stdout
        assert not manifests(rig.outbox, SYSTEM)
        # a selected file appears: it is uploaded, and from then on all is well
        (store / ("db.duckb" if include else "notes.json")).write_text("{}")
        wait_for(lambda: manifests(rig.outbox, SYSTEM), 40, interval=0.3)
        st = wait_for(lambda: (s := rig.status())["safety"]["safe"] and s, 20, interval=0.3)
        assert st["nothing_selected"] is None and st["warnings"] == []
        assert rig.cli("status", "--check").returncode == 0
        assert rig.cli("sync", "--wait").returncode == 0
    finally:
        assert stop_daemon(proc) == 0


# ---- 11.10: status --check -------------------------------------------------------------------
def test_status_check_exit_codes(tmp_path: Path) -> None:
    rig = Rig(tmp_path, min_upload_interval_seconds=0)  # resume uploads at once
    make_store(rig.store)
    res = rig.cli("status", "--check")
    assert res.returncode == 3 and "not running" in res.stderr
    proc = rig.start()
    try:
        wait_for(lambda: manifests(rig.outbox, SYSTEM) and rig.status()["pending"] == 0, 40)
        res = rig.cli("status", "--check")
        assert res.returncode == 0, res.stdout
        assert res.stdout.strip() == "akoshad OK: idle, 0 pending"
        assert rig.status()["oldest_pending_age_seconds"] is None
        assert rig.status()["last_pass_seconds"] > 0  # the first upload's pass, as timed
        assert rig.cli("pause").returncode == 0
        res = rig.cli("status", "--check")
        assert res.returncode == 1 and "paused" in res.stdout
        assert rig.cli("status").returncode == 0
        res = rig.cli("status", "--check", "--json")
        assert res.returncode == 1 and json.loads(res.stdout)["state"] == "paused"
        # paused: a change waits, and status says for how long
        (rig.store / "akosha_sync_state.json").write_text('{"n": 1}')
        wait_for(lambda: rig.status()["pending"] == 1, 20)
        time.sleep(1.5)
        st = rig.status()
        assert st["oldest_pending_age_seconds"] >= 1.0
        assert st["behind_after_seconds"] == 5 + 0 + 60  # max delay, upload interval, a minute
        assert rig.cli("resume").returncode == 0
        wait_for(lambda: rig.status()["pending"] == 0, 20)
        assert rig.cli("status", "--check").returncode == 0
    finally:
        assert stop_daemon(proc) == 0


def test_status_check_says_behind(tmp_path: Path) -> None:
    """A change that has waited longer than max_delay_seconds + min_upload_interval_seconds
    (30 by default) + 60 s: behind."""
    rig = Rig(tmp_path)
    make_store(rig.store)
    assert rig.cli("run", "--once").returncode == 0
    # a change seen 10 minutes ago still waits for its retry in 8 minutes (a retry is never
    # set more than RETRY_WAIT_MAX ahead: one due later is taken for a clock set right)
    con = sqlite3.connect(rig.state / "state.db")
    with con:
        con.execute(
            "INSERT INTO queue (path, event, first_seen, last_seen, attempts, next_attempt, "
            "last_error) VALUES ('activity.db', 'modified', ?, ?, 3, ?, 'target down')",
            (time.time() - 600, time.time() - 600, time.time() + 500),
        )
    con.close()
    proc = rig.start()
    try:
        st = rig.status()
        assert st["state"] == "idle" and st["pending"] == 1
        assert 600 <= st["oldest_pending_age_seconds"] < 700
        res = rig.cli("status", "--check")
        assert res.returncode == 1
        assert "behind: the oldest pending change is 6" in res.stdout and "limit 95 s" in res.stdout
        assert rig.cli("status").returncode == 0
    finally:
        assert stop_daemon(proc) == 0


# ---- 11.11: counters -------------------------------------------------------------------------
def test_deduplicated_counts_every_file_carried_over(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    make_store(rig.store)
    assert rig.cli("run", "--once").returncode == 0
    (first,) = manifests(rig.outbox, SYSTEM)
    proc = rig.start()
    try:
        (rig.store / "akosha_sync_state.json").write_text('{"last_sync": 1}')
        wait_for(lambda: len(manifests(rig.outbox, SYSTEM)) == 2, 30)
        wait_for(lambda: rig.status()["counters"]["files_uploaded"] == 1, 10)
        counters = rig.status()["counters"]
        # 8 files in the store: 1 sent, 7 carried over, pointing at the first upload
        assert counters["deduplicated"] == 7
        assert len(first["metadata"]["files"]) == 8
        human = rig.cli("status").stdout
        assert "1 files uploaded" in human and "7 deduplicated" in human
        assert "file bytes captured" in human and "bytes sent" in human
        help_text = rig.cli("status", "--help").stdout
        assert "file bytes captured" in help_text and "bytes sent" in help_text
    finally:
        assert stop_daemon(proc) == 0


# ---- 11.13: sync_to_akosha answers in bounded time ---------------------------------------------
@pytest.mark.slow
async def test_mcp_sync_gives_up_waiting_and_says_what_is_pending(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    proxy = FaultProxy(s3.endpoint).start()
    rig = Rig(
        tmp_path,
        cloud_sync=s3.cloud_sync(system_id, cloud_endpoint=proxy.url),
        debounce_seconds=60,  # only the tool's sync uploads the change below
        max_delay_seconds=120,
        drain_deadline_seconds=2,
    )
    make_store(rig.store)
    proc = rig.start()
    try:
        wait_for(lambda: rig.status()["last_upload"] and rig.status()["pending"] == 0, 40)
        # the bucket's server now takes 8 s to fail each request: the drain takes far
        # longer than the 2 s the tool is asked to wait
        proxy.set_plan(FaultPlan(stall=1.0, stall_seconds=8))
        (rig.store / "akosha_sync_state.json").write_text('{"last_sync": 2}')
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "akoshad", "mcp", "--config", str(rig.config)],
            env=rig.env,
        )
        with (tmp_path / "mcp.log").open("a") as errlog:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                t0 = time.monotonic()
                result = await asyncio.wait_for(
                    call(session, "sync_to_akosha", {"timeout_seconds": 2}), 30
                )
                took = time.monotonic() - t0
        print(f"\nsync_to_akosha gave up after {took:.2f} s: {result}")
        assert took < 10
        assert result["success"] is False and result["error"] == "sync_timeout"
        assert result["still_running"] is True and result["pending"] >= 1
        assert "akosha_sync_status" in result["message"]
        assert "within 2 s" in result["message"]
    finally:
        proxy.set_plan(FaultPlan())
        stop_daemon(proc)
        proxy.stop()
