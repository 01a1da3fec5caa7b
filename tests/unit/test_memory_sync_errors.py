"""Reading memories: what the worker or the disk reports is an unreadable copy
(``SnapshotError``); a bug is not dressed up as one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from akoshad.errors import SnapshotError
from akoshad.pipeline import cloud_memories
from akoshad.pipeline.memory_sync import MemorySync
from akoshad.pyworker import WorkerError, WorkerFailed


def sync() -> MemorySync:
    return MemorySync(None, None, "s")  # type: ignore[arg-type]  # _list needs no state


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
    memory_sync = sync()
    with pytest.raises(SnapshotError):
        await memory_sync.deliver(Path("/nowhere/r.duckdb"))
    assert memory_sync.last_error is not None and "storage version" in memory_sync.last_error
