"""Reading memories: what the worker or the disk reports is an unreadable copy
(``SnapshotError``); a bug is not dressed up as one."""

from __future__ import annotations

import io
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from akoshad.errors import SnapshotError
from akoshad.pipeline import cloud_memories
from akoshad.pipeline.memory_sync import MemorySync
from akoshad.pyworker import WorkerError, WorkerFailed


class KvState:
    """The state's ``kv`` table alone (where an unreadable copy is recorded)."""

    def __init__(self) -> None:
        self.con = sqlite3.connect(":memory:")
        self.con.execute("CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT)")

    async def transaction(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        return fn(self.con)

    async def delivered_ids(self, _ids: Any) -> set[str]:
        return set()

    async def memory_skip_reasons(self, _ids: Any) -> dict[str, str]:
        return {}

    def kv(self) -> dict[str, str]:
        return dict(self.con.execute("SELECT key, value FROM kv").fetchall())


def sync(state: KvState | None = None) -> MemorySync:
    return MemorySync(state, None, "s")  # type: ignore[arg-type]  # only the kv is used


@pytest.mark.parametrize(
    "error",
    [WorkerFailed("the worker crashed"), WorkerError("not a DuckDB file"), OSError("EIO")],
)
async def test_read_failures_are_an_unreadable_copy(
    monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def fail(*_args: Any) -> None:
        raise error

    monkeypatch.setattr(cloud_memories, "list_rows", fail)
    with pytest.raises(SnapshotError, match=r"cannot read memories from r\.duckdb"):
        await sync()._list(Path("/nowhere/r.duckdb"))


async def test_a_bug_is_not_a_snapshot_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(*_args: Any) -> None:
        raise TypeError("'NoneType' object is not subscriptable")

    monkeypatch.setattr(cloud_memories, "list_rows", bug)
    with pytest.raises(TypeError):
        await sync()._list(Path("/nowhere/r.duckdb"))


async def test_an_unreadable_copy_is_the_last_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy whose memories cannot be read (a newer DuckDB storage version) shows in
    status as ``memories.last_error``, like a failure of Akosha itself."""

    def newer(*_args: Any) -> None:
        raise WorkerError("IO Error: ... with storage version number 1000, but we can only")

    monkeypatch.setattr(cloud_memories, "list_rows", newer)
    state = KvState()
    memory_sync = sync(state)
    with pytest.raises(SnapshotError):
        await memory_sync.deliver(Path("/nowhere/r.duckdb"))
    assert memory_sync.last_error is not None and "storage version" in memory_sync.last_error
    # and it is kept in the state for status (memories_unreadable), until a copy reads
    assert state.kv() == {cloud_memories.KV_UNREADABLE: memory_sync.last_error}
    monkeypatch.setattr(cloud_memories, "list_rows", lambda *_args: [])
    await memory_sync.deliver(Path("/nowhere/r.duckdb"))
    assert state.kv() == {}


async def test_an_unreadable_copy_is_named_as_the_store_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The message names reflection.duckdb, not the private copy's staged name
    (000003-reflection.duckdb), which the user finds nowhere."""

    def fail(*_args: Any) -> None:
        raise WorkerError("IO Error: storage version")

    monkeypatch.setattr(cloud_memories, "list_rows", fail)
    with pytest.raises(SnapshotError) as info:
        await sync()._list(Path("/state/staging/000003-reflection.duckdb"))
    assert (
        str(info.value) == "cannot read memories from reflection.duckdb: IO Error: storage version"
    )


async def test_an_unreadable_copy_is_not_logged_at_every_pass() -> None:
    """A reflection.duckdb that stays unreadable (a newer DuckDB storage version) while
    session-buddy keeps changing it is read again at every pass: its warning comes once
    (then at most once an hour: ``test_ratelog``), again at once for another reason, and
    one line says when a copy reads again (before: a WARNING at every pass, for ever)."""
    newer = "cannot read memories from reflection.duckdb: IO Error: storage version 1000"
    full = "cannot write memories.json: No space left on device"
    memory_sync = sync(KvState())
    sink = io.StringIO()
    handler = logger.add(sink, format="{level} {message}", level="INFO")
    try:
        for _ in range(100):  # 100 passes
            await memory_sync.unreadable(newer)
        await memory_sync.unreadable(full)
        await memory_sync.unreadable(None)
        await memory_sync.unreadable(None)
    finally:
        logger.remove(handler)
    assert sink.getvalue().splitlines() == [
        f"WARNING no memories read from reflection.duckdb: {newer}",
        f"WARNING no memories read from reflection.duckdb: {full}",
        "INFO the memories of reflection.duckdb are read again",
    ]
