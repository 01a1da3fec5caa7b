"""The whole pipeline on the embedded default target, driven through the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.crashloop import assert_referenced_present
from tests.helpers import (
    akoshad,
    base_env,
    changed_paths,
    manifests,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)
from tests.storegen import LiveWriter, duckdb_rows, make_store, sqlite_rows

SYSTEM = "testbox"


class Setup:
    def __init__(self, tmp: Path, **extra: Any) -> None:
        self.tmp = tmp
        self.store = tmp / "store"
        self.outbox = tmp / "outbox"
        self.state = tmp / "state"
        self.env = base_env(tmp / "home")
        settings = {
            "data_dir": str(self.store),
            "state_dir": str(self.state),
            "local_target_dir": str(self.outbox),
            "socket_path": str(tmp / "akoshad.sock"),
            "debounce_seconds": 0.3,
            "max_delay_seconds": 5,
            "cloud_sync": {"system_id": SYSTEM},
        }
        settings.update(extra)
        self.config = write_config(tmp / "config.yaml", **settings)

    def cli(self, *args: str, check: bool = False) -> Any:
        return akoshad(*args, "--config", str(self.config), env=self.env, check=check)

    def once(self) -> Any:
        return self.cli("run", "--once")

    def manifests(self) -> list[dict[str, Any]]:
        return manifests(self.outbox, SYSTEM)


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    s = Setup(tmp_path)
    make_store(s.store)
    return s


def _files(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def _assert_restored_equals(store: Path, restored: Path) -> None:
    for table in ("conversations_v2", "reflections_v2"):
        assert duckdb_rows(restored / "reflection.duckdb", table) == duckdb_rows(
            store / "reflection.duckdb", table
        )
    for table in ("kg_entities", "kg_relationships"):
        assert duckdb_rows(restored / "knowledge_graph.duckdb", table) == duckdb_rows(
            store / "knowledge_graph.duckdb", table
        )
    assert sqlite_rows(restored / "activity.db", "events") == sqlite_rows(
        store / "activity.db", "events"
    )
    assert sqlite_rows(restored / "natural_scheduler.db", "reminders") == sqlite_rows(
        store / "natural_scheduler.db", "reminders"
    )
    src, dst = _files(store), _files(restored)
    for rel, sha in src.items():
        if rel.endswith((".duckdb", ".db", ".wal")):
            continue
        assert dst[rel] == sha, rel


def test_once_then_restore_latest(setup: Setup, tmp_path: Path) -> None:
    res = setup.once()
    assert res.returncode == 0, res.stderr
    (m,) = setup.manifests()
    paths = {f["path"] for f in m["metadata"]["files"]}
    assert paths == {
        "reflection.duckdb",
        "knowledge_graph.duckdb",
        "activity.db",
        "natural_scheduler.db",
        "akosha_sync_state.json",
        "sessions/session-0/state.json",
        "sessions/session-1/state.json",
        "sessions/session-2/state.json",
    }
    kinds = {f["path"]: f["kind"] for f in m["metadata"]["files"]}
    assert kinds["reflection.duckdb"] == "duckdb" and kinds["activity.db"] == "sqlite"
    assert m["files"] == [] and m["metadata"]["format"] == 2  # every file in packs
    restored = tmp_path / "restored"
    res = setup.cli("restore", "--latest", "--dest", str(restored))
    assert res.returncode == 0, res.stderr
    _assert_restored_equals(setup.store, restored)
    assert setup.cli("verify").returncode == 0


def test_files_named_like_side_files_of_no_database_are_backed_up(
    setup: Setup, tmp_path: Path
) -> None:
    """``notes.wal``, ``daily-journal``: no database bears the name before the suffix, so
    they are files of the store (they were left out, unsaid, with exit 0)."""
    (setup.store / "notes.wal").write_text("notes")
    (setup.store / "sessions" / "daily-journal").write_text("journal")
    assert setup.once().returncode == 0
    (m,) = setup.manifests()
    kinds = {f["path"]: f["kind"] for f in m["metadata"]["files"]}
    assert kinds["notes.wal"] == kinds["sessions/daily-journal"] == "file"
    assert kinds["reflection.duckdb"] == "duckdb" and "activity.db-journal" not in kinds
    restored = tmp_path / "restored"
    assert setup.cli("restore", "--latest", "--dest", str(restored)).returncode == 0
    assert (restored / "notes.wal").read_text() == "notes"
    assert (restored / "sessions" / "daily-journal").read_text() == "journal"


def test_a_side_file_name_beside_a_plain_file_is_backed_up(setup: Setup, tmp_path: Path) -> None:
    """``plain.txt.wal`` beside the text file ``plain.txt``: no database captures it, so it
    is a file of its own (it was left out, unsaid, with exit 0)."""
    (setup.store / "plain.txt").write_text("a plain text file, no database")
    (setup.store / "plain.txt.wal").write_text("its own notes")
    assert setup.once().returncode == 0
    (m,) = setup.manifests()
    kinds = {f["path"]: f["kind"] for f in m["metadata"]["files"]}
    assert kinds["plain.txt"] == kinds["plain.txt.wal"] == "file"
    (setup.store / "plain.txt.wal").write_text("its own notes, changed")
    assert setup.once().returncode == 0
    restored = tmp_path / "restored"
    assert setup.cli("restore", "--latest", "--dest", str(restored)).returncode == 0
    assert (restored / "plain.txt.wal").read_text() == "its own notes, changed"


def test_restore_from_empty_state_on_a_new_machine(setup: Setup, tmp_path: Path) -> None:
    setup.once()
    shutil.rmtree(setup.state)  # the ledger is gone; the target alone must suffice
    restored = tmp_path / "r"
    assert setup.cli("restore", "--latest", "--dest", str(restored)).returncode == 0
    _assert_restored_equals(setup.store, restored)


def test_verify_checks_the_ledger_against_its_last_upload(setup: Setup) -> None:
    assert setup.once().returncode == 0
    (m,) = setup.manifests()
    upload_id = m["metadata"]["upload_id"]
    res = setup.cli("verify")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"ledger: 8 file(s) checked against upload {upload_id}, ok" in res.stdout

    db = setup.state / "state.db"
    with sqlite3.connect(db) as con:  # the ledger says another hash than the manifest
        con.execute("UPDATE ledger SET sha256 = ? WHERE path = 'activity.db'", ("0" * 64,))
    con.close()
    res = setup.cli("verify")
    assert res.returncode == 1
    assert f"ledger: activity.db: sha256 differ from the manifest of {upload_id}" in res.stdout
    with sqlite3.connect(db) as con:  # a file the manifest lists is missing from the ledger
        con.execute("DELETE FROM ledger WHERE path IN ('activity.db', 'reflection.duckdb')")
    con.close()
    res = setup.cli("verify")
    assert res.returncode == 1
    assert f"ledger: activity.db of the manifest of {upload_id} is not in it" in res.stdout

    (setup.tmp / "elsewhere").mkdir()  # another machine: no ledger, manifests only
    fresh = Setup(setup.tmp / "elsewhere", local_target_dir=str(setup.outbox))
    res = fresh.cli("verify")
    assert res.returncode == 0 and "ledger: none on this machine" in res.stdout


def test_verify_beside_a_state_that_never_completed_an_upload(setup: Setup) -> None:
    assert setup.once().returncode == 0
    (setup.tmp / "second").mkdir()  # a second state: its run is refused (not the owner)
    second = Setup(
        setup.tmp / "second", data_dir=str(setup.store), local_target_dir=str(setup.outbox)
    )
    assert second.once().returncode == 1 and (second.state / "state.db").is_file()
    res = second.cli("verify")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ledger: no upload completed on this machine yet: checked the manifests only" in (
        res.stdout
    )
    assert "against upload ledger" not in res.stdout


def test_verify_finds_an_object_of_the_ledger_gone(setup: Setup) -> None:
    assert setup.once().returncode == 0
    (setup.store / "akosha_sync_state.json").write_text('{"changed": 1}')
    assert setup.once().returncode == 0
    first = setup.manifests()[0]
    old = next(f for f in first["metadata"]["files"] if f["path"] == "activity.db")
    (pack,) = {c["key"] for c in old["chunks"]}
    (setup.outbox / pack).unlink()  # still used by the newest upload (unchanged)
    newest = setup.manifests()[-1]["metadata"]["upload_id"]
    res = setup.cli("verify")  # the newest upload's check finds it (not told twice)
    assert res.returncode == 1
    n = len(old["chunks"])
    assert f"{newest}: activity.db: chunk 1 of {n} (sha256 " in res.stdout, res.stdout
    assert f"{pack} at " in res.stdout and "is missing: its object does not exist" in res.stdout
    assert "ledger: activity.db" not in res.stdout
    assert f"against upload {newest}, ok" not in res.stdout  # no "ok" after its problems
    assert f"against upload {newest}, they agree with its manifest; the problems" in res.stdout
    # the ledger looks at its objects itself when its upload was not verified just now
    res = setup.cli("verify", "--upload-id", first["metadata"]["upload_id"])
    assert res.returncode == 1
    assert f"ledger: activity.db: chunk 1 of {n}: object {pack} is missing" in res.stdout


def test_restore_refuses_non_empty_dest(setup: Setup, tmp_path: Path) -> None:
    setup.once()
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "x").write_text("keep me")
    res = setup.cli("restore", "--latest", "--dest", str(dest))
    assert res.returncode == 1 and "not empty" in res.stderr
    assert (dest / "x").read_text() == "keep me"


def test_unchanged_store_makes_no_upload(setup: Setup) -> None:
    setup.once()
    before = list(setup.outbox.rglob("*"))
    res = setup.once()
    assert res.returncode == 0
    assert list(setup.outbox.rglob("*")) == before
    assert len(setup.manifests()) == 1


def test_one_small_change_uploads_only_that_file(setup: Setup) -> None:
    setup.once()
    (setup.store / "sessions" / "session-1" / "state.json").write_text('{"changed": true}')
    assert setup.once().returncode == 0
    first, second = setup.manifests()
    assert changed_paths(first, second) == {"sessions/session-1/state.json"}
    folder = setup.outbox / "systems" / SYSTEM / "uploads" / second["metadata"]["upload_id"]
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json"]  # bytes in packs
    assert len(second["metadata"]["files"]) == len(first["metadata"]["files"])
    (changed,) = (f for f in second["metadata"]["files"] if f["path"].endswith("n-1/state.json"))
    first_packs = {c["key"] for f in first["metadata"]["files"] for c in f["chunks"]}
    assert {c["key"] for c in changed["chunks"]}.isdisjoint(first_packs)  # one new pack
    for f in second["metadata"]["files"]:
        for c in f["chunks"]:
            assert (setup.outbox / c["key"]).exists()


def test_same_size_rewrite_with_mtime_put_back_is_caught(setup: Setup, tmp_path: Path) -> None:
    setup.once()
    p = setup.store / "akosha_sync_state.json"
    st = p.stat()
    data = p.read_bytes()
    p.write_bytes(data.upper())  # same size, new content
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime put back
    assert setup.once().returncode == 0
    assert len(setup.manifests()) == 2
    restored = tmp_path / "r"
    setup.cli("restore", "--latest", "--dest", str(restored), check=True)
    assert (restored / "akosha_sync_state.json").read_bytes() == data.upper()


def test_a_chmod_alone_makes_an_upload_and_a_restore_has_the_new_mode(
    setup: Setup, tmp_path: Path
) -> None:
    setup.once()
    p = setup.store / "akosha_sync_state.json"
    p.chmod(0o644)
    setup.once()
    before = len(setup.manifests())
    p.chmod(0o600)  # the content is the same: only its permission bits are not
    assert setup.once().returncode == 0
    assert len(setup.manifests()) == before + 1
    [entry] = [f for f in setup.manifests()[-1]["metadata"]["files"] if f["path"] == p.name]
    assert entry["mode"] == 0o600
    restored = tmp_path / "r"
    setup.cli("restore", "--latest", "--dest", str(restored), check=True)
    assert (restored / p.name).stat().st_mode & 0o777 == 0o600


def test_a_restore_gives_files_the_modification_time_they_had_when_captured(
    setup: Setup, tmp_path: Path
) -> None:
    """Each entry records the live file's mtime; an unchanged file keeps its own in later
    uploads (from the ledger); a large file's entry (a chunk list) too; restore sets it."""
    big = setup.store / "big.bin"
    big.write_bytes(random.Random(3).randbytes(20 * 1024 * 1024))  # > 64 chunks: a chunk list
    stamps = {}
    for n, f in enumerate(sorted(q for q in setup.store.rglob("*") if q.is_file())):
        ns = 1_600_000_000_123_456_789 + n * 1_000_000_007
        os.utime(f, ns=(ns, ns))
        stamps[f.relative_to(setup.store).as_posix()] = ns
    assert setup.once().returncode == 0
    notes = setup.store / "akosha_sync_state.json"
    notes.write_text('{"changed": true}')
    stamps[notes.name] = notes.stat().st_mtime_ns
    assert setup.once().returncode == 0
    first, second = setup.manifests()[-2:]
    kept = {f["path"]: f for f in second["metadata"]["files"]}
    assert kept["big.bin"]["mtime_ns"] == stamps["big.bin"] and "chunk_list" in kept["big.bin"]
    for upload, want in ((second, stamps), (first, None)):
        restored = tmp_path / upload["metadata"]["upload_id"]
        setup.cli(
            "restore",
            "--upload-id",
            upload["metadata"]["upload_id"],
            "--dest",
            str(restored),
            check=True,
        )
        got = {
            q.relative_to(restored).as_posix(): q.stat().st_mtime_ns
            for q in restored.rglob("*")
            if q.is_file()
        }
        if want is None:  # the first upload: every file as it was before the change
            assert got[notes.name] != stamps[notes.name]
            assert got["big.bin"] == stamps["big.bin"]
            continue
        # a database is captured as a copy, its WAL with it: the live files' times all the same
        assert got == {k: v for k, v in want.items() if k in got} and got.keys() <= want.keys()
        assert len(got) >= len(want) - 2  # at most a WAL or journal not captured


def test_deletion_makes_an_upload_without_the_file(setup: Setup) -> None:
    setup.once()
    shutil.rmtree(setup.store / "sessions" / "session-2")
    assert setup.once().returncode == 0
    last = setup.manifests()[-1]
    assert "sessions/session-2/state.json" not in {f["path"] for f in last["metadata"]["files"]}
    assert last["files"] == []


def test_missing_data_dir_makes_no_upload(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    res = s.once()
    assert res.returncode == 1 and str(s.store) in res.stderr  # named, not "nothing changed"
    assert s.manifests() == []


def test_live_writer_never_sees_a_lock(setup: Setup, tmp_path: Path) -> None:
    writer = LiveWriter(setup.store / "reflection.duckdb", interval=0.02, log=tmp_path / "w.log")
    try:
        time.sleep(0.5)
        before = set(writer.committed())
        res = setup.once()
        time.sleep(0.3)
    finally:
        writer.stop()
    assert res.returncode == 0, res.stderr
    assert writer.errors() == []
    restored = tmp_path / "r"
    setup.cli("restore", "--latest", "--dest", str(restored), check=True)
    m = setup.manifests()[-1]
    assert "reflection.duckdb.wal" in {f["path"] for f in m["metadata"]["files"]}
    got = {r[0] for r in duckdb_rows(restored / "reflection.duckdb", "live_rows")}
    assert before and before <= got


def test_once_refused_while_daemon_runs(setup: Setup, tmp_path: Path) -> None:
    proc = start_daemon(setup.config, setup.env, tmp_path / "d.log")
    try:
        wait_for(lambda: setup.manifests(), 20)
        res = setup.once()
        assert res.returncode == 1 and "sync --wait" in res.stderr
    finally:
        assert stop_daemon(proc) == 0


def test_daemon_uploads_change_within_debounce_plus_2s(tmp_path: Path) -> None:
    setup = Setup(tmp_path, min_upload_interval_seconds=0)  # each change: an upload of its own
    make_store(setup.store)
    proc = start_daemon(setup.config, setup.env, tmp_path / "d.log")
    try:
        wait_for(lambda: len(setup.manifests()) == 1, 20)
        time.sleep(0.5)
        (setup.store / "akosha_sync_state.json").write_text('{"now": 1}')
        # the deadline is the promise: debounce (0.3 s) + 2 s
        wait_for(lambda: len(setup.manifests()) == 2, 0.3 + 2, interval=0.02)
        assert changed_paths(*setup.manifests()[-2:]) == {"akosha_sync_state.json"}
    finally:
        assert stop_daemon(proc) == 0
    # changed while stopped: uploaded at the next start
    (setup.store / "new.json").write_text('{"made": "offline"}')
    proc = start_daemon(setup.config, setup.env, tmp_path / "d.log")
    try:
        wait_for(lambda: len(setup.manifests()) == 3, 20)
        assert changed_paths(*setup.manifests()[-2:]) == {"new.json"}
    finally:
        assert stop_daemon(proc) == 0


def test_daemon_rewatches_a_recreated_store(tmp_path: Path) -> None:
    setup = Setup(tmp_path, min_upload_interval_seconds=0)  # each change: an upload of its own
    make_store(setup.store)
    proc = start_daemon(setup.config, setup.env, tmp_path / "d.log")
    try:
        wait_for(lambda: len(setup.manifests()) == 1, 20)
        shutil.rmtree(setup.store)
        time.sleep(1.5)
        setup.store.mkdir()
        (setup.store / "fresh.json").write_text("{}")
        last = wait_for(
            lambda: [
                m
                for m in setup.manifests()
                if {f["path"] for f in m["metadata"]["files"]} == {"fresh.json"}
            ],
            20,
        )
        assert last
    finally:
        assert stop_daemon(proc) == 0


def _store_matches(setup: Setup, manifest: dict[str, Any]) -> None:
    assert_referenced_present(manifest, setup.outbox)


@pytest.mark.slow
def test_kill_9_during_uploads_always_converges(setup: Setup, tmp_path: Path) -> None:
    rng = random.Random(7)
    big = setup.store / "big.bin"
    for cycle in range(6):
        big.write_bytes(os.urandom(3_000_000) + bytes([cycle]) * 1000)
        (setup.store / f"f{cycle}.json").write_text(json.dumps({"cycle": cycle}))
        proc = start_daemon(setup.config, setup.env, tmp_path / "d.log")
        time.sleep(rng.uniform(0.3, 1.5))
        proc.kill()
        proc.wait()
        for m in setup.manifests():
            _store_matches(setup, m)
    assert setup.once().returncode == 0
    last = setup.manifests()[-1]
    _store_matches(setup, last)
    restored = tmp_path / "r"
    setup.cli("restore", "--latest", "--dest", str(restored), check=True)
    _assert_restored_equals(setup.store, restored)
    assert (restored / "big.bin").read_bytes() == big.read_bytes()
    assert not list((setup.state / "staging").iterdir())
    assert not [p for p in setup.outbox.rglob("*") if ".akoshad-tmp-" in p.name]
    con = sqlite3.connect(setup.state / "state.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT COUNT(*) FROM queue").fetchone()[0] == 0


def test_unchanged_run_is_answered_by_the_quick_check(setup: Setup) -> None:
    assert setup.once().returncode == 0
    second = setup.once()  # records nothing new, but proves the store unchanged
    assert second.returncode == 0
    cache = list((setup.tmp / "home" / ".cache" / "akoshad").glob("once-*.json"))
    assert len(cache) == 1
    t0 = time.monotonic()
    quick = setup.once()
    elapsed = time.monotonic() - t0
    assert quick.returncode == 0 and "nothing changed" in quick.stderr
    assert "reconciled" not in quick.stderr  # the full run never started
    assert elapsed < 5  # the interpreter's start and the check (0.5-1 s on a slow machine)
    # a change made after it is seen: the full run takes over
    p = setup.store / "akosha_sync_state.json"
    st = p.stat()
    p.write_bytes(p.read_bytes().upper())
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size, mtime put back
    res = setup.once()
    assert "reconciled" in res.stderr and len(setup.manifests()) == 2
    # a daemon holding the state makes the quick check step aside (and --once refuse):
    # what a daemon holds (runtime.wiring.StateLock) is the lock, with its pid in the file
    import fcntl

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "akoshad"])
    fd = os.open(setup.state / "akoshad.lock", os.O_RDWR)
    try:
        deadline = time.monotonic() + 10  # its own command line, not its parent's (a fork)
        while b"akoshad" not in Path(f"/proc/{holder.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline, "the holder did not start"
            time.sleep(0.01)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"{holder.pid}\n".encode())
        res = setup.once()
        assert res.returncode == 1 and "sync --wait" in res.stderr
    finally:
        os.close(fd)
        holder.kill()
        holder.wait()
