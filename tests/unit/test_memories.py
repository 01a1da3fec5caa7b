"""Memory extraction from a reflection.duckdb snapshot copy, memories.json, batching."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import akoshad.akosha.encoding as encoding_mod
from akoshad.akosha.encoding import (
    ENVELOPE_BYTES,
    RawJSON,
    batches,
    conversation_entry,
    encode_entry,
    encode_json,
    memories_json,
)
from akoshad.akosha.redact import default_redactor
from akoshad.akosha.row_sql import REASON_NO_TEXT
from akoshad.akosha.rows import (
    REASON_DUPLICATE_ID,
    RowRef,
    chunks,
    extract_memories,
    gated_ids,
    iso_utc,
    list_rows,
    load_memories,
    memory_columns,
    read_memories,
)
from akoshad.akosha.vectors import (
    EMBED_DIM,
    REASON_NO_EMBEDDING,
    REASON_NON_FINITE,
    dim_reason,
    parse_embedding,
    vector_json,
)
from tests.akosha_fixtures import (
    EMB_SQL,
    add_rows,
    expected_embedding,
    insert_sql,
    make_reflection_db,
)

SYSTEM = "testbox"


def f32(values: list[float]) -> bytes:
    return struct.pack(f"{len(values)}f", *values)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return make_reflection_db(tmp_path / "reflection.duckdb")


# ---- extraction --------------------------------------------------------------------------
def test_rows_become_memories_with_prefixed_ids_and_exact_vectors(db: Path) -> None:
    add_rows(db, "conversations_v2", 0, 3)
    add_rows(db, "reflections_v2", 10, 12)
    memories, skipped = extract_memories(db, SYSTEM)
    assert skipped == {}
    by_id = {m["memory_id"]: m for m in memories}
    assert sorted(by_id) == [
        "testbox:c000000",
        "testbox:c000001",
        "testbox:c000002",
        "testbox:r000010",
        "testbox:r000011",
    ]
    conv = by_id["testbox:c000002"]
    assert conv["text"] == "memory 2 xxxxxxxxxx"
    # a FLOAT[384] column checked in SQL: DuckDB's text is carried as JSON, never parsed
    assert isinstance(conv["embedding"], RawJSON)
    sent = json.loads(encode_json(conv))["embedding"]
    assert len(sent) == EMBED_DIM and all(isinstance(x, float) for x in sent)
    # exact as float32: what Akosha stores is bit-identical to the snapshot's vector
    assert f32(sent) == f32(expected_embedding(2))
    assert conv["metadata"] == {
        "source": SYSTEM,
        "original_id": "c000002",
        "type": "conversation",
        "created_at": "2025-03-01T12:02:00+00:00",
    }
    refl = by_id["testbox:r000011"]
    assert refl["metadata"]["type"] == "reflection"
    assert refl["metadata"]["original_id"] == "r000011"
    assert refl["metadata"]["created_at"] == "2025-03-01T12:11:00+00:00"
    assert f32(json.loads(encode_json(refl))["embedding"]) == f32(expected_embedding(11))
    # every created_at parses as ISO 8601 with a zone
    for m in memories:
        assert datetime.fromisoformat(m["metadata"]["created_at"]).tzinfo is not None


def test_rows_without_usable_embedding_or_text_are_skipped_with_reason(db: Path) -> None:
    add_rows(db, "conversations_v2", 0, 2)
    add_rows(db, "conversations_v2", 2, 4, embedding="null")
    add_rows(db, "reflections_v2", 0, 1, embedding="nan")
    add_rows(db, "reflections_v2", 1, 2, content="'   '")
    memories, skipped = extract_memories(db, SYSTEM)
    assert [m["memory_id"] for m in memories] == ["testbox:c000000", "testbox:c000001"]
    assert skipped == {
        "testbox:c000002": REASON_NO_EMBEDDING,
        "testbox:c000003": REASON_NO_EMBEDDING,
        "testbox:r000000": REASON_NON_FINITE,
        "testbox:r000001": REASON_NO_TEXT,
    }


def test_a_long_blank_text_is_no_text_and_a_long_indent_is_not(db: Path) -> None:
    """The listing trims a text's first 64 characters before the whole of it: a blank text
    longer than that is still blank, text after a longer indent still counts."""
    add_rows(db, "conversations_v2", 0, 1, content="repeat(' ', 100)")
    add_rows(db, "conversations_v2", 1, 2, content="repeat(' ', 70) || 'x'")
    add_rows(db, "conversations_v2", 2, 3, content="repeat(' ', 64)")
    problems = {r.memory_id: r.problem for r in list_rows(db, SYSTEM)}
    assert problems == {
        "testbox:c000000": REASON_NO_TEXT,
        "testbox:c000001": None,
        "testbox:c000002": REASON_NO_TEXT,
    }


def test_the_listing_finds_blank_what_loading_finds_blank(db: Path) -> None:
    """Whitespace of every kind (newlines, tabs, Unicode spaces) is blank for the listing as
    for the loading: a row the listing sent on and the loading then skipped was revived,
    loaded and skipped again on every pass."""
    blanks = ["chr(10) || chr(9) || chr(10)", "chr(13) || chr(10) || ' '", "chr(8233)"]
    for i, blank in enumerate(blanks):
        add_rows(db, "conversations_v2", i, i + 1, content=blank)
    add_rows(db, "conversations_v2", 3, 4, content="chr(10) || 'x'")
    refs = list_rows(db, SYSTEM)
    loaded = load_memories(db, SYSTEM, [RowRef(r.memory_id, r.table, r.original_id) for r in refs])
    assert {r.memory_id: r.problem for r in refs} == {
        **{m: REASON_NO_TEXT for m in loaded.skipped},
        "testbox:c000003": None,
    }
    assert len(loaded.skipped) == 3


def test_wrong_dimension_is_skipped(tmp_path: Path) -> None:
    # FLOAT[384] cannot hold a wrong length: use a FLOAT[] variant of the schema
    db = make_reflection_db(tmp_path / "r.duckdb", embedding_type="FLOAT[]")
    add_rows(db, "conversations_v2", 0, 2)
    add_rows(db, "conversations_v2", 2, 3, embedding="short")
    memories, skipped = extract_memories(db, SYSTEM)
    assert [m["memory_id"] for m in memories] == ["testbox:c000000", "testbox:c000001"]
    assert skipped == {"testbox:c000002": dim_reason(10)}
    assert skipped["testbox:c000002"] == "embedding has 10 dimensions, expected 384"


def test_missing_tables_and_columns_are_tolerated(tmp_path: Path) -> None:
    only_conv = make_reflection_db(tmp_path / "a.duckdb", tables=("conversations_v2",))
    add_rows(only_conv, "conversations_v2", 0, 2)
    assert len(extract_memories(only_conv, SYSTEM).memories) == 2

    empty = tmp_path / "b.duckdb"
    duckdb.connect(str(empty)).close()
    assert extract_memories(empty, SYSTEM) == ([], {})

    no_emb = tmp_path / "c.duckdb"
    con = duckdb.connect(str(no_emb))
    con.execute("CREATE TABLE conversations_v2 (id TEXT, content TEXT, timestamp TIMESTAMP)")
    con.execute("INSERT INTO conversations_v2 VALUES ('x', 'hello', NULL)")
    con.close()
    assert extract_memories(no_emb, SYSTEM) == ([], {"testbox:x": REASON_NO_EMBEDDING})


def test_missing_snapshot_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        extract_memories(tmp_path / "nope.duckdb", SYSTEM)


def test_timestamps_with_time_zone_are_converted_to_utc(tmp_path: Path) -> None:
    db = make_reflection_db(tmp_path / "r.duckdb", ts_type="TIMESTAMPTZ")
    con = duckdb.connect(str(db))
    con.execute(
        f"INSERT INTO conversations_v2 (id, content, embedding, category, timestamp) "
        f"SELECT 'tz', 'hello', {EMB_SQL.format(dim=384)}, 'facts', "
        "TIMESTAMPTZ '2025-06-01 10:30:00+02:00' FROM range(1) t(i)"
    )
    con.execute(
        f"INSERT INTO conversations_v2 (id, content, embedding, category, timestamp) "
        f"SELECT 'nots', 'hello', {EMB_SQL.format(dim=384)}, 'facts', NULL FROM range(1) t(i)"
    )
    con.close()
    memories = {m["memory_id"]: m for m in extract_memories(db, SYSTEM).memories}
    assert memories["testbox:tz"]["metadata"]["created_at"] == "2025-06-01T08:30:00+00:00"
    # no timestamp: the key is left out (Akosha then uses its own clock)
    assert "created_at" not in memories["testbox:nots"]["metadata"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01 12:00:00", "2025-03-01T12:00:00+00:00"),
        ("2025-03-01 12:00:00.123456", "2025-03-01T12:00:00.123456+00:00"),
        ("2025-03-01T12:00:00+02:00", "2025-03-01T12:00:00+02:00"),
        ("infinity", None),
        ("", None),
        (None, None),
    ],
)
def test_iso_utc(text: str | None, expected: str | None) -> None:
    assert iso_utc(text) == expected


def test_same_id_in_both_tables_is_sent_once(db: Path) -> None:
    con = duckdb.connect(str(db))
    for table in ("conversations_v2", "reflections_v2"):
        con.execute(insert_sql(table, 0, 1, EMB_SQL.format(dim=384), "'same'"))
        con.execute(f"UPDATE {table} SET id = 'dup'")
    con.close()
    memories, skipped = extract_memories(db, SYSTEM)
    assert [m["metadata"]["type"] for m in memories] == ["conversation"]
    assert skipped == {"testbox:dup": REASON_DUPLICATE_ID}


def test_list_rows_then_load_a_subset(db: Path) -> None:
    add_rows(db, "conversations_v2", 0, 5)
    add_rows(db, "reflections_v2", 0, 3)
    add_rows(db, "reflections_v2", 3, 4, embedding="null")
    refs = list_rows(db, SYSTEM)
    assert len(refs) == 9
    assert [r.problem for r in refs].count(None) == 8
    wanted = [r for r in refs if r.original_id in ("c000001", "r000002", "r000003")]
    memories, skipped = load_memories(db, SYSTEM, wanted)
    assert [m["memory_id"] for m in memories] == ["testbox:c000001", "testbox:r000002"]
    assert skipped == {"testbox:r000003": REASON_NO_EMBEDDING}
    assert load_memories(db, SYSTEM, []) == ([], {})


def test_snapshot_with_wal_is_read_and_left_untouched(tmp_path: Path) -> None:
    live = make_reflection_db(tmp_path / "live.duckdb")
    add_rows(live, "conversations_v2", 0, 2)
    # a writer that commits and dies without a checkpoint: the new rows live in the .wal
    insert = insert_sql("conversations_v2", 2, 5, EMB_SQL.format(dim=384), "'w'")
    code = (
        "import duckdb, os, sys\n"
        "con = duckdb.connect(sys.argv[1])\n"
        f"con.execute({insert!r})\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(live)], check=True, timeout=60)
    wal = live.with_name(live.name + ".wal")
    assert wal.stat().st_size > 0
    copy = tmp_path / "copy.duckdb"
    shutil.copyfile(live, copy)
    shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
    before = (sha(copy), sha(copy.with_name(copy.name + ".wal")))
    memories, _ = extract_memories(copy, SYSTEM)
    assert len(memories) == 5
    assert (sha(copy), sha(copy.with_name(copy.name + ".wal"))) == before
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["live.duckdb", "live.duckdb.wal", "copy.duckdb", "copy.duckdb.wal"]
    )


# ---- memories.json -------------------------------------------------------------------------
def test_memories_json_shape(db: Path) -> None:
    add_rows(db, "conversations_v2", 0, 2, content="'héllo ✓ ' || i")
    add_rows(db, "reflections_v2", 0, 1)
    memories, _ = extract_memories(db, SYSTEM)
    raw = memories_json(memories)
    assert isinstance(raw, bytes)
    doc = json.loads(raw.decode("utf-8"))
    assert list(doc) == ["conversations"]
    assert len(doc["conversations"]) == 3
    first = doc["conversations"][0]
    assert set(first) == {"id", "content", "embedding", "timestamp", "source", "metadata"}
    assert first["id"] == "testbox:c000000"
    assert first["content"] == "héllo ✓ 0"
    assert "héllo ✓".encode() in raw  # UTF-8, not \\u escapes
    assert len(first["embedding"]) == EMBED_DIM
    assert first["timestamp"] == "2025-03-01T12:00:00+00:00"
    assert first["source"] == SYSTEM
    assert first["metadata"] == {"original_id": "c000000", "type": "conversation"}
    assert doc["conversations"][2]["metadata"]["type"] == "reflection"
    assert json.loads(memories_json([])) == {"conversations": []}


def test_encode_json_refuses_nan() -> None:
    with pytest.raises(ValueError):
        encode_json({"x": float("nan")})


# ---- batching ---------------------------------------------------------------------------
def mem(i: int, text_len: int = 10) -> dict[str, object]:
    return {
        "memory_id": f"s:{i}",
        "text": "x" * text_len,
        "embedding": [0.125] * EMBED_DIM,
        "metadata": {"source": "s"},
    }


def test_batches_by_count() -> None:
    items = [mem(i) for i in range(2500)]
    out = list(batches(items, max_bytes=1 << 40))
    assert [len(b) for b in out] == [1000, 1000, 500]
    assert [m for b in out for m in b] == items


def test_batches_by_bytes() -> None:
    items = [mem(i, text_len=50_000) for i in range(200)]  # ~52 KB each
    out = list(batches(items))
    assert len(out) > 1
    assert [m for b in out for m in b] == items
    for b in out:
        body = encode_json(
            {
                "jsonrpc": "2.0",
                "id": 99999,
                "method": "tools/call",
                "params": {"name": "batch_store_memories", "arguments": {"memories": b}},
            }
        )
        assert len(body) < 3 * 1024 * 1024
    # batches are filled: each but the last would overflow with the next item added
    sizes = [sum(len(encode_json(m)) + 1 for m in b) for b in out]
    nxt = len(encode_json(items[0])) + 1
    assert all(s + nxt > 3 * 1024 * 1024 - ENVELOPE_BYTES for s in sizes[:-1])


def test_an_item_too_big_alone_gets_its_own_batch() -> None:
    items = [mem(0), mem(1, text_len=200_000), mem(2)]
    out = list(batches(items, max_bytes=100_000))
    assert [[m["memory_id"] for m in b] for b in out] == [["s:0"], ["s:1"], ["s:2"]]


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=30_000), max_size=60),
    max_items=st.integers(min_value=1, max_value=20),
    max_bytes=st.integers(min_value=ENVELOPE_BYTES + 1, max_value=200_000),
)
def test_batches_property(sizes: list[int], max_items: int, max_bytes: int) -> None:
    items = [mem(i, text_len=n) for i, n in enumerate(sizes)]
    out = list(batches(items, max_items=max_items, max_bytes=max_bytes))
    assert [m for b in out for m in b] == items
    for b in out:
        assert 1 <= len(b) <= max_items
        size = sum(len(encode_json(m)) + 1 for m in b)
        assert len(b) == 1 or size <= max_bytes - ENVELOPE_BYTES


def test_raw_embeddings_are_spliced_at_any_depth_and_nowhere_else() -> None:
    vector = RawJSON("[0.5,-1e-05,3.0]")
    mark = encoding_mod._RAW_MARK  # even a text that mimics the stand-in stays text
    memory = {"memory_id": "m", "text": f'"{mark}0" [1,2]', "embedding": vector}
    message = {"params": {"arguments": {"memories": [memory, dict(memory)]}}}
    doc = json.loads(encode_json(message))
    for item in doc["params"]["arguments"]["memories"]:
        assert item["embedding"] == [0.5, -1e-05, 3.0]
        assert item["text"] == f'"{mark}0" [1,2]'
    assert json.loads(encode_json({"embedding": [0.25, 1.0]})) == {"embedding": [0.25, 1.0]}


def test_raw_and_parsed_embeddings_encode_to_the_same_values(db: Path) -> None:
    add_rows(db, "conversations_v2", 0, 4)
    fast = extract_memories(db, SYSTEM).memories  # checked rows: raw text
    slow = load_memories(db, SYSTEM).memories  # no refs, no SQL checks: parsed floats
    assert all(isinstance(m["embedding"], RawJSON) for m in fast)
    assert all(isinstance(m["embedding"], list) for m in slow)
    assert [json.loads(encode_json(m)) for m in fast] == [json.loads(encode_json(m)) for m in slow]
    assert json.loads(memories_json(fast)) == json.loads(memories_json(slow))


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(),
    original=st.text(),
    ts=st.none() | st.text(max_size=30),
    order=st.booleans(),
    extra=st.none() | st.integers(),
)
def test_encode_entry_is_the_generic_encoding_byte_for_byte(
    text: str, original: str, ts: str | None, order: bool, extra: int | None
) -> None:
    meta: dict[str, object] = {"source": 'box"1', "original_id": original, "type": "reflection"}
    if order:  # another key order is kept as it is
        meta = {"type": "conversation", "source": "b", "original_id": original}
    if ts is not None:
        meta["created_at"] = ts
    if extra is not None:  # an unexpected key: the generic path
        meta["n"] = extra
    for embedding in (RawJSON("[0.5,-1e-05,3.0]"), [0.25, 1.0]):
        memory = {"memory_id": f"box:{original}", "text": text, "embedding": embedding}
        memory["metadata"] = meta  # type: ignore[assignment]
        assert encode_entry(memory) == encode_json(conversation_entry(memory))


def test_the_gate_asked_once_finds_what_the_gate_of_each_part_finds(db: Path) -> None:
    add_rows(db, "conversations_v2", 0, 30)
    add_rows(db, "reflections_v2", 0, 5)
    con = duckdb.connect(str(db))
    con.execute(
        "UPDATE conversations_v2 SET content = content || ' api_key = s3cr3t' "
        "WHERE id IN ('c000003', 'c000007')"
    )
    con.execute("UPDATE conversations_v2 SET content = content || ' café' WHERE id = 'c000011'")
    con.close()
    gate = default_redactor().gate
    assert gate is not None
    refs = list_rows(db, SYSTEM)
    con = duckdb.connect(str(db), read_only=True)
    try:
        schema = memory_columns(con)
        gated = gated_ids(con, schema, gate)
        assert gated is not None and gated["conversations_v2"] >= {"c000003", "c000011"}
        per_part: set[str] = set()
        once: set[str] = set()
        for part in chunks(refs, 7):
            read_memories(con, SYSTEM, part, schema=schema, gate=gate, clean=per_part)
            read_memories(con, SYSTEM, part, schema=schema, gate=gate, clean=once, gated=gated)
        assert once == per_part and f"{SYSTEM}:c000003" not in once and len(once) > 20
        total = sum(map(len, gated.values()))
        assert gated_ids(con, schema, gate, most=total) == gated
        assert gated_ids(con, schema, gate, most=total - 1) is None  # not all held
    finally:
        con.close()


def test_a_checked_vector_text_without_its_values_is_not_taken_as_it_is() -> None:
    full = "[" + ",".join(["0.5"] * EMBED_DIM) + "]"
    assert isinstance(parse_embedding(full, checked=True), RawJSON)
    short = "[" + ",".join(["0.5"] * (EMBED_DIM - 1)) + "]"
    assert parse_embedding(short, checked=True) == dim_reason(EMBED_DIM - 1)
    assert parse_embedding(full.replace("0.5", "nan", 1), checked=True) == REASON_NON_FINITE


# ---- float32 vectors fetched as numpy, printed by orjson -----------------------------------
def test_a_float32_vector_is_printed_in_a_form_that_reads_back_as_the_same_floats() -> None:
    import numpy as np

    rng = np.random.default_rng(7)
    for scale in (1.0, 1e-5, 1e-30, 1e30):
        vector = (rng.standard_normal(EMBED_DIM) * scale).astype(np.float32)
        vector[0], vector[1] = np.float32(0.169921875), np.float32(-0.0)
        text = vector_json(vector)
        assert isinstance(text, RawJSON) and " " not in text
        back = np.array(json.loads(text), dtype=np.float32)
        assert back.tobytes() == vector.tobytes()


def test_a_vector_that_cannot_be_sent_gives_its_reason() -> None:
    import numpy as np

    ok = np.full(EMBED_DIM, 0.5, dtype=np.float32)
    assert vector_json(None) == REASON_NO_EMBEDDING
    assert vector_json(ok[:10]) == dim_reason(10)
    for bad in (np.nan, np.inf, -np.inf):
        worse = ok.copy()
        worse[200] = bad
        assert vector_json(worse) == REASON_NON_FINITE  # never a null in the JSON


def test_parts_read_as_numpy_give_the_floats_of_a_whole_scan(tmp_path: Path) -> None:
    """A part's rows (ids named) take the numpy path, a whole scan DuckDB's text: the same
    memories, the same float32 values; a FLOAT[] table's bad rows are skipped with their
    reason on both."""
    for kind in ("FLOAT[384]", "FLOAT[]"):
        db = make_reflection_db(tmp_path / f"{kind[-4:-1]}.duckdb", embedding_type=kind)
        add_rows(db, "conversations_v2", 0, 40)
        add_rows(db, "reflections_v2", 0, 9)
        if kind == "FLOAT[]":
            add_rows(db, "conversations_v2", 40, 43, embedding="short")
        whole = load_memories(db, SYSTEM)
        refs = list_rows(db, SYSTEM)
        con = duckdb.connect(str(db), read_only=True)
        try:
            parts = [read_memories(con, SYSTEM, part) for part in chunks(refs, 11)]
        finally:
            con.close()
        memories = [m for p in parts for m in p.memories]
        skipped = {k: v for p in parts for k, v in p.skipped.items()}
        assert len(memories) == len(whole.memories) == 49
        assert skipped == whole.skipped
        for got, want in zip(
            sorted(memories, key=lambda m: m["memory_id"]),
            sorted(whole.memories, key=lambda m: m["memory_id"]),
            strict=True,
        ):
            assert isinstance(got["embedding"], RawJSON)
            assert {**got, "embedding": None} == {**want, "embedding": None}
            assert f32(json.loads(got["embedding"])) == f32(json.loads(str(want["embedding"])))


class _Recording:
    """A DuckDB connection that keeps the SQL of every query."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.sql: list[str] = []

    def execute(self, sql: str, params: object = None) -> duckdb.DuckDBPyConnection:
        self.sql.append(sql)
        return self.con.execute(sql, params)


@pytest.mark.parametrize("kind", ["FLOAT[384]", "DOUBLE[384]"])
def test_a_part_gives_its_rows_by_id_whether_its_range_is_read_whole_or_joined(
    tmp_path: Path, kind: str
) -> None:
    """A part whose range holds few other rows is read whole and the others dropped; a
    sparse one (an upload's few new rows, spread through the table) is joined with its ids:
    either way exactly its rows, by id."""
    db = make_reflection_db(tmp_path / "r.duckdb", embedding_type=kind)
    ids = add_rows(db, "conversations_v2", 0, 200)
    dense = [i for n, i in enumerate(ids[10:60]) if n not in (3, 17, 40)]
    sparse = ids[::10]
    con = _Recording(duckdb.connect(str(db), read_only=True))
    try:
        for part, joined in ((dense, False), (sparse, True)):
            refs = [RowRef(f"{SYSTEM}:{i}", "conversations_v2", i) for i in reversed(part)]
            con.sql.clear()
            got = read_memories(con, SYSTEM, refs)
            assert [m["metadata"]["original_id"] for m in got.memories] == sorted(part)
            assert got.skipped == {}
            assert any(" JOIN " in sql for sql in con.sql) is joined
            for m in got.memories:
                n = int(m["metadata"]["original_id"][1:])
                assert f32(json.loads(m["embedding"])) == f32(expected_embedding(n))
    finally:
        con.con.close()


def test_the_listing_gives_each_rows_text_size_and_a_load_is_bounded_by_bytes(db: Path) -> None:
    """Memories are loaded 1,000 rows at a time, and no more than a byte bound of text at
    a time either: 300 pasted logs of 1 MB each took the daemon to 903 MB and the DuckDB
    child to 1.25 GB, loaded whole in one part. The listing gives each row's text size
    (UTF-8 bytes), in the child as in process, and ``chunks`` cuts by both."""
    from akoshad.duckdb_worker import list_rows as list_rows_in_child

    add_rows(db, "conversations_v2", 0, 1, content="repeat('x', 1000)")
    add_rows(db, "conversations_v2", 1, 2, content="repeat('é', 10)")  # 2 bytes each
    add_rows(db, "conversations_v2", 2, 3, content="''")
    here = {r.memory_id: r.size for r in list_rows(db, SYSTEM)}
    assert here == {"testbox:c000000": 1000, "testbox:c000001": 20, "testbox:c000002": 0}
    assert {r.memory_id: r.size for r in list_rows_in_child(db, SYSTEM)} == here

    refs = [RowRef(f"s:{i}", "t", str(i), size=n) for i, n in enumerate([5, 5, 5, 20, 1, 1, 1])]
    assert [len(p) for p in chunks(refs, 1000, 10)] == [2, 1, 1, 3]  # 20 alone: a part
    assert [len(p) for p in chunks(refs, 2, 10)] == [2, 1, 1, 2, 1]
    assert [len(p) for p in chunks(refs, 3)] == [3, 3, 1]  # by count alone, as before
    assert list(chunks([], 3, 10)) == []
