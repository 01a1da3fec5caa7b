"""The DuckDB worker's memory: one thread, a memory limit DuckDB spills under (into a private
directory beside the copy, removed after the child), and one retry under a higher limit when
DuckDB runs out of memory anyway, so that a big store is never an error for it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from loguru import logger

from akoshad import duckdb_commands, duckdb_worker
from akoshad.akosha.duckdb_copy import open_copy
from akoshad.akosha.encoding import memories_json
from akoshad.akosha.rows import list_rows, load_memories
from akoshad.pyworker import run_json
from tests.helpers import akoshad, base_env, write_config

SYSTEM = "box"
ROWS = 600_000  # ids to sort when listing: more than SPILL_LIMIT holds
WITH_EMBEDDING = 100  # one row in this many is a memory; the others lack an embedding
SPILL_LIMIT = "24MB"  # DuckDB lists these rows under it only by spilling
TINY_LIMIT = "8MB"  # DuckDB cannot even list under it: out of memory, spill or not
# the listing child's peak on this store (208 MiB measured; 506 MiB before its memory
# was bounded: DuckDB kept every block it read, and every row crossed as a 4-item list)
LIST_PEAK_MIB = 300
REPO = Path(__file__).resolve().parents[2]


def _make_many_rows(path: Path) -> None:
    """A memory table of ROWS rows with 32-character ids (a sort too big for SPILL_LIMIT),
    one in WITH_EMBEDDING of them a sendable memory."""
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE conversations_v2 (id TEXT PRIMARY KEY, content TEXT NOT NULL,"
        " embedding FLOAT[384], category TEXT NOT NULL, timestamp TIMESTAMP)"
    )
    con.execute(
        "INSERT INTO conversations_v2 SELECT md5(i::VARCHAR), 'conversation ' || i, "
        f"CASE WHEN i % {WITH_EMBEDDING} = 0 THEN "
        "list_transform(range(384), lambda x: (i + x) % 1000 / 1000.0)::FLOAT[384] END, "
        "'context', TIMESTAMP '2026-01-01' + INTERVAL (i) SECOND "
        f"FROM range({ROWS}) t(i)"
    )
    con.close()


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("many") / "reflection.duckdb"
    _make_many_rows(path)
    return path


@pytest.fixture
def copy_dir(many: Path, tmp_path: Path) -> Path:
    """A staging-like directory of its own holding (a link to) the big copy."""
    staging = tmp_path / "staging"
    staging.mkdir(mode=0o700)
    (staging / many.name).symlink_to(many)
    return staging


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING")
    try:
        yield lines
    finally:
        logger.remove(sink)


class Calls:
    """What each worker child was asked, and its spill directory as it was meanwhile."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.spill_dirs: list[tuple[Path, int]] = []

    def __call__(self, module: str, args: list[str], request: Any, *, timeout: float) -> Any:
        self.requests.append(request)
        temp = Path(request["duckdb"]["temp_directory"])
        self.spill_dirs.append((temp, stat.S_IMODE(os.lstat(temp).st_mode)))
        return run_json(module, args, request, timeout=timeout)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    spy = Calls()
    monkeypatch.setattr(duckdb_worker, "run_json", spy)
    return spy


def test_the_listing_needs_more_than_the_limit_holds(many: Path, tmp_path: Path) -> None:
    """The premise of the next test: without spilling, listing this store under
    SPILL_LIMIT runs out of memory."""
    settings = duckdb_commands.bounded_settings(
        {"duckdb": {"memory_limit": SPILL_LIMIT, "temp_directory": str(tmp_path / "t")}}
    )
    con = open_copy(many, {**settings, "max_temp_directory_size": "0KB"})
    try:
        with pytest.raises(duckdb.OutOfMemoryException):
            con.execute(
                "SELECT CAST(id AS VARCHAR), NULL FROM conversations_v2 ORDER BY 1"
            ).fetchmany(1)
    finally:
        con.close()


def test_the_child_listing_a_big_table_stays_small(many: Path, tmp_path: Path) -> None:
    """The peak resident size of the child that lists 600,000 rows, as the kernel counted
    it (a fresh interpreter runs the listing: its children's peak is that child's)."""
    (tmp_path / many.name).symlink_to(many)
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from akoshad import duckdb_worker\n"
        "refs = duckdb_worker.list_rows(Path(sys.argv[1]), 'box')\n"
        "print(len(refs), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / many.name)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        check=True,
    )
    rows, peak_mib = map(int, out.stdout.split())
    assert rows == ROWS
    assert peak_mib < LIST_PEAK_MIB


def test_a_listing_bigger_than_the_limit_spills_and_lists_every_row(
    copy_dir: Path, calls: Calls, warnings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duckdb_worker, "MEMORY_LIMIT", SPILL_LIMIT)
    db = copy_dir / "reflection.duckdb"
    refs = duckdb_worker.list_rows(db, SYSTEM)
    assert len(refs) == ROWS
    good = [r for r in refs if r.problem is None]
    assert len(good) == ROWS // WITH_EMBEDDING
    assert [r.memory_id for r in refs] == sorted(r.memory_id for r in refs)
    # one child, bounded as set, none retried
    assert [r["duckdb"]["memory_limit"] for r in calls.requests] == [SPILL_LIMIT]
    assert warnings == []
    path, ids, _found = duckdb_worker.build_memories_json(db, SYSTEM, good, 1000, False)
    try:
        assert ids == [r.memory_id for r in good]
        assert path.read_bytes() == memories_json(load_memories(db, SYSTEM, good).memories)
    finally:
        path.unlink()
    assert warnings == []
    # each child had its own private spill directory beside the copy, gone after it
    assert len(calls.spill_dirs) == 2 and calls.spill_dirs[0][0] != calls.spill_dirs[1][0]
    for temp, mode in calls.spill_dirs:
        assert temp.parent == copy_dir and temp.name.startswith(duckdb_worker.TEMP_PREFIX)
        assert mode == 0o700
        assert not os.path.lexists(temp)
    assert sorted(p.name for p in copy_dir.iterdir()) == ["reflection.duckdb"]


def test_out_of_memory_under_the_limit_is_retried_once_under_a_higher_one(
    copy_dir: Path, calls: Calls, warnings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duckdb_worker, "MEMORY_LIMIT", TINY_LIMIT)
    monkeypatch.setattr(duckdb_worker, "RETRY_MEMORY_LIMIT", "512MB")
    db = copy_dir / "reflection.duckdb"
    refs = duckdb_worker.list_rows(db, SYSTEM)
    assert len(refs) == ROWS and refs == list_rows(db, SYSTEM)
    assert [r["duckdb"].get("memory_limit") for r in calls.requests] == [TINY_LIMIT, "512MB"]
    assert len(warnings) == 1
    assert f"DuckDB ran out of memory under {TINY_LIMIT} reading reflection.duckdb" in warnings[0]
    assert "trying once more under 512MB" in warnings[0]
    # a private copy's staged name is nowhere a user can look: the store file is named
    staged = copy_dir / "000002-reflection.duckdb"
    (copy_dir / "reflection.duckdb").rename(staged)
    duckdb_worker.list_rows(staged, SYSTEM)
    assert "reading reflection.duckdb (list:" in warnings[1], warnings[1]
    staged.rename(copy_dir / "reflection.duckdb")
    # the validation of a copy too
    note, facts = duckdb_worker.validate_copy(db)
    assert (
        note is None and facts is not None and dict(facts.rows or ()) == {"conversations_v2": ROWS}
    )
    assert sorted(p.name for p in copy_dir.iterdir()) == ["reflection.duckdb"]


def test_out_of_memory_in_every_try_is_an_error_and_leaves_nothing(
    copy_dir: Path, calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(duckdb_worker, "MEMORY_LIMIT", TINY_LIMIT)
    monkeypatch.setattr(duckdb_worker, "RETRY_MEMORY_LIMIT", TINY_LIMIT)
    db = copy_dir / "reflection.duckdb"
    refs = list_rows(db, SYSTEM)
    with pytest.raises(duckdb_worker.WorkerError, match="Out of Memory") as caught:
        duckdb_worker.build_memories_json(db, SYSTEM, refs, 1000, False)
    assert caught.value.kind == duckdb_commands.OUT_OF_MEMORY
    assert len(calls.requests) == 2  # retried once, not forever
    assert sorted(p.name for p in copy_dir.iterdir()) == ["reflection.duckdb"]


def test_a_child_connection_is_bounded_and_still_safe(tmp_path: Path) -> None:
    """What a child runs with: one thread, the limit and spill directory it was given, no
    insertion order kept, and external access off (set after the open: DuckDB takes no
    temp_directory once it is off)."""
    db = tmp_path / "reflection.duckdb"
    duckdb.connect(str(db)).close()
    temp = tmp_path / "spill"
    settings = duckdb_commands.bounded_settings(
        {"duckdb": {"memory_limit": "40MB", "temp_directory": str(temp)}}
    )
    con = open_copy(db, settings)
    try:
        got = con.execute(
            "SELECT current_setting('threads'), current_setting('memory_limit'), "
            "current_setting('temp_directory'), current_setting('preserve_insertion_order'), "
            "current_setting('enable_external_access')"
        ).fetchone()
        assert got is not None
        assert got[0] == 1 and got[1].startswith("38.1 MiB") and got[2] == str(temp)
        assert got[3:] == (False, False)
        with pytest.raises(duckdb.PermissionException):
            con.execute(f"SELECT * FROM read_text('{sys.executable}')").fetchall()
    finally:
        con.close()


def test_a_spill_directory_a_killed_run_left_is_removed_at_start(tmp_path: Path) -> None:
    """A crash in the middle of a child leaves its spill directory in the staging
    directory: the next start removes it (with the rest of the staging directory)."""
    from tests.storegen import make_store

    store = make_store(tmp_path / "store")
    state = tmp_path / "state"
    leftover = state / "staging" / f"{duckdb_worker.TEMP_PREFIX}abc123"
    leftover.mkdir(parents=True, mode=0o700)
    (leftover / "duckdb_temp_storage_DEFAULT-0.tmp").write_bytes(b"spilled rows" * 100)
    config = write_config(
        tmp_path / "c.yaml",
        data_dir=str(store),
        state_dir=str(state),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(tmp_path / "s.sock"),
        cloud_sync={"system_id": SYSTEM},
    )
    done = akoshad("run", "--once", "--config", str(config), env=base_env(tmp_path / "home"))
    assert done.returncode == 0, done.stderr
    assert not os.path.lexists(leftover)
    assert list((state / "staging").iterdir()) == []
