"""The committed format-1 uploads (tests/data/format1, made by ``run --once`` of the first
release) stay readable: they verify, restore byte for byte, and a fresh akoshad pointed at
them (the first pass after an upgrade) carries on without a failure."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import (
    akoshad,
    base_env,
    manifests,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)
from tests.storegen import duckdb_rows, sqlite_rows

DATA = Path(__file__).resolve().parents[1] / "data" / "format1"
EXPECTED: dict[str, Any] = json.loads((DATA / "expected.json").read_text())
SYSTEM: str = EXPECTED["system_id"]
UPLOADS: dict[str, dict[str, str]] = EXPECTED["uploads"]
FIRST, LATEST = next(iter(UPLOADS)), EXPECTED["latest"]


def _hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


class Copy:
    """The committed outbox copied into tmp_path, with a fresh state and config."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.outbox = tmp / "outbox"
        shutil.copytree(DATA / "outbox", self.outbox)
        self.store = tmp / "store"
        self.state = tmp / "state"
        self.env = base_env(tmp / "home")
        self.config = write_config(
            tmp / "config.yaml",
            data_dir=str(self.store),
            state_dir=str(self.state),
            local_target_dir=str(self.outbox),
            socket_path=str(tmp / "akoshad.sock"),
            debounce_seconds=0.3,
            cloud_sync={"system_id": SYSTEM},
        )

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return akoshad(*args, "--config", str(self.config), env=self.env, check=check)

    def restore(self, dest: Path, *which: str) -> dict[str, str]:
        self.cli("restore", *which, "--dest", str(dest), check=True)
        return _hashes(dest)

    def upload_ids(self) -> list[str]:
        return [m["metadata"]["upload_id"] for m in manifests(self.outbox, SYSTEM)]


@pytest.fixture
def copy(tmp_path: Path) -> Copy:
    return Copy(tmp_path)


def test_the_fixture_is_two_format1_uploads_sharing_objects() -> None:
    found = manifests(DATA / "outbox", SYSTEM)
    assert [m["metadata"]["upload_id"] for m in found] == list(UPLOADS)
    first, second = found
    assert "format" not in second["metadata"]  # format 1 has no format field
    assert second["files"] == ["reflection.duckdb.gz"]  # the one file that changed
    for entry in second["metadata"]["files"]:
        expected_upload = LATEST if entry["path"] == "reflection.duckdb" else FIRST
        assert entry["key"].startswith(f"systems/{SYSTEM}/uploads/{expected_upload}/")
        assert entry["sha256"] == UPLOADS[LATEST][entry["path"]]
    assert {f["path"]: f["sha256"] for f in first["metadata"]["files"]} == UPLOADS[FIRST]


def test_verify_all_passes_on_the_format1_uploads(copy: Copy) -> None:
    res = copy.cli("verify", "--all")
    assert res.returncode == 0, res.stdout + res.stderr
    for upload_id, files in UPLOADS.items():
        assert f"{upload_id}: {len(files)} file(s) verified, ok" in res.stdout


def test_verify_finds_a_damaged_format1_object(copy: Copy) -> None:
    shared = next(
        f["key"]
        for f in manifests(copy.outbox, SYSTEM)[1]["metadata"]["files"]
        if f["path"] == "activity.db"
    )
    obj = copy.outbox / shared  # an object of the first upload that the second reuses
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    res = copy.cli("verify", "--all")
    assert res.returncode == 1
    for upload_id in UPLOADS:
        assert upload_id in res.stdout and "activity.db" in res.stdout


@pytest.mark.parametrize("upload_id", list(UPLOADS))
def test_restore_each_format1_upload_gives_back_its_files(copy: Copy, upload_id: str) -> None:
    got = copy.restore(copy.tmp / "restored", "--upload-id", upload_id)
    assert got == UPLOADS[upload_id]


def test_restore_latest_gives_back_the_second_upload(copy: Copy) -> None:
    assert copy.restore(copy.tmp / "restored", "--latest") == UPLOADS[LATEST]
    rows = duckdb_rows(copy.tmp / "restored" / "reflection.duckdb", "conversations_v2")
    assert len(rows) == 10 and sum(str(r[0]).startswith("conv-added-") for r in rows) == 5


def _same_content(store: Path, restored: Path) -> None:
    """The restored upload holds the store: same bytes, SQLite files the same rows (they
    are captured through the backup API, whose header bytes may differ)."""
    src, dst = _hashes(store), _hashes(restored)
    assert set(src) == set(dst)
    for rel, sha in src.items():
        if rel.endswith(".db"):
            table = "events" if rel == "activity.db" else "reminders"
            assert sqlite_rows(store / rel, table) == sqlite_rows(restored / rel, table)
        else:
            assert dst[rel] == sha, rel


def _assert_first_pass_kept_everything(copy: Copy, before: dict[str, str]) -> None:
    """At most one new upload, which holds the store; the old uploads are untouched."""
    ids = copy.upload_ids()
    assert ids[: len(UPLOADS)] == list(UPLOADS)
    assert len(ids) <= len(UPLOADS) + 1, ids
    old = {k: v for k, v in _hashes(copy.outbox).items() if any(f"/{u}/" in k for u in UPLOADS)}
    assert old == before  # nothing of the format-1 uploads was rewritten or removed
    res = copy.cli("verify", "--all")
    assert res.returncode == 0, res.stdout + res.stderr
    restored = copy.tmp / "after"
    copy.cli("restore", "--latest", "--dest", str(restored), check=True)
    _same_content(copy.store, restored)
    for upload_id, files in UPLOADS.items():  # the old ones still restore exactly
        assert copy.restore(copy.tmp / f"again-{upload_id}", "--upload-id", upload_id) == files


def test_run_once_over_a_fresh_state_just_works(copy: Copy) -> None:
    assert copy.restore(copy.store, "--latest") == UPLOADS[LATEST]
    before = _hashes(copy.outbox)
    res = copy.cli("run", "--once")
    assert res.returncode == 0, res.stderr
    assert "ERROR" not in res.stderr and "Traceback" not in res.stderr
    _assert_first_pass_kept_everything(copy, before)
    ids = copy.upload_ids()
    res = copy.cli("run", "--once")  # and then it has settled: no further upload
    assert res.returncode == 0, res.stderr
    assert copy.upload_ids() == ids


def test_daemon_over_a_fresh_state_just_works(copy: Copy) -> None:
    assert copy.restore(copy.store, "--latest") == UPLOADS[LATEST]
    before = _hashes(copy.outbox)
    log = copy.tmp / "daemon.log"
    proc = start_daemon(copy.config, copy.env, log)
    try:
        wait_for((copy.tmp / "akoshad.sock").exists, 30)
        res = copy.cli("sync", "--wait", "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        assert json.loads(res.stdout)["ok_drain"] is True
        ids = copy.upload_ids()
        status = json.loads(copy.cli("status", "--json", check=True).stdout)
        assert status["counters"]["failures"] == 0, status
    finally:
        assert stop_daemon(proc) == 0
    text = log.read_text()
    assert "ERROR" not in text and "Traceback" not in text, text
    assert copy.upload_ids() == ids
    _assert_first_pass_kept_everything(copy, before)


def test_a_pruned_format1_upload_whose_objects_stay_is_no_interrupted_upload(copy: Copy) -> None:
    """``keep_last: 1`` drops the first upload: its manifest goes, and the objects the second
    still uses stay in its folder. Later prunes sweep nothing there and say nothing of an
    interrupted upload (they said "objects of 1 interrupted upload(s) swept" every time)."""
    cfg = yaml.safe_load(copy.config.read_text())
    cfg["retention"] = {"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}
    copy.config.write_text(yaml.safe_dump(cfg))
    first = json.loads(copy.cli("prune", "--json", check=True).stdout)
    assert first["uploads_removed"] == [FIRST] and first["crashed_uploads"] == []
    for _ in range(2):
        again = copy.cli("prune", check=True)
        assert "deleted 0 object(s)" in again.stdout
        assert "interrupted" not in again.stdout, again.stdout
    done = json.loads(copy.cli("prune", "--json", check=True).stdout)
    assert done["crashed_uploads"] == [] and done["objects_deleted"] == 0
    assert copy.restore(copy.tmp / "restored", "--latest") == UPLOADS[LATEST]


def test_uploads_charges_a_pruned_format1_uploads_objects_to_the_kept_one(copy: Copy) -> None:
    """After ``keep_last: 1`` drops the first upload, the objects in its folder that the
    second still uses stay; ``uploads`` charged them to no upload (STORED the second's own
    folder only, a small share of the bytes kept), now to the oldest kept upload using them."""
    cfg = yaml.safe_load(copy.config.read_text())
    cfg["retention"] = {"keep_last": 1, "keep_hourly": 0, "keep_daily": 0, "keep_weekly": 0}
    copy.config.write_text(yaml.safe_dump(cfg))
    copy.cli("prune", check=True)
    (row,) = json.loads(copy.cli("uploads", "--json", check=True).stdout)
    system = copy.outbox / "systems" / SYSTEM
    kept = sum(p.stat().st_size for p in system.rglob("*") if p.is_file())
    kept -= (system / "owner.json").stat().st_size if (system / "owner.json").exists() else 0
    assert row["upload_id"] == LATEST
    assert row["stored_bytes"] == kept
