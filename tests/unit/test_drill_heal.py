"""What a drill's finding of lost objects forgets (``runtime.drill_heal``): format-1 whole
objects too, and nothing that does not use a lost object."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from akoshad.runtime import drill_heal
from akoshad.runtime.drill_heal import send_again, send_missing_again
from akoshad.store.db import StateDB
from tests.unit.test_plan import row


async def test_a_lost_whole_object_has_its_file_sent_again(tmp_path: Path) -> None:
    """A format-1 upload's whole object found missing: its row goes, its group is queued;
    another whole object's row stays."""
    state = StateDB(tmp_path / "state.db")
    await state.open()
    try:
        lost = row("reflection.duckdb.wal", group="reflection.duckdb")
        kept = row("notes.json")
        await state.transaction(lambda c: StateDB.write_ledger(c, "local", [lost, kept], []))
        assert await send_again(state, "local", [lost.key]) == (1, 1)
        assert set(await state.ledger("local")) == {"notes.json"}
        assert [i.path for i in await state.queue_items()] == ["reflection.duckdb"]
    finally:
        await state.close()


async def test_a_lost_chunk_list_is_written_again_beside_an_object_no_file_uses(
    tmp_path: Path,
) -> None:
    """A drill found a chunk list lost and an object that no file of the ledger uses (a
    newer upload replaced it meanwhile): the next upload still writes every document again
    (one small file queued to make it). Before, the unknown object made the heal do
    nothing, and the lost list stayed lost."""
    state = StateDB(tmp_path / "state.db")
    await state.open()
    try:
        kept = row("notes.json")
        await state.transaction(lambda c: StateDB.write_ledger(c, "local", [kept], []))
        unknown = ["systems/s/packs/ab/" + "ab" * 32]
        assert await send_again(state, "local", unknown) is None
        assert not await state.documents_rewrite_asked("local")
        assert await send_again(state, "local", unknown, documents=True) == (0, 1)
        assert await state.documents_rewrite_asked("local")
        assert set(await state.ledger("local")) == {"notes.json"}
        assert [i.path for i in await state.queue_items()] == ["notes.json"]
    finally:
        await state.close()


async def test_a_prune_whose_findings_cannot_be_queued_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state refusing the heal (a full disk, say) is one more problem of the prune's
    result, not an error that loses the result."""

    async def full(*_args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(drill_heal, "send_again", full)
    state = StateDB(tmp_path / "state.db")
    result: dict[str, Any] = {"ok": False, "missing": ["k"], "problems": ["k is missing"]}
    assert not await send_missing_again(state, "local", result, dry_run=False)
    assert result["ok"] is False
    assert result["problems"][0] == "k is missing"
    assert result["problems"][1].startswith("the files that used the missing objects could")
    dry: dict[str, Any] = {"ok": False, "missing": ["k"], "problems": []}
    assert not await send_missing_again(state, "local", dry, dry_run=True)
    assert dry["problems"] == []
