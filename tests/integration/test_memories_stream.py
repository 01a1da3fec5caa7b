"""memories.json sent to the bucket while the DuckDB worker writes it (real SeaweedFS, real
worker child): parts go up before the build ends, the object appears whole once it is
built and byte for byte what the worker wrote; a failed or restarted build, a refused
owner gate or a daemon killed mid-build leave no memories.json object behind."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from akoshad import duckdb_worker
from akoshad.duckdb_commands import OUT_OF_MEMORY
from akoshad.errors import SnapshotError
from akoshad.pipeline.cloud_memories import CloudMemories, StreamTo
from akoshad.pipeline.send_gate import OwnerRefused
from akoshad.pyworker import WorkerError, WorkerFailed
from akoshad.store.db import StateDB
from akoshad.targets.growing import Restarted
from akoshad.targets.s3.target import S3Target
from tests.helpers import start_daemon, wait_for
from tests.integration.test_pipeline_s3 import S3Setup
from tests.s3server import WeedServer
from tests.storegen import make_store

MiB = 1024 * 1024
ROWS = 6000  # about 25 MiB of memories.json: five parts of 5 MiB


def make_big_reflection(path: Path, rows: int = ROWS) -> Path:
    """session-buddy's two memory tables, ``rows`` conversations with 384-float embeddings
    (about 4 KiB of JSON each), written in one statement."""
    path.unlink(missing_ok=True)
    con = duckdb.connect(str(path))
    con.execute("SELECT setseed(0.5)")
    con.execute(
        "CREATE TABLE conversations_v2 (id TEXT PRIMARY KEY, content TEXT NOT NULL,"
        " embedding FLOAT[384], category TEXT NOT NULL, project TEXT,"
        " timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP, metadata VARCHAR)"
    )
    con.execute(
        "CREATE TABLE reflections_v2 (id TEXT PRIMARY KEY, content TEXT NOT NULL,"
        " embedding FLOAT[384], category TEXT NOT NULL, tags TEXT[],"
        " timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
    )
    con.execute(
        "INSERT INTO conversations_v2 (id, content, embedding, category, project) "
        "SELECT printf('conv-%06d', i), 'conversation ' || i || repeat(' lorem ipsum', 20), "
        "CAST(list_transform(range(384), lambda x: random() * 2 - 1) AS FLOAT[384]), "
        "'context', 'demo' FROM range(?) AS r(i)",
        [rows],
    )
    con.close()
    return path


def key_of(system_id: str, upload_id: str) -> str:
    return f"systems/{system_id}/uploads/{upload_id}/memories.json"


class Watch:
    """A runner of the worker (one-shot children) that looks at the bucket the moment a
    ``memories_json`` build ends, and can fail that build once it is done."""

    def __init__(self, s3: WeedServer, key: str, fail: BaseException | None = None) -> None:
        self.s3 = s3
        self.key = key
        self.fail = fail
        self.parts_at_end: int | None = None
        self.object_at_end: bool | None = None
        self.builds = 0

    def __call__(self, argv: list[str], request: dict[str, Any]) -> dict[str, Any]:
        answer = duckdb_worker._one_shot(argv, request)
        if argv[0] != "memories_json":
            return answer
        self.builds += 1
        if self.fail is not None:  # a build failing with parts up: wait for the first one
            deadline = time.monotonic() + 30  # (a loaded machine may not have sent it yet)
            while self.parts() == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
        self.parts_at_end = self.parts()
        self.object_at_end = self.key in self.s3.keys(self.key)
        fail, self.fail = self.fail, None
        if fail is not None:
            raise fail
        return answer

    def parts(self) -> int:
        """Parts the server holds for the multipart upload(s) of the key."""
        client = self.s3.client()
        count = 0
        for up in self.s3.multipart_uploads(self.key):
            listed = client.list_parts(Bucket=self.s3.bucket, Key=self.key, UploadId=up["UploadId"])
            count += len(listed.get("Parts", []))
        return count


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[StateDB]:
    db = StateDB(tmp_path / "state.db")
    await db.open()
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture
async def target(s3: WeedServer, system_id: str) -> AsyncIterator[S3Target]:
    t = s3.s3_target(system_id, retry_backoff=0.1, max_retries=1)
    await t.start()
    try:
        yield t
    finally:
        await t.close()


class Gate:
    """The owner gate of the test: counts its calls, refuses when told."""

    def __init__(self, refuse: str | None = None) -> None:
        self.calls = 0
        self.refuse = refuse

    async def __call__(self) -> None:
        self.calls += 1
        if self.refuse is not None:
            raise OwnerRefused(self.refuse)


async def _plain_bytes(state: StateDB, system_id: str, db: Path) -> bytes:
    """memories.json of ``db`` as the worker builds it without a stream."""
    built = await CloudMemories(state, system_id).conversations_for_cloud(db, "plain")
    assert built is not None
    return built[0].read_bytes()


async def test_parts_go_up_before_the_build_ends(
    s3: WeedServer, system_id: str, tmp_path: Path, state: StateDB, target: S3Target
) -> None:
    db = make_big_reflection(tmp_path / "reflection.duckdb")
    key = key_of(system_id, "u1")
    watch = Watch(s3, key)
    gate = Gate()
    sync = CloudMemories(state, system_id, duckdb=watch)
    built = await sync.memories_for_cloud(db, "u1", StreamTo(target, key, gate))
    assert built is not None and len(built.ids) == ROWS
    size = built.path.stat().st_size
    assert size > 4 * 5 * MiB
    # when the worker answered, parts were stored already, and no object was visible yet
    assert watch.parts_at_end is not None and watch.parts_at_end >= 1
    assert watch.object_at_end is False
    assert built.sent == size and gate.calls >= 1
    body = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert body == built.path.read_bytes() == await _plain_bytes(state, system_id, db)
    assert s3.multipart_uploads(f"systems/{system_id}/") == []


async def test_a_failed_build_leaves_no_object_and_the_next_one_completes(
    s3: WeedServer, system_id: str, tmp_path: Path, state: StateDB, target: S3Target
) -> None:
    db = make_big_reflection(tmp_path / "reflection.duckdb")
    key = key_of(system_id, "u1")
    watch = Watch(s3, key, fail=WorkerFailed("the worker died at its end"))
    sync = CloudMemories(state, system_id, duckdb=watch)
    with pytest.raises(SnapshotError, match="died"):
        await sync.memories_for_cloud(db, "u1", StreamTo(target, key, Gate()))
    assert watch.parts_at_end is not None and watch.parts_at_end >= 1  # parts had gone up
    assert s3.keys(f"systems/{system_id}/") == []
    assert s3.multipart_uploads(f"systems/{system_id}/") == []  # aborted
    assert await sync.commit_cloud("u1") == 0  # nothing recorded
    assert not await asyncio.to_thread(lambda: list(tmp_path.glob(".memories-*")))
    # the next upload sends every memory
    again = key_of(system_id, "u2")
    built = await sync.memories_for_cloud(db, "u2", StreamTo(target, again, Gate()))
    assert built is not None and len(built.ids) == ROWS
    body = s3.client().get_object(Bucket=s3.bucket, Key=again)["Body"].read()
    assert body == built.path.read_bytes()
    assert s3.keys(f"systems/{system_id}/") == [again]


async def test_a_build_started_over_sends_only_the_finished_file(
    s3: WeedServer, system_id: str, tmp_path: Path, state: StateDB, target: S3Target
) -> None:
    db = make_big_reflection(tmp_path / "reflection.duckdb")
    key = key_of(system_id, "u1")
    # DuckDB ran out of memory (after writing the file): the worker writes it again
    watch = Watch(s3, key, fail=WorkerError("Out of Memory Error: test", kind=OUT_OF_MEMORY))
    sync = CloudMemories(state, system_id, duckdb=watch)
    built = await sync.memories_for_cloud(db, "u1", StreamTo(target, key, Gate()))
    assert watch.builds == 2
    assert built is not None and built.sent is None  # left to the caller, whole
    assert s3.keys(f"systems/{system_id}/") == []
    assert s3.multipart_uploads(f"systems/{system_id}/") == []
    assert built.path.read_bytes() == await _plain_bytes(state, system_id, db)


async def test_a_small_file_is_one_put_once_built(
    s3: WeedServer, system_id: str, tmp_path: Path, state: StateDB, target: S3Target
) -> None:
    db = make_big_reflection(tmp_path / "reflection.duckdb", rows=30)
    key = key_of(system_id, "u1")
    watch = Watch(s3, key)
    sync = CloudMemories(state, system_id, duckdb=watch)
    built = await sync.memories_for_cloud(db, "u1", StreamTo(target, key, Gate()))
    assert built is not None and built.sent == built.path.stat().st_size < 5 * MiB
    assert watch.parts_at_end == 0 and watch.object_at_end is False
    body = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert body == built.path.read_bytes()


async def test_a_refused_gate_writes_nothing(
    s3: WeedServer, system_id: str, tmp_path: Path, state: StateDB, target: S3Target
) -> None:
    db = make_big_reflection(tmp_path / "reflection.duckdb")
    key = key_of(system_id, "u1")
    watch = Watch(s3, key)
    sync = CloudMemories(state, system_id, duckdb=watch)
    with pytest.raises(OwnerRefused, match="another machine"):
        await sync.memories_for_cloud(db, "u1", StreamTo(target, key, Gate("another machine")))
    assert watch.builds == 1  # the build was awaited to its end
    assert s3.keys(f"systems/{system_id}/") == []
    assert s3.multipart_uploads(f"systems/{system_id}/") == []
    assert not await asyncio.to_thread(lambda: list(tmp_path.glob(".memories-*")))


def test_first_sync_memories_json_is_what_the_worker_writes(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """run --once: the memories.json streamed up is byte for byte the worker's file."""
    s = S3Setup(tmp_path, s3, system_id)
    make_store(s.store)
    make_big_reflection(s.store / "reflection.duckdb")
    res = s.once()
    assert res.returncode == 0, res.stderr
    (m,) = s.manifests()
    assert "memories.json" in m["files"] and m["conversation_count"] == ROWS
    key = next(k for k in s3.keys(f"systems/{system_id}/") if k.endswith("/memories.json"))
    body = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    expected = asyncio.run(_expected(tmp_path, system_id, s.store / "reflection.duckdb"))
    assert body == expected


async def _expected(tmp: Path, system_id: str, db: Path) -> bytes:
    state = StateDB(tmp / "expected-state.db")
    await state.open()
    try:
        return await _plain_bytes(state, system_id, db)
    finally:
        await state.close()


def test_a_daemon_killed_mid_build_leaves_no_object_and_the_next_run_completes(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    s = S3Setup(tmp_path, s3, system_id)
    make_store(s.store)
    make_big_reflection(s.store / "reflection.duckdb", rows=2 * ROWS)
    own = f"systems/{system_id}/"
    proc = start_daemon(s.config, s.env)
    try:
        wait_for(
            lambda: any(u["Key"].endswith("/memories.json") for u in s3.multipart_uploads(own)),
            timeout=120,
            interval=0.02,
        )
        proc.send_signal(signal.SIGKILL)  # kill -9 while memories.json goes up
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert not [k for k in s3.keys(own) if k.endswith("memories.json")]
    res = s.once()  # its start aborts the crash's multipart upload
    assert res.returncode == 0, res.stderr
    (m,) = s.manifests()
    assert m["conversation_count"] == 2 * ROWS
    assert len([k for k in s3.keys(own) if k.endswith("/memories.json")]) == 1
    assert s3.multipart_uploads(own) == []


async def test_a_restart_while_a_part_is_on_the_wire_is_a_restart(
    s3: WeedServer, system_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer starts the file over (DuckDB ran out of memory) while the parts in flight
    still read the first file: what was sent is aborted and it is a restart (the finished
    file is left to the caller), not the error of a part that lost its bytes."""
    target = s3.s3_target(system_id, retry_backoff=0.1, max_retries=1, parts_in_flight=1)
    await target.start()
    path = tmp_path / "memories.json"
    path.write_bytes(b"")
    key = key_of(system_id, "u1")
    on_wire, rewritten = threading.Event(), threading.Event()
    restarted = threading.Event()

    def write() -> None:
        with path.open("wb") as fh:
            fh.write(b"x" * (6 * MiB))
        assert on_wire.wait(30)
        restarted.set()  # as the worker's retry does: first the flag, then the file again
        path.write_bytes(b"y" * 100)
        rewritten.set()

    call = target._call

    async def slow_parts(op: Any, *, what: str, missing: str | None = None) -> Any:
        if what.startswith("part "):
            on_wire.set()
            await asyncio.to_thread(rewritten.wait, 30)
        return await call(op, what=what, missing=missing)

    monkeypatch.setattr(target, "_call", slow_parts)
    writer = asyncio.ensure_future(asyncio.to_thread(write))
    try:
        with pytest.raises(Restarted):
            await target.put_growing(key, path, writer, restarted, Gate())
        await writer
        assert s3.keys(f"systems/{system_id}/") == []
        assert s3.multipart_uploads(f"systems/{system_id}/") == []
    finally:
        await target.close()
