"""What a drill's finding of lost objects forgets (``runtime.drill_heal``): format-1 whole
objects too, and nothing that does not use a lost object."""

from __future__ import annotations

from pathlib import Path

from akoshad.runtime.drill_heal import send_again
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
