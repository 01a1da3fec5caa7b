"""memories.json read by several DuckDB queries at once (``duckdb_commands.READERS``): each
reader has a cursor of its own, the parts come out in order, and DuckDB's memory limit is
the given one per reader while they read, the given one again after."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from akoshad import duckdb_commands
from akoshad.akosha.encoding import memories_json
from akoshad.akosha.rows import list_rows, load_memories

SYSTEM = "box"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "reflection.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE conversations_v2 (id TEXT, content TEXT, embedding FLOAT[384],"
        " timestamp TIMESTAMP)"
    )
    # ids inserted out of their order, so that the parts read are not the table's order
    con.execute(
        "INSERT INTO conversations_v2 SELECT md5(i::VARCHAR), 'memory ' || i, "
        "list_transform(range(384), lambda x: (i + x) % 97 / 97.0)::FLOAT[384], "
        "TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND FROM range(1300) t(i)"
    )
    con.close()
    return path


@pytest.mark.parametrize(
    ("given", "factor", "scaled"),
    [
        ("32MB", 2, "62500KiB"),
        ("32MiB", 2, "65536KiB"),
        ("1GB", 3, "2929687KiB"),
        (" 24 mb ", 2, "46875KiB"),
        ("80%", 2, None),
        ("", 2, None),
    ],
)
def test_a_limit_is_scaled_per_reader(given: str, factor: int, scaled: str | None) -> None:
    assert duckdb_commands._scaled_limit(given, factor) == scaled


def test_the_limit_is_raised_while_the_readers_read_and_given_back_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(duckdb_commands, "READERS", 2)
    con = duckdb.connect()
    con.execute("SET memory_limit = '32MB'")
    before = con.execute("SELECT current_setting('memory_limit')").fetchone()
    with duckdb_commands._limit_for_readers(con, "32MB"):
        during = con.execute("SELECT current_setting('memory_limit')").fetchone()
    after = con.execute("SELECT current_setting('memory_limit')").fetchone()
    assert before == after != during
    assert during is not None and during[0] == "61.0 MiB"  # 62,500 KiB
    with duckdb_commands._limit_for_readers(con, None):  # no limit given: none set
        assert con.execute("SELECT current_setting('memory_limit')").fetchone() == before


@pytest.mark.parametrize("readers", [1, 2, 3])
def test_parts_read_at_once_come_out_in_order(
    store: Path, tmp_path: Path, readers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duckdb_commands, "READERS", readers)
    refs = list_rows(store, SYSTEM)
    out = tmp_path / "memories.json"
    settings = duckdb_commands.bounded_settings(
        {"duckdb": {"memory_limit": "24MB", "temp_directory": str(tmp_path / "t")}}
    )
    ids, _found = duckdb_commands.write_memories_json(
        store, SYSTEM, refs, 100, False, out, settings
    )
    assert ids == [r.memory_id for r in refs] and len(ids) == 1300
    assert out.read_bytes() == memories_json(load_memories(store, SYSTEM, refs).memories)
