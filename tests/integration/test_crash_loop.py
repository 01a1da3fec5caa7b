"""kill -9 at random moments while the store keeps changing: it always converges."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.crashloop import crash_loop
from tests.integration.test_pipeline_local import SYSTEM, Setup
from tests.storegen import duckdb_rows, make_store, sqlite_rows

CYCLES = int(os.environ.get("AKOSHAD_TEST_CRASH_CYCLES", "10"))


def compare_stores(store: Path, restored: Path) -> int:
    """Restored == store: same DuckDB/SQLite rows, other files byte-identical."""
    count = 0
    for path in sorted(store.rglob("*")):
        rel = path.relative_to(store)
        if not path.is_file() or path.name.endswith((".wal", "-journal")):
            continue
        other = restored / rel
        assert other.exists(), rel
        if path.suffix == ".duckdb":
            for table in ("conversations_v2", "churn"):
                if path.name == "reflection.duckdb":
                    assert duckdb_rows(other, table) == duckdb_rows(path, table)
        elif path.name in ("activity.db", "natural_scheduler.db"):
            table = "events" if path.name == "activity.db" else "reminders"
            assert sqlite_rows(other, table) == sqlite_rows(path, table)
        else:
            assert (
                hashlib.sha256(other.read_bytes()).digest()
                == hashlib.sha256(path.read_bytes()).digest()
            ), rel
        count += 1
    restored_files = {p.relative_to(restored) for p in restored.rglob("*") if p.is_file()}
    live_files = {p.relative_to(store) for p in store.rglob("*") if p.is_file()}
    assert restored_files <= live_files  # nothing deleted came back
    return count


@pytest.mark.slow
def test_crash_loop_local(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    make_store(s.store)
    result = crash_loop(
        config=s.config,
        env=s.env,
        store=s.store,
        state=s.state,
        log=tmp_path / "d.log",
        cycles=CYCLES,
        manifests=s.manifests,
        object_exists=lambda key: (s.outbox / key).is_file(),
        once=s.once,
        restore_into=lambda dest: s.cli("restore", "--latest", "--dest", str(dest), check=True),
        compare=compare_stores,
        scratch=tmp_path,
    )
    assert result.uploads >= 2 and result.files_verified >= 8
    assert not [p for p in s.outbox.rglob("*") if ".akoshad-tmp-" in p.name]
    assert SYSTEM
