"""Restore drills end to end: ``akoshad drill`` and the daemon's own drills, local target."""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.helpers import (
    akoshad,
    daemon_config,
    manifests,
    start_daemon,
    stop_daemon,
    wait_for,
)
from tests.s3server import WeedServer
from tests.storegen import make_store

FIXTURE = Path(__file__).parents[1] / "data" / "drill" / "outbox"
SYSTEM = "drill"


def _config(tmp_path: Path, system_id: str = SYSTEM, **extra: Any) -> tuple[Path, dict[str, str]]:
    return daemon_config(tmp_path, system_id, store=False, **extra)


def _drill(cfg: Path, env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    proc = akoshad("drill", "--json", "--config", str(cfg), env=env)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _uploaded(tmp_path: Path, cfg: Path, env: dict[str, str]) -> dict[str, Any]:
    make_store(tmp_path / "store")
    akoshad("run", "--once", "--config", str(cfg), env=env, check=True)
    return manifests(tmp_path / "outbox", SYSTEM)[-1]


def _chunk_of(manifest: dict[str, Any], path: str) -> dict[str, Any]:
    """The first chunk of ``path`` (listed inline: the test stores are small)."""
    entry = next(e for e in manifest["metadata"]["files"] if e["path"] == path)
    chunk: dict[str, Any] = entry["chunks"][0]
    return chunk


def _tamper(outbox: Path, manifest: dict[str, Any], path: str) -> None:
    """Flip one byte inside the stored bytes of ``path``'s first chunk, in its pack (which
    keeps its size)."""
    chunk = _chunk_of(manifest, path)
    pack = outbox / chunk["key"]
    data = bytearray(pack.read_bytes())
    data[chunk["offset"] + chunk["length"] // 2] ^= 0xFF
    pack.write_bytes(bytes(data))


def _drill_dirs(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "state").glob("drill-*"))


def test_drill_passes_on_a_fresh_upload(tmp_path: Path) -> None:
    cfg, env = _config(tmp_path)
    manifest = _uploaded(tmp_path, cfg, env)
    code, result = _drill(cfg, env)
    assert code == 0, result
    assert result["ok"] is True and result["problems"] == []
    assert result["upload_id"] == manifest["metadata"]["upload_id"]
    assert result["files"] == len(manifest["metadata"]["files"])
    assert result["bytes"] == manifest["total_size_bytes"]
    # what the capture recorded for the drill to compare with
    by_path = {e["path"]: e for e in manifest["metadata"]["files"]}
    assert by_path["reflection.duckdb"]["rows"] == {"conversations_v2": 20, "reflections_v2": 5}
    assert by_path["knowledge_graph.duckdb"]["rows"] == {"kg_entities": 30, "kg_relationships": 29}
    assert by_path["sessions/session-1/state.json"]["json_ok"] is True
    assert "rows" not in by_path["activity.db"]
    assert _drill_dirs(tmp_path) == []  # the private restore is gone
    human = akoshad("drill", "--config", str(cfg), env=env)
    assert human.returncode == 0
    assert "all well" in human.stdout


def test_drill_finds_a_tampered_object(tmp_path: Path) -> None:
    cfg, env = _config(tmp_path)
    manifest = _uploaded(tmp_path, cfg, env)
    _tamper(tmp_path / "outbox", manifest, "natural_scheduler.db")
    code, result = _drill(cfg, env)
    assert code == 1
    assert result["ok"] is False
    assert len(result["problems"]) == 1, result["problems"]
    assert result["problems"][0].startswith("natural_scheduler.db: chunk 1 of 1 (sha256 ")
    assert "is damaged" in result["problems"][0]
    human = akoshad("drill", "--config", str(cfg), env=env)
    assert human.returncode == 1
    assert "natural_scheduler.db: chunk 1 of 1 (sha256 " in human.stdout
    assert "1 problem(s)" in human.stdout


def test_drill_finds_damaged_databases_whose_bytes_match(tmp_path: Path) -> None:
    """The committed fixture: every object matches its SHA-256, the databases do not hold."""
    shutil.copytree(FIXTURE, tmp_path / "outbox")
    cfg, env = _config(tmp_path, system_id="drillfixture")
    code, result = _drill(cfg, env)
    assert code == 1
    problems = result["problems"]
    assert not [p for p in problems if "does not match the manifest" in p], problems
    assert result["files"] == 6  # every object restored intact
    assert any(p.startswith("knowledge_graph.duckdb: does not open with duckdb") for p in problems)
    assert any(
        p.startswith("reflection.duckdb: table conversations_v2 cannot be read: Corrupt")
        for p in problems
    )
    assert "reflection.duckdb: table reflections_v2 has 30 row(s), 40 at capture" in problems
    assert any(p.startswith("activity.db: integrity_check:") for p in problems)
    assert any(p.startswith("sessions/s1/state.json: does not parse as JSON") for p in problems)
    named = {p.split(":")[0] for p in problems}
    assert named == {
        "activity.db",
        "knowledge_graph.duckdb",
        "reflection.duckdb",
        "sessions/s1/state.json",
    }  # the intact SQLite and JSON files pass


def test_drill_download_rate_is_capped(tmp_path: Path) -> None:
    cfg, env = _config(tmp_path)
    _uploaded(tmp_path, cfg, env)
    stored = sum(p.stat().st_size for p in (tmp_path / "outbox").rglob("*") if p.is_file())
    # a cap of half the stored bytes per second: one second of burst, then one more second
    cfg, env = _config(tmp_path, drill_max_mbps=stored / 2 / 1_000_000)
    code, result = _drill(cfg, env)
    assert code == 0, result
    assert result["seconds"] >= 0.9


def test_nothing_to_drill(tmp_path: Path) -> None:
    cfg, env = _config(tmp_path)
    (tmp_path / "store").mkdir()
    proc = akoshad("drill", "--config", str(cfg), env=env)
    assert proc.returncode == 1  # no outbox at all: a typo in local_target_dir, said so
    outbox = tmp_path / "outbox"
    want = f"akoshad: local_target_dir {outbox} does not exist: no upload can be there"
    assert proc.stderr.strip() == want and not outbox.exists()
    outbox.mkdir()
    proc = akoshad("drill", "--config", str(cfg), env=env)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"akoshad: nothing to drill: no upload for {SYSTEM} in local"
    assert proc.stdout == ""


def test_a_drill_where_every_upload_is_dated_in_the_future_says_so(tmp_path: Path) -> None:
    """On a machine whose clock is behind the uploads' (a rescue system, a clock set back a
    year), the drill said "nothing to drill: no upload for ... in local", as if there were
    no backup; it names the uploads dated in the future and the clock now."""
    cfg, env = _config(tmp_path)
    _uploaded(tmp_path, cfg, env)
    uploads = tmp_path / "outbox" / "systems" / SYSTEM / "uploads"
    (made,) = [p.name for p in uploads.iterdir()]
    ahead = "3" + made[1:]  # the same upload, dated a thousand years later
    (uploads / made).rename(uploads / ahead)
    shutil.rmtree(tmp_path / "state")  # another machine: what this one made is not known
    proc = akoshad("drill", "--config", str(cfg), env=env)
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert "no upload" not in line, line
    assert f"every upload of {SYSTEM} in local is dated in the future" in line
    assert f"the newest {ahead}" in line and "this machine's clock is behind" in line


def test_a_drill_that_cannot_run_is_a_json_result_with_json(tmp_path: Path) -> None:
    """A script that reads ``drill --json`` gets a result also when the drill cannot run:
    ok false and the reason, beside the one line on stderr and exit 1."""
    cfg, env = _config(tmp_path)
    (tmp_path / "store").mkdir()
    (tmp_path / "outbox").mkdir()
    before = time.time()
    code, result = _drill(cfg, env)  # no upload yet
    # the last_drill object's fields (CONTRACT: {at, ok, upload_id, problems})
    assert before <= result["at"] <= time.time() and result["upload_id"] is None, result
    reason = f"nothing to drill: no upload for {SYSTEM} in local"
    assert code == 1 and result["ok"] is False and result["ran"] is False, result
    assert result["problems"] == [reason] and result["needs_identity"] is False


def test_a_drill_without_the_identity_is_a_json_result_with_json(tmp_path: Path) -> None:
    from pyrage import x25519

    public = str(x25519.Identity.generate().to_public())
    cfg, env = _config(tmp_path, encryption={"recipients": [public]})
    _uploaded(tmp_path, cfg, env)
    proc = akoshad("drill", "--json", "--config", str(cfg), env=env)
    assert proc.returncode == 1 and "identity" in proc.stderr, proc
    result = json.loads(proc.stdout)
    assert result["ok"] is False and result["needs_identity"] is True, result
    assert "identity" in result["problems"][0]


def test_a_drill_with_an_identity_that_cannot_open_it_is_no_missing_identity(
    tmp_path: Path,
) -> None:
    """``drill --json`` says ``needs_identity`` only when no identity is there: one given
    that is not a recipient, or one that cannot be read, is a fault (false), as in
    ``last_drill`` of the daemon's drills."""
    from pyrage import x25519

    public = str(x25519.Identity.generate().to_public())
    cfg, env = _config(tmp_path, encryption={"recipients": [public]})
    _uploaded(tmp_path, cfg, env)
    other = tmp_path / "other.txt"
    other.write_text(str(x25519.Identity.generate()) + "\n")
    other.chmod(0o600)
    for identity, want in ((other, "other keys"), (tmp_path / "none.txt", "does not exist")):
        proc = akoshad(
            "drill", "--json", "--identity", str(identity), "--config", str(cfg), env=env
        )
        assert proc.returncode == 1 and want in proc.stderr, proc
        result = json.loads(proc.stdout)
        assert result["ok"] is False and result["needs_identity"] is False, result
        assert want in result["problems"][0], result


def test_stale_drill_directory_is_removed(tmp_path: Path) -> None:
    cfg, env = _config(tmp_path)
    _uploaded(tmp_path, cfg, env)
    stale = tmp_path / "state" / "drill-crashed"
    (stale / "store").mkdir(parents=True)
    (stale / ".lock").write_text("")
    (stale / "store" / "reflection.duckdb").write_bytes(b"left by a crash")
    code, _result = _drill(cfg, env)
    assert code == 0
    assert _drill_dirs(tmp_path) == []


def _status(cfg: Path, env: dict[str, str]) -> dict[str, Any] | None:
    proc = akoshad("status", "--json", "--config", str(cfg), env=env, timeout=30)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _last_drill(cfg: Path, env: dict[str, str]) -> dict[str, Any] | None:
    status = _status(cfg, env)
    return None if status is None else status.get("last_drill")


def test_daemon_drills_by_itself_and_finds_tampering(tmp_path: Path) -> None:
    make_store(tmp_path / "store")
    cfg, env = _config(tmp_path, drill_interval_hours=0.001)  # every 3.6 s
    log = tmp_path / "d.log"
    proc = start_daemon(cfg, env, log)
    try:
        first = wait_for(lambda: _last_drill(cfg, env), 60, interval=0.5)
        assert first["ok"] is True, first
        manifest = manifests(tmp_path / "outbox", SYSTEM)[-1]
        assert first["upload_id"] == manifest["metadata"]["upload_id"]
        # the target is damaged behind the daemon's back: the next drill finds it
        _tamper(tmp_path / "outbox", manifest, "activity.db")
        bad = wait_for(
            lambda: (d := _last_drill(cfg, env)) is not None and not d["ok"] and d, 60, interval=0.5
        )
        assert bad["upload_id"] == first["upload_id"]
        assert bad["at"] > first["at"]
        assert [p.split(":")[0] for p in bad["problems"]] == ["activity.db"]
        # it is sent again by itself: a new upload, and the drill after it finds all well
        healed = wait_for(
            lambda: (d := _last_drill(cfg, env)) is not None and d["at"] > bad["at"] and d,
            60,
            interval=0.5,
        )
        assert healed["ok"] is True, healed
        assert healed["upload_id"] != bad["upload_id"]
        newest = manifests(tmp_path / "outbox", SYSTEM)[-1]
        assert healed["upload_id"] == newest["metadata"]["upload_id"]
        assert _chunk_of(newest, "activity.db")["key"] != _chunk_of(manifest, "activity.db")["key"]
    finally:
        assert stop_daemon(proc) == 0
    text = log.read_text()
    assert "all well" in text
    assert "ERROR" in text and "found 1 problem(s): activity.db: chunk 1 of 1 (sha256 " in text
    assert "8 file(s) that used them are sent again with the next upload" in text  # one pack
    assert _drill_dirs(tmp_path) == []
    # it survives a restart (drills off now: the record is the one kept in the state), and
    # what a drill cut short by a crash left is removed at the start
    stale = tmp_path / "state" / "drill-crashed"
    stale.mkdir()
    (stale / ".lock").write_text("")
    cfg, env = _config(tmp_path, drill_interval_hours=0)
    proc = start_daemon(cfg, env, log)
    try:
        kept = wait_for(lambda: _last_drill(cfg, env), 30, interval=0.3)
        assert kept["at"] >= healed["at"]
        wait_for(lambda: not stale.exists(), 10)
    finally:
        assert stop_daemon(proc) == 0


def test_a_drill_by_hand_runs_in_the_daemon_which_sends_the_lost_again(tmp_path: Path) -> None:
    """With a daemon running, ``akoshad drill`` runs in it (drills off by the schedule): it
    reports as by itself, and what it finds damaged is sent again by the daemon."""
    make_store(tmp_path / "store")
    cfg, env = _config(tmp_path, drill_interval_hours=0)
    log = tmp_path / "d.log"
    proc = start_daemon(cfg, env, log)
    try:
        wait_for(lambda: manifests(tmp_path / "outbox", SYSTEM), 60, interval=0.3)
        manifest = manifests(tmp_path / "outbox", SYSTEM)[-1]
        _tamper(tmp_path / "outbox", manifest, "activity.db")
        code, result = _drill(cfg, env)
        assert code == 1, result
        assert [p.split(":")[0] for p in result["problems"]] == ["activity.db"]
        assert result["upload_id"] == manifest["metadata"]["upload_id"]
        newest = wait_for(
            lambda: (m := manifests(tmp_path / "outbox", SYSTEM)) and len(m) > 1 and m[-1],
            30,
            interval=0.3,
        )
        code, result = _drill(cfg, env)
        assert code == 0 and result["ok"] is True, result
        assert result["upload_id"] == newest["metadata"]["upload_id"]
    finally:
        assert stop_daemon(proc) == 0
    assert "file(s) that used them are sent again with the next upload" in log.read_text()


def _two_uploads_the_newest_gone(tmp_path: Path, cfg: Path, env: dict[str, str]) -> tuple[str, str]:
    """Two uploads made by ``run --once``, then the newest one's manifest deleted (a hand,
    a lifecycle rule): (the older upload's id, the gone one's)."""
    _uploaded(tmp_path, cfg, env)
    (tmp_path / "store" / "notes.txt").write_text("a second upload\n")
    akoshad("run", "--once", "--config", str(cfg), env=env, check=True)
    older, newest = (m["metadata"]["upload_id"] for m in manifests(tmp_path / "outbox", SYSTEM))
    (tmp_path / "outbox" / "systems" / SYSTEM / "uploads" / newest / "manifest.json").unlink()
    return older, newest


def test_a_drill_fails_when_the_last_upload_this_machine_made_is_gone(tmp_path: Path) -> None:
    """The newest upload still there restores fine, but it is not the last one this machine
    made: the store as of that one cannot be restored, and the drill says so (exit 1)
    instead of "all well". The next run sends it again, and the drill passes."""
    cfg, env = _config(tmp_path)
    older, gone = _two_uploads_the_newest_gone(tmp_path, cfg, env)
    code, result = _drill(cfg, env)
    assert code == 1 and result["ok"] is False, result
    assert result["upload_id"] == older
    assert result["problems"][0].startswith(
        f"upload {gone}, the last one this machine made in local, is not there any more"
    ), result["problems"]
    assert len(result["problems"]) == 1  # the older upload itself restored fine
    akoshad("run", "--once", "--config", str(cfg), env=env, check=True)
    # the start saw the upload gone and sent the store again; the failed drill stands
    # until a drill passes (the place is the same: its records are kept)
    with sqlite3.connect(tmp_path / "state" / "state.db") as con:
        (kept,) = con.execute("SELECT value FROM kv WHERE key = 'last_drill'").fetchone()
    assert json.loads(kept)["ok"] is False
    ids = [m["metadata"]["upload_id"] for m in manifests(tmp_path / "outbox", SYSTEM)]
    assert len(ids) == 2 and ids[0] == older and ids[1] > gone
    code, result = _drill(cfg, env)
    assert code == 0 and result["upload_id"] == ids[1], result
    restored = tmp_path / "restored"
    akoshad(
        "restore", "--latest", "--dest", str(restored), "--config", str(cfg), env=env, check=True
    )
    assert (restored / "notes.txt").read_text() == "a second upload\n"


def test_the_gone_upload_is_reported_also_without_the_identity(tmp_path: Path) -> None:
    """Encrypted uploads, no identity here: the drill cannot read the upload left, but the
    gone one needs no identity to be seen; reported as a problem (exit 1), not as a drill
    that only lacked the identity (which ``status --check`` passes over)."""
    from pyrage import x25519

    public = str(x25519.Identity.generate().to_public())
    cfg, env = _config(tmp_path, encryption={"recipients": [public]})
    older, gone = _two_uploads_the_newest_gone(tmp_path, cfg, env)
    code, result = _drill(cfg, env)
    assert code == 1 and result["needs_identity"] is False, result
    assert result["upload_id"] == older
    assert result["problems"][0].startswith(f"upload {gone}, the last one this machine made")
    assert "encrypted" in result["problems"][1], result["problems"]
    human = akoshad("drill", "--config", str(cfg), env=env)
    assert human.returncode == 1 and f"upload {gone}, the last one" in human.stdout


def test_the_daemon_s_drill_finds_its_last_upload_gone_and_sends_the_store_again(
    tmp_path: Path,
) -> None:
    cfg, env = _config(tmp_path, drill_interval_hours=0)
    older, gone = _two_uploads_the_newest_gone(tmp_path, cfg, env)
    log = tmp_path / "d.log"
    proc = start_daemon(cfg, env, log)
    try:
        wait_for((tmp_path / "s.sock").exists, 30)
        # the daemon's start has found the upload gone already and sent the store again:
        # lose the new upload too, while the daemon runs
        newest = wait_for(
            lambda: (m := manifests(tmp_path / "outbox", SYSTEM)) and len(m) == 2 and m[-1],
            30,
            interval=0.3,
        )
        again = newest["metadata"]["upload_id"]
        assert again > gone
        (tmp_path / "outbox" / "systems" / SYSTEM / "uploads" / again / "manifest.json").unlink()
        code, result = _drill(cfg, env)
        assert code == 1 and result["upload_id"] == older, result
        assert result["problems"][0].startswith(f"upload {again}, the last one this machine")
        third = wait_for(
            lambda: (m := manifests(tmp_path / "outbox", SYSTEM)) and len(m) == 2 and m[-1],
            30,
            interval=0.3,
        )
        assert third["metadata"]["upload_id"] > again
        code, result = _drill(cfg, env)
        assert code == 0 and result["upload_id"] == third["metadata"]["upload_id"], result
        status = json.loads(akoshad("status", "--json", "--config", str(cfg), env=env).stdout)
        assert status["last_drill"]["ok"] is True
    finally:
        assert stop_daemon(proc) == 0
    assert f"no longer holds upload {again}" in log.read_text()


def test_daemon_stops_during_a_drill_and_leaves_nothing(tmp_path: Path) -> None:
    """SIGTERM while a drill downloads (slowly: 0.05 MB/s): exit 0, no drill directory."""
    make_store(tmp_path / "store")
    cfg, env = _config(tmp_path, drill_interval_hours=0.001, drill_max_mbps=0.05)
    proc = start_daemon(cfg, env, tmp_path / "d.log")
    try:
        wait_for(lambda: _drill_dirs(tmp_path), 60, interval=0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    except (AssertionError, subprocess.TimeoutExpired):
        proc.kill()
        raise
    assert _drill_dirs(tmp_path) == []


def test_drill_on_s3_passes_then_finds_a_replaced_object(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """The same drill against a real S3 server (SeaweedFS): only reads, then a tampered
    object is named."""
    make_store(tmp_path / "store")
    cfg, env = _config(tmp_path, cloud_sync=s3.cloud_sync(system_id))
    akoshad("run", "--once", "--config", str(cfg), env=env, check=True)
    before = {k: _etag(s3, k) for k in s3.keys(f"systems/{system_id}/")}
    code, result = _drill(cfg, env)
    assert code == 0, result
    assert result["files"] == 8 and result["problems"] == []
    assert {k: _etag(s3, k) for k in s3.keys(f"systems/{system_id}/")} == before  # reads only
    client = s3.client()
    (mkey,) = [k for k in before if k.endswith("/manifest.json")]
    manifest = json.loads(client.get_object(Bucket=s3.bucket, Key=mkey)["Body"].read())
    chunk = _chunk_of(manifest, "reflection.duckdb")
    data = bytearray(client.get_object(Bucket=s3.bucket, Key=chunk["key"])["Body"].read())
    data[chunk["offset"] + chunk["length"] // 2] ^= 0xFF
    client.put_object(Bucket=s3.bucket, Key=chunk["key"], Body=bytes(data))
    code, result = _drill(cfg, env)
    assert code == 1
    assert [p.split(":")[0] for p in result["problems"]] == ["reflection.duckdb"]
    assert "chunk 1 of " in result["problems"][0] and chunk["key"] in result["problems"][0]


def _etag(s3: WeedServer, key: str) -> str:
    return str(s3.client().head_object(Bucket=s3.bucket, Key=key)["ETag"])


def test_a_bucket_gone_at_a_drill_is_no_emptied_target_and_the_next_upload_is_whole(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """The bucket deleted while the daemon runs: a HEAD of the last manifest answers 404 as
    for a missing key, but the bucket cannot be read, so the drill fails without forgetting
    what the state knows (it was forgetting it, and the later uploads held only the files
    changed since). Once the bucket is back (empty), the daemon's next drill finds the
    last upload gone, and the next upload holds every file of the store."""
    bucket = f"gone-{system_id}"
    client = s3.client()
    client.create_bucket(Bucket=bucket)
    cfg, env = _config(
        tmp_path,
        system_id,
        cloud_sync=s3.cloud_sync(system_id, cloud_bucket=bucket),
        drill_interval_hours=0,
    )
    make_store(tmp_path / "store")
    files = len([p for p in (tmp_path / "store").rglob("*") if p.is_file()])
    log = tmp_path / "d.log"
    proc = start_daemon(cfg, env, log)
    try:

        def manifests_in_bucket() -> list[dict[str, Any]]:
            keys = sorted(
                o["Key"]
                for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])
                if o["Key"].endswith("/manifest.json")
            )
            return [
                json.loads(client.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys
            ]

        first = wait_for(lambda: manifests_in_bucket(), 60, interval=0.3)[-1]
        assert len(first["metadata"]["files"]) == files
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
        client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]})
        client.delete_bucket(Bucket=bucket)
        refused = akoshad("drill", "--json", "--config", str(cfg), env=env)
        assert refused.returncode == 1 and "does not exist" in refused.stderr, refused
        assert "no longer holds upload" not in log.read_text()
        client.create_bucket(Bucket=bucket)  # back, empty
        code, result = _drill(cfg, env)
        assert code == 1 and result["problems"], result
        assert f"no longer holds upload {first['metadata']['upload_id']}" in log.read_text()
        (tmp_path / "store" / "akosha_sync_state.json").write_text('{"x": 2}')
        newest = wait_for(lambda: manifests_in_bucket(), 60, interval=0.3)[-1]
        assert len(newest["metadata"]["files"]) == files  # the whole store, not one file
        code, result = _drill(cfg, env)
        assert code == 0 and result["files"] == files, result
    finally:
        assert stop_daemon(proc) == 0
