"""The long-lived worker child (akoshad/resident.py, the daemon's DuckDB worker): many
requests in one process, and a crash, a hang, idleness, wear and shutdown handled with real
child processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from akoshad import duckdb_commands, duckdb_worker
from akoshad.akosha.encoding import encode_json, memories_json
from akoshad.akosha.rows import list_rows, load_memories
from akoshad.pipeline.capture.snapshot import Captured, Skipped, Snapshotter
from akoshad.pyworker import WorkerError, WorkerFailed
from akoshad.resident import ResidentWorker
from tests.helpers import base_env, start_daemon, stop_daemon, wait_for, write_config
from tests.s3server import WeedServer
from tests.storegen import make_kg, make_reflection, make_store

SYSTEM = "box"
BAD = "tests.bad_worker"
REPO = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists (a zombie counts: it was never waited for)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def children_of(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.fixture
def bad() -> Iterator[ResidentWorker]:
    worker = ResidentWorker(BAD, idle_seconds=60)
    try:
        yield worker
    finally:
        worker.close()
        assert worker.pid is None


def pid_of(worker: ResidentWorker, request: object = None) -> int:
    pid = worker.call(["pid"], request, timeout=30)["pid"]
    assert isinstance(pid, int)
    return pid


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "reflection.duckdb"
    make_reflection(path, conversations=30, reflections=4)
    return path


def test_the_duckdb_worker_answers_every_command_in_one_process(db: Path) -> None:
    worker = duckdb_worker.DuckDBWorker()
    try:
        note, facts = duckdb_worker.validate_copy(db, worker)
        pid = worker.pid
        assert pid is not None and note is None and facts is not None
        assert dict(facts.rows or ()) == {"conversations_v2": 30, "reflections_v2": 4}
        refs = duckdb_worker.list_rows(db, SYSTEM, worker)
        assert refs == list_rows(db, SYSTEM)
        there, skipped, _ = duckdb_worker.load_batches(db, SYSTEM, refs, 7, 1 << 20, True, worker)
        here, skipped_here, _ = duckdb_commands.load_batches_here(
            db, SYSTEM, refs, 7, 1 << 20, True
        )
        assert [encode_json(b) for b in there] == [encode_json(b) for b in here]
        assert skipped == skipped_here
        path, ids, _ = duckdb_worker.build_memories_json(db, SYSTEM, refs, 8, True, worker)
        assert path.read_bytes() == memories_json(load_memories(db, SYSTEM, refs).memories)
        assert len(ids) == 34
        path.unlink()
        # one child answered all four, over one spill directory (kept with the open copy)
        assert worker.pid == pid and worker.resident.started == 1
        spills = [p for p in db.parent.iterdir() if p.name != db.name]
        assert len(spills) == 1 and spills[0].name.startswith(duckdb_worker.TEMP_PREFIX)
        assert spills[0].stat().st_mode & 0o777 == 0o700
        # an error of the work is an error of that request; the child lives on
        (db.parent / "junk.duckdb").write_bytes(b"\0" * 8 + b"DUCK" + os.urandom(8000))
        with pytest.raises(WorkerError) as caught:
            duckdb_worker.list_rows(db.parent / "junk.duckdb", SYSTEM, worker)
        assert "\n" not in str(caught.value) and str(caught.value)
        assert duckdb_worker.list_rows(db, SYSTEM, worker) == refs
        assert worker.pid == pid
    finally:
        worker.close()
    assert not alive(pid)
    assert sorted(p.name for p in db.parent.iterdir()) == ["junk.duckdb", db.name]


def open_files(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            found.add(os.readlink(fd))
        except OSError:
            continue
    return found


def test_the_child_keeps_a_copy_open_for_the_next_request_then_lets_it_go(
    db: Path, tmp_path: Path
) -> None:
    """Validate, list and memories.json of one copy: one open in the child, which keeps it
    only a moment after the last request, and never serves a changed copy from it."""
    worker = duckdb_worker.DuckDBWorker()
    try:
        duckdb_worker.validate_copy(db, worker)
        pid = worker.pid
        assert pid is not None and str(db) in open_files(pid)  # kept for the next request
        refs = duckdb_worker.list_rows(db, SYSTEM, worker)
        assert len(refs) == 34 and str(db) in open_files(pid)
        wait_for(lambda: str(db) not in open_files(pid), duckdb_worker.KEEP_SECONDS + 10)
        assert worker.pid == pid  # let go of the copy, the child lives on
        # the same path, other contents: opened again, never answered from the kept one
        duckdb_worker.validate_copy(db, worker)
        other = tmp_path / "other" / db.name
        other.parent.mkdir()
        make_reflection(other, conversations=3, reflections=1)
        os.replace(other, db)
        _, facts = duckdb_worker.validate_copy(db, worker)
        assert facts is not None
        assert dict(facts.rows or ()) == {"conversations_v2": 3, "reflections_v2": 1}
    finally:
        worker.close()


def test_out_of_memory_is_retried_under_the_higher_limit_in_the_same_child(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requests: list[dict[str, object]] = []
    worker = duckdb_worker.DuckDBWorker()
    call = worker.resident.call

    def spy(args: list[str], request: dict[str, object], *, timeout: float) -> dict[str, object]:
        requests.append(request)
        return call(args, request, timeout=timeout)

    monkeypatch.setattr(worker.resident, "call", spy)
    monkeypatch.setattr(duckdb_worker, "MEMORY_LIMIT", "1KB")  # DuckDB cannot open under it
    monkeypatch.setattr(duckdb_worker, "RETRY_MEMORY_LIMIT", "256MB")
    try:
        refs = duckdb_worker.list_rows(db, SYSTEM, worker)
        assert refs == list_rows(db, SYSTEM)
        limits = [r["duckdb"].get("memory_limit") for r in requests]  # type: ignore[attr-defined]
        assert limits == ["1KB", "256MB"] and worker.resident.started == 1
    finally:
        worker.close()
    assert sorted(p.name for p in db.parent.iterdir()) == [db.name]


def test_a_crash_fails_that_request_and_the_next_gets_a_new_child(
    bad: ResidentWorker,
) -> None:
    first = pid_of(bad)
    assert pid_of(bad) == first
    with pytest.raises(WorkerFailed, match=r"^its worker crashed \(signal 11\)$"):
        bad.call(["crash"], None, timeout=30)
    assert not alive(first)  # reaped, not a zombie
    second = pid_of(bad, {"a": 1})
    assert second != first and bad.started == 2
    with pytest.raises(WorkerFailed, match=r"^its worker crashed \(exit 3\)$"):
        bad.call(["exit"], None, timeout=30)
    assert pid_of(bad) not in (first, second)


def test_a_child_killed_between_requests_is_replaced_quietly(bad: ResidentWorker) -> None:
    first = pid_of(bad)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: bad.pid is None, 10)
    assert pid_of(bad) != first


def test_a_child_killed_during_a_request_fails_that_request(bad: ResidentWorker) -> None:
    first = pid_of(bad)
    threading.Timer(0.5, os.kill, args=(first, signal.SIGKILL)).start()
    with pytest.raises(WorkerFailed, match=r"^its worker crashed \(signal 9\)$") as caught:
        bad.call(["hang"], None, timeout=60)
    assert caught.value.retry is True  # killed from outside (the OOM killer): worth a retry
    assert pid_of(bad) != first


def test_a_hung_child_is_killed_at_the_timeout_and_replaced(bad: ResidentWorker) -> None:
    first = pid_of(bad)
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match=r"^its worker was stopped after 1.5s$") as caught:
        bad.call(["hang"], None, timeout=1.5)
    assert caught.value.retry is True
    assert 1.4 < time.monotonic() - started < 30
    assert not alive(first)
    assert pid_of(bad) != first


def test_a_garbage_answer_fails_that_request_and_the_next_gets_a_new_child(
    bad: ResidentWorker,
) -> None:
    first = pid_of(bad)
    with pytest.raises(WorkerFailed, match=r"^its worker answered garbage$"):
        bad.call(["garbage"], None, timeout=30)
    assert not alive(first)
    assert pid_of(bad) != first


def test_an_idle_child_is_stopped_and_started_again_on_demand() -> None:
    worker = ResidentWorker(BAD, idle_seconds=0.5)
    try:
        first = pid_of(worker)
        assert pid_of(worker) == first  # a request resets the idle clock
        wait_for(lambda: not alive(first), 10)  # stopped and reaped
        assert worker.pid is None
        assert pid_of(worker) != first and worker.started == 2
    finally:
        worker.close()


def test_a_worn_child_is_replaced_by_count_and_by_memory() -> None:
    worker = ResidentWorker(BAD, max_requests=2, max_rss=200 << 20)
    try:
        first = pid_of(worker)
        assert worker.pid == first
        pid_of(worker)  # its second answer: replaced after it
        assert worker.pid is None and not alive(first)
        second = pid_of(worker)
        assert second != first
        worker.call(["grow=250"], None, timeout=60)  # past max_rss: replaced after it
        assert worker.pid is None and not alive(second)
        assert pid_of(worker) not in (first, second)
    finally:
        worker.close()


def test_close_stops_a_request_in_flight_and_refuses_later_ones() -> None:
    worker = ResidentWorker(BAD)
    first = pid_of(worker)
    failures: list[BaseException] = []

    def hang() -> None:
        try:
            worker.call(["hang"], None, timeout=600)
        except BaseException as exc:  # what the request got is the point
            failures.append(exc)

    thread = threading.Thread(target=hang)
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    worker.close()
    thread.join(30)
    assert time.monotonic() - started < 10 and not thread.is_alive()
    assert [str(e) for e in failures] == ["its worker crashed (signal 9)"]
    assert not alive(first) and worker.pid is None
    with pytest.raises(WorkerFailed, match="stopped"):
        worker.call(["pid"], None, timeout=30)
    worker.close()  # again: nothing to do


def gone(pid: int) -> bool:
    """Process ``pid`` exited (a zombie of a parent that no longer exists counts)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_the_child_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    """kill -9 of the daemon: its long-lived child sees its stdin end and exits."""
    script = (
        "import sys, time\n"
        "from akoshad.resident import ResidentWorker\n"
        f"worker = ResidentWorker({BAD!r})\n"
        "print(worker.call(['pid'], None, timeout=30)['pid'], flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=REPO, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not gone(child)
    finally:
        parent.kill()
        parent.wait()
    wait_for(lambda: gone(child), 10)


@pytest.mark.parametrize(
    ("name", "reason", "retry"),
    [
        ("crash.duckdb", "DuckDB copy not validated: its worker crashed (signal 11)", False),
        # the OOM killer's SIGKILL is no fault of the file: tried again later
        ("killed.duckdb", "DuckDB copy not validated: its worker crashed (signal 9)", True),
        ("hang.duckdb", "DuckDB copy not validated: its worker was stopped after 1s", True),
    ],
)
def test_a_check_that_crashes_or_hangs_the_long_lived_child_skips_that_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, reason: str, retry: bool
) -> None:
    """The daemon's capture with its long-lived DuckDB child: a copy that crashes or hangs
    the child is skipped, the next copy is validated by a new child."""
    data = tmp_path / "data"
    data.mkdir()
    make_kg(data / name)
    make_kg(data / "good.duckdb")
    monkeypatch.setattr(duckdb_worker, "WORKER_MODULE", BAD)  # crashes on "crash" copies
    worker = duckdb_worker.DuckDBWorker()
    snap = Snapshotter(data, tmp_path / "staging", duckdb=worker)
    snap.reset_staging()
    try:
        good = snap.capture("good.duckdb")
        assert isinstance(good, Captured) and good.files[0].facts is not None
        first = worker.pid
        timeout = duckdb_worker.TIMEOUT
        monkeypatch.setattr(duckdb_worker, "TIMEOUT", 1.0)  # for the bad copy only
        assert snap.capture(name) == Skipped(name, reason, retry=retry)
        monkeypatch.setattr(duckdb_worker, "TIMEOUT", timeout)
        assert first is not None and not alive(first)
        # its copies and its spill directory are removed
        left = sorted(p.name for p in (tmp_path / "staging").iterdir())
        assert len(left) == 2 and left[1] == good.files[0].staged.name
        assert left[0].startswith(duckdb_worker.TEMP_PREFIX)  # the good copy's
        again = snap.capture("good.duckdb")
        assert isinstance(again, Captured) and again.files[0].facts == good.files[0].facts
        assert worker.resident.started == 2
    finally:
        worker.close()


def test_the_daemon_keeps_one_duckdb_child_and_leaves_none_after_shutdown(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """A daemon's passes share one DuckDB child (the same pid before and after a change);
    a SIGTERM leaves no child process behind."""
    store = make_store(tmp_path / "store")
    config = write_config(
        tmp_path / "config.yaml",
        data_dir=str(store),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(tmp_path / "s.sock"),
        debounce_seconds=0.2,
        min_upload_interval_seconds=0,
        cloud_sync=s3.cloud_sync(system_id),
    )
    proc = start_daemon(config, base_env(tmp_path / "home"), tmp_path / "d.log")
    try:
        prefix = f"systems/{system_id}/"

        def memories_json_count() -> int:
            return sum(k.endswith("/memories.json") for k in s3.keys(prefix))

        wait_for(lambda: memories_json_count() == 1, 60)
        child = wait_for(lambda: children_of(proc.pid), 10)
        assert len(child) == 1
        cmdline = Path(f"/proc/{child[0]}/cmdline").read_bytes()
        assert b"akoshad.duckdb_worker\0--serve" in cmdline
        make_reflection(store / "reflection.duckdb", conversations=5, reflections=0, seed=2)
        wait_for(lambda: memories_json_count() == 2, 60)
        assert children_of(proc.pid) == child  # the same child served the second pass
    finally:
        assert stop_daemon(proc) == 0
    assert not alive(child[0])
