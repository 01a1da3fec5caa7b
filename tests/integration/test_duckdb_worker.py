"""DuckDB work in a child process: same bytes as in process, clear errors, duckdb never loaded
into the daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from akoshad import duckdb_commands, duckdb_worker, pyworker
from akoshad.akosha.encoding import encode_json, memories_json
from akoshad.akosha.rows import list_rows, load_memories
from akoshad.pipeline.capture.snapshot import Captured, Skipped, Snapshotter
from akoshad.pyworker import WorkerFailed, run_json
from tests.akosha_fixtures import AkoshaServer
from tests.helpers import base_env, start_daemon, stop_daemon, wait_for, write_config
from tests.s3server import WeedServer
from tests.storegen import make_kg, make_reflection, make_store

pytest_plugins = ["tests.akosha_fixtures"]
SYSTEM = "box"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "reflection.duckdb"
    make_reflection(path, conversations=30, reflections=4)
    return path


def test_batches_from_the_worker_encode_to_the_same_bytes(db: Path) -> None:
    refs = list_rows(db, SYSTEM)
    assert duckdb_worker.list_rows(db, SYSTEM) == refs
    here, skipped_here, _ = duckdb_commands.load_batches_here(db, SYSTEM, refs, 7, 1 << 20, True)
    there, skipped, found = duckdb_worker.load_batches(db, SYSTEM, refs, 7, 1 << 20, True)
    assert len(there) == len(here) == 5
    assert [encode_json(b) for b in there] == [encode_json(b) for b in here]
    assert (skipped, found) == (skipped_here, {})


def test_memories_json_from_the_worker_is_byte_identical(db: Path) -> None:
    refs = list_rows(db, SYSTEM)
    path, ids, found = duckdb_worker.build_memories_json(db, SYSTEM, refs, 8, True)
    assert path.read_bytes() == memories_json(load_memories(db, SYSTEM, refs).memories)
    assert len(ids) == 34 and found == {}
    # a private file beside the copy, the caller's to stream and remove
    assert path.parent == db.parent and path.stat().st_mode & 0o777 == 0o600
    path.unlink()


def test_memories_json_file_is_removed_when_the_worker_fails(db: Path) -> None:
    refs = list_rows(db, SYSTEM)
    db.write_bytes(b"not a database")  # the child fails reading it
    with pytest.raises(Exception):  # noqa: B017 - the worker's error type is not the point
        duckdb_worker.build_memories_json(db, SYSTEM, refs, 8, True)
    assert [p.name for p in db.parent.iterdir()] == [db.name]  # no private file left


def test_validation_in_the_worker_counts_rows(tmp_path: Path) -> None:
    make_kg(tmp_path / "kg.duckdb", entities=12)
    note, facts = duckdb_worker.validate_copy(tmp_path / "kg.duckdb")
    assert note is None and facts is not None
    assert dict(facts.rows or ()) == {"kg_entities": 12, "kg_relationships": 11}


def test_a_crashing_worker_is_a_clear_error() -> None:
    with pytest.raises(WorkerFailed, match=r"^its worker crashed \(signal 11\)$"):
        run_json("tests.bad_worker", ["crash"], None, timeout=60)


def test_what_the_work_prints_on_stdout_never_corrupts_the_answer() -> None:
    # DuckDB draws a progress bar on stdout for any query over 2 s: the answer must survive
    assert run_json("tests.bad_worker", ["chatty"], {"a": 1}, timeout=60) == {"echo": {"a": 1}}


def test_a_worker_answering_garbage_is_a_clear_error() -> None:
    with pytest.raises(WorkerFailed, match=r"^its worker answered garbage$"):
        run_json("tests.bad_worker", ["garbage"], None, timeout=60)


def test_a_hung_worker_is_killed_at_its_timeout(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(WorkerFailed, match=r"stopped after 1.5s") as caught:
        run_json("tests.bad_worker", ["hang", f"pid={pid_file}"], None, timeout=1.5)
    assert caught.value.retry is True
    assert time.monotonic() - started < 30
    with pytest.raises(ProcessLookupError):  # killed and reaped, not left behind
        os.kill(int(pid_file.read_text()), 0)


def test_worker_errors_come_back_as_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.duckdb").write_bytes(b"\0" * 8 + b"DUCK" + os.urandom(8000))
    with pytest.raises(pyworker.WorkerError) as caught:
        run_json(
            duckdb_worker.WORKER_MODULE,
            ["list", str(tmp_path / "junk.duckdb"), "s"],
            None,
            timeout=60,
        )
    assert "\n" not in str(caught.value) and str(caught.value)


@pytest.mark.parametrize(
    ("name", "reason", "retry"),
    [
        ("crash.duckdb", "DuckDB copy not validated: its worker crashed (signal 11)", False),
        # the OOM killer's SIGKILL is no fault of the file: tried again later
        ("killed.duckdb", "DuckDB copy not validated: its worker crashed (signal 9)", True),
        ("hang.duckdb", "DuckDB copy not validated: its worker was stopped after 1s", True),
    ],
)
def test_a_check_that_crashes_or_hangs_skips_that_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, reason: str, retry: bool
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    make_kg(data / name)
    make_kg(data / "good.duckdb")
    monkeypatch.setattr(duckdb_worker, "TIMEOUT", 1.0)
    snap = Snapshotter(data, tmp_path / "staging")
    snap.reset_staging()
    monkeypatch.setattr(duckdb_worker, "WORKER_MODULE", "tests.bad_worker")
    bad = snap.capture(name)
    assert bad == Skipped(name, reason, retry=retry)
    assert list((tmp_path / "staging").iterdir()) == []  # its copies are removed
    monkeypatch.setattr(duckdb_worker, "WORKER_MODULE", "akoshad.duckdb_worker")
    good = snap.capture("good.duckdb")
    assert isinstance(good, Captured) and good.files[0].facts is not None


def test_capture_and_memories_never_load_duckdb_here(db: Path, tmp_path: Path) -> None:
    """What the daemon runs (capture, memories to deliver, memories.json) in a fresh
    interpreter: duckdb is never imported into it."""
    script = textwrap.dedent(
        """
        import asyncio, json, sys
        from pathlib import Path
        import akoshad.cli.main, akoshad.runtime.daemon
        from akoshad.pipeline.memory_sync import MemorySync
        from akoshad.pipeline.capture.snapshot import Snapshotter
        from akoshad.store.db import StateDB

        async def main(data: Path, tmp: Path) -> dict:
            snap = Snapshotter(data, tmp / "staging")
            snap.reset_staging()
            got = await asyncio.to_thread(snap.capture, "reflection.duckdb")
            state = StateDB(tmp / "state.db")
            await state.open()
            try:
                sync = MemorySync(state, None, "box")
                built = await sync.conversations_for_cloud(got.files[0].staged, "u1")
            finally:
                await state.close()
            return {"facts": got.files[0].facts.as_fields(), "count": built[1],
                    "duckdb": "duckdb" in sys.modules}

        print(json.dumps(asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(db.parent), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=True,
    )
    result = json.loads(out.stdout)
    assert result == {
        "facts": {"rows": {"conversations_v2": 30, "reflections_v2": 4}},
        "count": 34,
        "duckdb": False,
    }


def test_the_daemon_never_maps_duckdb(
    tmp_path: Path, s3: WeedServer, system_id: str, akosha_server: AkoshaServer
) -> None:
    """A daemon with a bucket and Akosha: its first pass validates the DuckDB copies,
    delivers the memories and uploads memories.json, and duckdb is never in the process."""
    store = make_store(tmp_path / "store")
    config = write_config(
        tmp_path / "config.yaml",
        data_dir=str(store),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(tmp_path / "s.sock"),
        akosha_url=akosha_server.url,
        debounce_seconds=0.3,
        cloud_sync=s3.cloud_sync(system_id),
    )
    proc = start_daemon(config, base_env(tmp_path / "home"), tmp_path / "d.log")
    try:
        prefix = f"systems/{system_id}/"
        wait_for(lambda: any(k.endswith("/memories.json") for k in s3.keys(prefix)), 60)
        wait_for(lambda: len(akosha_server.state()["stored"]) == 25, 30)
        assert "duckdb" not in Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        assert stop_daemon(proc) == 0


def test_a_view_in_a_hostile_store_cannot_read_outside_the_copy(tmp_path: Path) -> None:
    """A ``conversations_v2`` view over ``read_text`` of a file outside data_dir: the copy
    is opened with external access off, so the file is never read (an error, not a memory)."""
    import duckdb

    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN OPENSSH PRIVATE KEY----- top secret")
    db = tmp_path / "store" / "reflection.duckdb"
    db.parent.mkdir()
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE VIEW conversations_v2 AS SELECT 'x' AS id, content, "
        f"list_transform(range(384), lambda i: 0.5)::FLOAT[384] AS embedding "
        f"FROM read_text('{secret}')"
    )
    con.close()
    with pytest.raises(pyworker.WorkerError, match="disabled by configuration") as caught:
        duckdb_worker.list_rows(db, SYSTEM)
    assert "top secret" not in str(caught.value)
