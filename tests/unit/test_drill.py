"""Restore drill parts: capture facts, the rate cap, the upload picked, the private
directory, the engine checks and their worker."""

from __future__ import annotations

import asyncio
import fcntl
import gzip
import json
import os
import shutil
import signal
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pytest

from akoshad.config import load_settings
from akoshad.errors import PermanentError, TransientError
from akoshad.events import EventBus
from akoshad.fileio import LiveStat
from akoshad.manifest.facts import Facts, duckdb_row_counts, json_facts
from akoshad.manifest.layout import FileEntry, build_manifest, entries_of
from akoshad.pipeline.capture.snapshot import Captured, Snapshotter
from akoshad.restore import drill, drill_check, drill_dirs, drill_worker
from akoshad.restore.throttle import DrillReader, TokenBucket
from akoshad.runtime.drills import FIRST_DELAY, TICK, DrillScheduler
from akoshad.store.db import MIGRATIONS, SCHEMA_VERSION, LedgerEntry, StateDB, read_ledger
from akoshad.targets.local import LocalTarget
from tests.sched_rig import ListingDownTarget
from tests.storegen import make_reflection

FIXTURE = Path(__file__).parents[1] / "data" / "drill" / "outbox"
FIXTURE_UPLOAD = FIXTURE / "systems/drillfixture/uploads/20250101T000000000000Z-f1x7ur"


# ---- capture facts ------------------------------------------------------------------------
def test_facts_round_trip_and_hostile_values_ignored() -> None:
    facts = Facts(rows=(("a", 3), ("s.b", 0)))
    assert facts.as_fields() == {"rows": {"a": 3, "s.b": 0}}
    assert Facts.from_json(facts.to_json()) == facts
    assert Facts.from_fields({"json_ok": True}) == Facts(json_ok=True)
    assert Facts.from_fields({}) is None
    assert Facts.from_fields({"rows": {"a": -1}}) is None
    assert Facts.from_fields({"rows": {"a": True}}) is None
    assert Facts.from_fields({"rows": ["a"], "json_ok": "yes"}) is None
    assert Facts.from_json("not json") is None


def test_the_facts_of_one_text_are_one_object() -> None:
    """A manifest made from the ledger reads every row's facts: equal texts give the one
    (frozen) object, not one each (100,000 files held 9 MB of equal facts)."""
    text = Facts(json_ok=True).to_json()
    assert Facts.from_json(text) is Facts.from_json("".join([text[:1], text[1:]]))
    assert Facts.from_json("") is None and Facts.from_json(None) is None


def test_row_counts_include_the_wal(tmp_path: Path) -> None:
    db = tmp_path / "x.duckdb"
    con = duckdb.connect(str(db))
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("CREATE TABLE t (a INTEGER)")
    con.execute("CREATE SCHEMA other")
    con.execute("CREATE TABLE other.u (b VARCHAR)")
    con.execute("CHECKPOINT")
    con.execute("INSERT INTO t SELECT * FROM range(7)")
    con.execute("INSERT INTO other.u VALUES ('x')")
    shutil.copyfile(db, tmp_path / "copy.duckdb")
    shutil.copyfile(Path(f"{db}.wal"), tmp_path / "copy.duckdb.wal")
    con.close()
    ro = duckdb.connect(str(tmp_path / "copy.duckdb"), read_only=True)
    try:
        assert duckdb_row_counts(ro) == Facts(rows=(("other.u", 1), ("t", 7)))
    finally:
        ro.close()


def test_json_facts(tmp_path: Path) -> None:
    good, torn, other = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.txt"
    good.write_text('{"a": [1, 2]}')
    torn.write_text('{"a": [1, ')
    other.write_text("{}")
    assert json_facts("s/a.json", good) == Facts(json_ok=True)
    assert json_facts("b.JSON", torn) == Facts(json_ok=False)
    assert json_facts("c.txt", other) is None


def test_capture_records_rows_and_json(tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    make_reflection(store / "reflection.duckdb", conversations=4, reflections=2)
    (store / "state.json").write_text('{"ok": true}')
    snap = Snapshotter(store, tmp_path / "staging", sleep=lambda _s: None)
    snap.reset_staging()
    db = snap.capture("reflection.duckdb")
    assert isinstance(db, Captured)
    assert db.files[0].facts == Facts(rows=(("conversations_v2", 4), ("reflections_v2", 2)))
    js = snap.capture("state.json")
    assert isinstance(js, Captured) and js.files[0].facts == Facts(json_ok=True)


def test_manifest_carries_facts_and_reads_them_back() -> None:
    uid = "20260101T000000000000Z-abcdef"
    key = f"systems/h/uploads/{uid}/"
    entries = [
        FileEntry("r.duckdb", "r.duckdb", key + "r.duckdb", 1, "a" * 64, 1, "none", "duckdb",
                  Facts(rows=(("t", 5),))),
        FileEntry("s.json", "s.json", key + "s.json", 1, "b" * 64, 1, "none", "file",
                  Facts(json_ok=True)),
        FileEntry("x.db", "x.db", key + "x.db", 1, "c" * 64, 1, "none", "sqlite"),
    ]  # fmt: skip
    manifest = build_manifest(system_id="h", upload_id=uid, entries=entries, skipped={})
    files = {f["path"]: f for f in manifest["metadata"]["files"]}
    assert files["r.duckdb"]["rows"] == {"t": 5} and "json_ok" not in files["r.duckdb"]
    assert files["s.json"]["json_ok"] is True
    assert "rows" not in files["x.db"] and "facts" not in files["x.db"]
    assert entries_of(json.loads(json.dumps(manifest))) == entries


async def test_ledger_keeps_facts_and_old_state_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    con = sqlite3.connect(path)  # a state database of schema 1, as before drills
    con.executescript(MIGRATIONS[0])
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    db = StateDB(path)
    await db.open()
    try:
        row = LedgerEntry(
            "local", "r.duckdb", "r.duckdb", 1, LiveStat(1, 1, 1, 1), "a" * 64, "k", "n", 1, "none",
            "duckdb", "u1", Facts(rows=(("t", 2),)).to_json(),
        )  # fmt: skip
        await db.transaction(lambda c: StateDB.write_ledger(c, "local", [row], []))
        assert (await db.ledger("local"))["r.duckdb"].facts == '{"rows":{"t":2}}'
    finally:
        await db.close()
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    con.close()


# ---- reading, bounded ---------------------------------------------------------------------
async def test_token_bucket_holds_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(1000.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        await bucket.take(500)  # 5000 bytes at 1000 B/s, 1000 of them as the first burst
    assert now[0] == pytest.approx(4.0)
    big = TokenBucket(1000.0, clock=lambda: now[0], sleep=sleep)
    await big.take(10_000)  # one chunk larger than the burst is allowed, then paid for
    assert slept[-1] == pytest.approx(9.0)


async def test_drill_reader_reads_and_never_writes(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "t")
    await target.start()
    await target.put_bytes("systems/s/uploads/u/a", b"x" * 3000, "application/octet-stream")
    reader = DrillReader(target, TokenBucket(1e9))
    data = b"".join([c async for c in reader.read("systems/s/uploads/u/a")])
    assert data == b"x" * 3000 and reader.bytes_read == 3000
    with pytest.raises(PermanentError):
        await reader.put_bytes("systems/s/uploads/u/b", b"", "x")
    with pytest.raises(PermanentError):
        await reader.delete_keys(["systems/s/uploads/u/a"])
    assert await target.head("systems/s/uploads/u/a") == 3000


async def test_pick_upload_skips_the_future(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "t")
    await target.start()
    assert await drill.pick_upload(target, "s") is None
    ids = ["20260101T000000000000Z-aaaaaa", "20260102T000000000000Z-bbbbbb"]
    future = "20990101T000000000000Z-cccccc"
    for uid in [*ids, future]:
        await target.put_bytes(f"systems/s/uploads/{uid}/manifest.json", b"{}", "x")
    await target.put_bytes("systems/s/uploads/20270101T000000000000Z-d/x", b"", "x")
    now = datetime(2026, 6, 1, tzinfo=UTC)
    assert await drill.pick_upload(target, "s", now=now) == ids[1]


# ---- the private directory ----------------------------------------------------------------
def test_drill_dir_is_private_and_stale_ones_go(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path, fd = drill.make_drill_dir(state)
    try:
        assert path.parent == state and path.name.startswith("drill-")
        assert path.stat().st_mode & 0o777 == 0o700
        stale = state / "drill-old"
        (stale / "store").mkdir(parents=True)
        (stale / drill_dirs.LOCK_NAME).write_text("")
        unlocked = state / "drill-never-locked"
        unlocked.mkdir()
        os.utime(unlocked, (time.time() - 120, time.time() - 120))
        starting = state / "drill-starting"  # just made by another drill: not yet locked
        starting.mkdir()
        (state / "drill-file").write_text("not a directory: left alone")
        assert drill_dirs.remove_stale(state) == 2
        assert path.is_dir()  # in use: its lock is held
        assert not stale.exists() and not unlocked.exists()
        assert starting.is_dir()
        assert (state / "drill-file").exists()
    finally:
        drill.drop_drill_dir(path, fd)
    assert not path.exists()
    with pytest.raises(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX)  # the fd is closed


# ---- engine checks ------------------------------------------------------------------------
def _fixture_file(tmp_path: Path, name: str, as_name: str) -> Path:
    out = tmp_path / as_name
    out.write_bytes(gzip.decompress((FIXTURE_UPLOAD / name).read_bytes()))
    return out


def test_check_duckdb_reads_every_column_and_compares_rows(tmp_path: Path) -> None:
    good = tmp_path / "good.duckdb"
    make_reflection(good, conversations=3, reflections=1)
    assert drill_worker.check_duckdb(good, "good.duckdb", None) == ([], [])
    right = {"conversations_v2": 3, "reflections_v2": 1}
    assert drill_worker.check_duckdb(good, "good.duckdb", right) == ([], [])
    problems, _ = drill_worker.check_duckdb(good, "good.duckdb", {"conversations_v2": 4, "gone": 1})
    assert problems == [
        "good.duckdb: table conversations_v2 has 3 row(s), 4 at capture",
        "good.duckdb: table gone is missing (1 row(s) at capture)",
        "good.duckdb: table reflections_v2 was not there at capture",
    ]
    # a corrupted data block: the row count answers, reading the column does not
    bad = _fixture_file(tmp_path, "reflection.duckdb.gz", "bad.duckdb")
    con = duckdb.connect(str(bad), read_only=True)
    assert con.execute("SELECT count(*) FROM conversations_v2").fetchone() == (20000,)
    con.close()
    problems, _ = drill_worker.check_duckdb(bad, "bad.duckdb", None)
    assert len(problems) == 1
    assert problems[0].startswith("bad.duckdb: table conversations_v2 cannot be read: Corrupt")
    kg = _fixture_file(tmp_path, "knowledge_graph.duckdb.gz", "kg.duckdb")
    problems, _ = drill_worker.check_duckdb(kg, "kg.duckdb", {"kg_entities": 50})
    assert len(problems) == 1 and problems[0].startswith("kg.duckdb: does not open with duckdb")


def test_check_sqlite_and_json(tmp_path: Path) -> None:
    ok = _fixture_file(tmp_path, "natural_scheduler.db.gz", "ok.db")
    assert drill_worker.check_sqlite(ok, "ok.db") == []
    bad = _fixture_file(tmp_path, "activity.db.gz", "bad.db")
    problems = drill_worker.check_sqlite(bad, "bad.db")
    assert problems and all(p.startswith("bad.db: integrity_check") for p in problems)
    assert len(problems) <= drill_worker.SQLITE_LINES + 1
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    assert drill_worker.check_sqlite(junk, "junk.db")[0].startswith("junk.db: ")
    torn = tmp_path / "t.json"
    torn.write_text('{"a": ')
    assert drill_worker.check_json(torn, "t.json")[0].startswith("t.json: does not parse")
    torn.write_text('{"a": 1}')
    assert drill_worker.check_json(torn, "t.json") == []


def test_worker_spec_picks_databases_and_parsed_json() -> None:
    key = "systems/h/uploads/u/"
    entries = [
        FileEntry("a.duckdb", "a", key + "a", 1, "a" * 64, 1, "none", "duckdb",
                  Facts(rows=(("t", 1),))),
        FileEntry("a.duckdb.wal", "w", key + "w", 1, "a" * 64, 1, "none", "duckdb-wal"),
        FileEntry("b.db", "b", key + "b", 1, "a" * 64, 1, "none", "sqlite"),
        FileEntry("c.json", "c", key + "c", 1, "a" * 64, 1, "none", "file", Facts(json_ok=True)),
        FileEntry("d.json", "d", key + "d", 1, "a" * 64, 1, "none", "file", Facts(json_ok=False)),
        FileEntry("e.bin", "e", key + "e", 1, "a" * 64, 1, "none", "file"),
    ]  # fmt: skip
    assert drill_check.worker_spec(entries) == [
        {"path": "a.duckdb", "kind": "duckdb", "rows": {"t": 1}},
        {"path": "b.db", "kind": "sqlite"},
        {"path": "c.json", "kind": "file", "json_ok": True},
    ]


# A stand-in worker that dies of a real SIGSEGV on the file named "crash.db".
_CRASHING_WORKER = """
import json, os, signal, sys
for spec in json.loads(sys.stdin.read())["files"]:
    print(json.dumps({"checking": spec["path"]}), flush=True)
    if spec["path"] == "crash.db":
        os.kill(os.getpid(), signal.SIGSEGV)
    print(json.dumps({"path": spec["path"], "problems": [spec["path"] + ": seen"],
                      "notes": []}), flush=True)
"""


async def test_a_crashing_check_is_a_problem_and_the_rest_still_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(drill_check, "_WORKER", _CRASHING_WORKER)
    specs = [{"path": p, "kind": "sqlite"} for p in ("a.db", "crash.db", "b.db")]
    problems, notes = await drill_check.run_worker(tmp_path, specs, tmp_path / "w.log")
    assert problems == [
        "a.db: seen",
        f"crash.db: the check crashed its worker (signal {int(signal.SIGSEGV)})",
        "b.db: seen",
    ]
    assert notes == []


async def test_real_worker_over_the_fixture(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    _fixture_file(root, "reflection.duckdb.gz", "reflection.duckdb")
    _fixture_file(root, "natural_scheduler.db.gz", "natural_scheduler.db")
    specs = [
        {"path": "reflection.duckdb", "kind": "duckdb", "rows": {"conversations_v2": 20000}},
        {"path": "natural_scheduler.db", "kind": "sqlite"},
    ]
    problems, _notes = await drill_check.run_worker(root, specs, tmp_path / "w.log")  # type: ignore[arg-type]
    assert [p.split(":")[0] for p in problems] == ["reflection.duckdb", "reflection.duckdb"]
    assert "table reflections_v2 was not there at capture" in problems[1]


# ---- the daemon's schedule ----------------------------------------------------------------
class _Sink:
    def __init__(self) -> None:
        self.heard: list[tuple[str, dict[str, Any]]] = []

    def emit(self, event: str, fields: dict[str, Any]) -> None:
        self.heard.append((event, fields))


class _Host:
    def __init__(self, tmp: Path, target: Any, hours: float) -> None:
        self.settings = load_settings(
            None,
            overrides={
                "data_dir": str(tmp / "store"),
                "state_dir": str(tmp / "state"),
                "local_target_dir": str(tmp / "outbox"),
                "drill_interval_hours": hours,
                "cloud_sync": {"system_id": "drillfixture"},
            },
            environ={"HOME": str(tmp)},
        )
        self.state = StateDB(tmp / "state" / "state.db")
        self.target = target
        self.events = EventBus("drillfixture")
        self.sink = _Sink()
        self.events.subscribe(self.sink)
        self.stop_event = asyncio.Event()


def scheduler(host: _Host) -> DrillScheduler:
    return DrillScheduler(
        host.settings,
        state=host.state,
        target=host.target,
        events=host.events,
        stop_event=host.stop_event,
        pass_lock=asyncio.Lock(),
    )


async def test_scheduler_skips_quietly_then_drills_records_and_emits(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "outbox")
    host = _Host(tmp_path, target, hours=1.0)
    await host.state.open()
    try:
        sched = scheduler(host)
        assert await sched.drill_once() is None  # nothing to drill: no record, no event
        assert await sched.last() is None and host.sink.heard == []
        assert 0 < await sched.due_in() <= FIRST_DELAY
        shutil.copytree(FIXTURE, tmp_path / "outbox", dirs_exist_ok=True)
        result = await sched.drill_once()
        assert result is not None and not result.ok
        assert await sched.last() == result.as_dict()
        assert await sched.last_good_at() is None
        ((event, fields),) = host.sink.heard
        assert event == "drill" and fields["ok"] is False
        assert fields["upload_id"] == "20250101T000000000000Z-f1x7ur"
        assert fields["problems"] == result.problems
        assert await sched.due_in() == pytest.approx(result.at + 3600 - time.time(), abs=1)
        sched.configure(host.settings.model_copy(update={"drill_interval_hours": 0}))
        assert await sched.due_in() == TICK  # off
    finally:
        await host.state.close()


async def test_a_start_with_a_failed_drill_on_record_drills_again_soon(tmp_path: Path) -> None:
    """Before: a daemon restarted (after the damage was fixed, often) waited a whole
    interval from the failed drill, unsafe and --check 1 all along."""
    target = LocalTarget(tmp_path / "outbox")
    shutil.copytree(FIXTURE, tmp_path / "outbox", dirs_exist_ok=True)
    host = _Host(tmp_path, target, hours=24.0)
    await host.state.open()
    try:
        result = await scheduler(host).drill_once()
        assert result is not None and not result.ok
        again = scheduler(host)  # the next start
        assert 0 < await again.due_in() <= FIRST_DELAY
        assert await again.drill_once() is not None  # fails again: the interval then
        assert await again.due_in() > 23 * 3600
    finally:
        await host.state.close()


async def test_a_clock_set_back_does_not_hold_the_drills_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon started, and drilled, while the clock ran a year ahead; the clock is set
    right while it runs: the next drill is due within an interval, not a year later."""
    target = LocalTarget(tmp_path / "outbox")
    shutil.copytree(FIXTURE, tmp_path / "outbox", dirs_exist_ok=True)
    host = _Host(tmp_path, target, hours=1.0)
    await host.state.open()
    try:
        real = time.time
        with monkeypatch.context() as m:
            m.setattr(time, "time", lambda: real() + 365 * 86400)
            sched = scheduler(host)
            assert await sched.drill_once() is not None
        assert await sched.due_in() <= FIRST_DELAY
        assert (await sched.last() or {})["at"] > real() + 86400  # recorded by the clock ahead
    finally:
        await host.state.close()


class _DownTarget(LocalTarget):
    async def list_keys(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        raise TransientError("connection refused")
        yield prefix


async def test_scheduler_survives_a_target_that_is_down(tmp_path: Path) -> None:
    host = _Host(tmp_path, _DownTarget(tmp_path / "outbox"), hours=0.0001)
    await host.state.open()
    try:
        sched = scheduler(host)
        sched.started -= FIRST_DELAY  # due now
        task = asyncio.create_task(sched.run())
        for _ in range(100):
            if sched._not_before:
                break
            await asyncio.sleep(0.02)
        assert sched._not_before > time.monotonic()  # postponed, not crashed
        assert not task.done()
        host.stop_event.set()
        await asyncio.wait_for(task, 5)
        assert await sched.last() is None
    finally:
        await host.state.close()


def test_read_only_ledger_reader_accepts_a_schema_1_database(tmp_path: Path) -> None:
    """``verify`` beside a daemon of the previous version (its state not migrated yet)."""
    path = tmp_path / "state.db"
    con = sqlite3.connect(path)
    con.executescript(MIGRATIONS[0])
    con.execute(
        "INSERT INTO ledger VALUES ('local', 'a', 'a', 1, 1, 1, 1, 1, ?, 'k', 'n', 1, 'none', "
        "'file', 'u1')",
        ("a" * 64,),
    )
    con.execute("PRAGMA user_version = 1")
    con.commit()
    con.close()
    view = read_ledger(path, "local")
    assert view is not None and view.entries["a"].facts is None


async def test_a_drill_that_forgot_the_target_compares_every_file_even_when_it_stops(
    tmp_path: Path,
) -> None:
    """The last upload's manifest is gone, so the drill forgets the target; then listing
    the uploads fails. The files are compared with the (emptied) ledger all the same: the
    next upload holds the whole store, not only what changes from now on."""
    host = _Host(tmp_path, _DownTarget(tmp_path / "outbox"), hours=1.0)
    await host.state.open()
    try:
        await host.state.begin_upload("20260101T000000000000Z-aaaaaa", "local", "local", {})
        await host.state.transaction(
            lambda c: StateDB.finish_upload(
                c, upload_id="20260101T000000000000Z-aaaaaa", outcome="completed"
            )
        )
        sched = scheduler(host)
        compared: list[bool] = []

        async def reconcile() -> None:
            compared.append(True)

        sched.reconcile = reconcile
        with pytest.raises(TransientError):
            await sched.drill_once()
        assert compared == [True]
    finally:
        await host.state.close()


async def test_a_drill_that_cannot_read_the_target_marks_it_and_says_so_until_one_runs(
    tmp_path: Path,
) -> None:
    """The target unreadable at a drill: unavailable at once (status degraded, the
    ``degraded`` event), ``not_run`` says why; the next drill that reads it clears both."""
    from akoshad.pipeline.stats import Stats
    from akoshad.runtime.health import check_problems, drill_not_run

    target = ListingDownTarget(tmp_path / "outbox")
    shutil.copytree(FIXTURE, tmp_path / "outbox", dirs_exist_ok=True)
    host = _Host(tmp_path, target, hours=1.0)
    stats = Stats()
    await host.state.open()
    try:
        sched = scheduler(host)
        sched.health = stats.target(target.name)
        with pytest.raises(TransientError):
            await sched.drill_once()
        assert stats.degraded_reason() == f"{target.name}: connection refused"
        assert sched.not_run == f"{target.name} cannot be read: connection refused"
        line = drill_not_run(sched.not_run)
        assert line is not None and "could not run" in line
        assert check_problems({"drill_not_run": line}) == [line]
        target.down = False
        assert await sched.drill_once() is not None
        assert sched.not_run is None and stats.degraded_reason() is None
    finally:
        await host.state.close()


async def test_a_drill_that_reads_again_leaves_an_upload_failure_standing(tmp_path: Path) -> None:
    """An upload failed (another error) after the drill marked the target: the drill that
    reads again does not hide it; nor one the drill did not mark."""
    from akoshad.pipeline.stats import Stats

    target = ListingDownTarget(tmp_path / "outbox")
    shutil.copytree(FIXTURE, tmp_path / "outbox", dirs_exist_ok=True)
    host = _Host(tmp_path, target, hours=1.0)
    stats = Stats()
    await host.state.open()
    try:
        sched = scheduler(host)
        sched.health = health = stats.target(target.name)
        with pytest.raises(TransientError):
            await sched.drill_once()
        health.failed("AccessDenied: the key may not write")
        target.down = False
        assert await sched.drill_once() is not None
        assert not health.available and health.last_error == "AccessDenied: the key may not write"
        assert sched.not_run is None
    finally:
        await host.state.close()


async def test_a_drill_that_cannot_write_its_directory_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """state_dir's disk full: the drill cannot run; ``not_run`` names the error, the
    target stays available (it was not the target)."""
    from akoshad.pipeline.stats import Stats

    shutil.copytree(FIXTURE, tmp_path / "outbox", dirs_exist_ok=True)
    target = LocalTarget(tmp_path / "outbox")
    host = _Host(tmp_path, target, hours=1.0)
    stats = Stats()

    async def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(drill, "drill_picked", full)
    await host.state.open()
    try:
        sched = scheduler(host)
        sched.health = stats.target(target.name)
        with pytest.raises(OSError):
            await sched.drill_once()
        assert sched.not_run == "OSError: [Errno 28] No space left on device"
        assert stats.degraded_reason() is None
    finally:
        await host.state.close()


async def test_a_drill_by_hand_that_cannot_run_says_why_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`akoshad drill` while state_dir's disk is full printed `akoshad: internal error:
    OperationalError` (and the daemon logged a traceback): the reply now says why."""
    from akoshad.runtime.control_client import ControlRequestError
    from akoshad.runtime.drills import drill_request

    shutil.copytree(FIXTURE, tmp_path / "outbox", dirs_exist_ok=True)
    host = _Host(tmp_path, LocalTarget(tmp_path / "outbox"), hours=1.0)

    async def full(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(drill, "drill_picked", full)
    await host.state.open()
    try:
        with pytest.raises(ControlRequestError) as caught:
            await drill_request(scheduler(host))
        assert str(caught.value) == (
            "the drill could not run: OperationalError: database or disk is full"
        )
    finally:
        await host.state.close()
