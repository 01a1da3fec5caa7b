"""Memories read from a private snapshot copy of ``reflection.duckdb``.

Rows of ``conversations_v2`` and ``reflections_v2`` become memories in the shape of Akosha's
``batch_store_memories`` items (INTEROP.md section 3)::

    {"memory_id": "{system_id}:{id}", "text": ..., "embedding": [384 floats],
     "metadata": {"source": system_id, "original_id": id,
                  "type": "conversation" | "reflection", "created_at": ISO 8601 with zone}}

Copies are opened by :func:`~akoshad.akosha.duckdb_copy.open_copy` (read-only, sandboxed);
the memories are encoded by :mod:`akoshad.akosha.encoding`.

Everything here blocks: call it from a worker thread. Two steps keep memory bounded on big
stores: :func:`list_rows` reads only ids and the embedding checks, :func:`load_memories`
then materialises just the rows wanted (in chunks chosen by the caller). Rows are fetched
from DuckDB a batch at a time. :func:`list_refs` and :func:`read_memories` do the same on a
connection the caller opened (``open_copy``, with the worker's memory settings).

Naive ``TIMESTAMP`` values are taken as UTC (what session-buddy writes); ``TIMESTAMP WITH
TIME ZONE`` values are converted to UTC in SQL (:mod:`akoshad.akosha.row_sql` holds the
SQL). Embeddings are written in their shortest float text form, so they round-trip exactly
and encode about 40 % smaller (:mod:`akoshad.akosha.vectors`). A part's float32 vectors
(``FLOAT[384]``, session-buddy's) are fetched as numpy arrays (1.2 CPU-s for a store's
56,000 vectors, against 4.6 for DuckDB's cast to text, the costliest part of
``memories.json``); other float lists go through DuckDB's text form (checked by
:func:`list_rows` in SQL: 384 finite values), never parsed into floats and printed again.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple

from akoshad.akosha.duckdb_copy import open_copy
from akoshad.akosha.encoding import Memory, RawJSON
from akoshad.akosha.row_sql import (
    REASON_NO_TEXT,
    embedding_sql,
    gate_sql,
    problem_sql,
    quoted,
    time_sql,
)
from akoshad.akosha.vectors import (
    FLOAT32_LIST_TYPES,
    FLOAT_LIST_TYPES,
    parse_embedding,
    vector_json,
)

TABLES: dict[str, str] = {"conversations_v2": "conversation", "reflections_v2": "reflection"}
FETCH_ROWS = 256  # rows fetched from DuckDB at a time
DENSE_SLACK = 16  # other rows a part's range may hold and still be read whole (and a quarter)
MAX_GATED = 20_000  # ids of texts to scan held at most (gated_ids: some 2 MB)
REASON_DUPLICATE_ID = "id also used by another table"


@dataclass(frozen=True, slots=True)
class RowRef:
    """One candidate row: where it lives and, if it cannot be sent, why not (slots: a big
    store has 100,000s of them)."""

    memory_id: str
    table: str
    original_id: str
    problem: str | None = None
    size: int = 0  # its text's bytes (``content``), so a load is bounded by bytes too


class Extraction(NamedTuple):
    """Memories ready to send, and the rows left out (``memory_id`` -> reason)."""

    memories: list[Memory]
    skipped: dict[str, str]


def memory_id(system_id: str, original_id: str) -> str:
    """Akosha's primary key is global across systems: prefix the row id with the system id."""
    return f"{system_id}:{original_id}"


def _fetch(cursor: Any) -> Iterator[tuple[Any, ...]]:
    """The rows of an executed query, fetched a batch at a time (never all at once)."""
    while rows := cursor.fetchmany(FETCH_ROWS):
        yield from rows


def memory_columns(con: Any) -> dict[str, dict[str, str]]:
    """{table: {column: data_type}} for the memory tables present in the main schema (ask
    once per copy: it costs a few ms, as much as reading 500 rows' text)."""
    rows = con.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'main' AND table_name IN ('conversations_v2', 'reflections_v2')"
    ).fetchall()
    out: dict[str, dict[str, str]] = {}
    for table, column, dtype in rows:
        out.setdefault(str(table), {})[str(column).lower()] = str(dtype).upper()
    return out


def list_rows(snapshot_db: Path, system_id: str) -> list[RowRef]:
    """:func:`list_refs` of a copy opened here."""
    con = open_copy(snapshot_db)
    try:
        return list_refs(con, system_id)
    finally:
        con.close()


def list_refs(con: Any, system_id: str) -> list[RowRef]:
    """Every row of the memory tables of the open copy ``con``: :func:`iter_refs`."""
    return list(iter_refs(con, system_id))


def iter_refs(con: Any, system_id: str) -> Iterator[RowRef]:
    """Every row of the memory tables of the open copy ``con``, one at a time (table by
    table, by id), with the reason it cannot be sent (if any).

    Reads ids and checks only, never the vectors. Missing tables are simply absent;
    a row whose id an earlier sendable row (of an earlier table) has is reported as a
    problem; after rows of that id that cannot be sent, it is judged on its own.
    """
    schema = memory_columns(con)
    seen: set[str] = set()
    for table, _kind in TABLES.items():
        cols = schema.get(table)
        if cols is None or "id" not in cols or "content" not in cols:
            continue
        cursor = con.execute(
            f"SELECT CAST(id AS VARCHAR), {problem_sql(cols)}, "
            f"coalesce(strlen(CAST(content AS VARCHAR)), 0) FROM {quoted(table)} "
            "WHERE id IS NOT NULL ORDER BY 1"
        )
        for original_id, problem, size in _fetch(cursor):
            original = str(original_id)
            if original in seen:  # the same memory id: the same system, the same row id
                problem = REASON_DUPLICATE_ID
            if problem is None:
                seen.add(original)
            yield RowRef(memory_id(system_id, original), table, original, problem, int(size))


def iso_utc(value: str | None, naive_tz: tzinfo = UTC) -> str | None:
    """ISO 8601 with a zone for a DuckDB timestamp text; naive values are ``naive_tz``."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=naive_tz)
    return parsed.isoformat()


def _vector_rows(cursor: Any, wanted: set[str] | None = None) -> Iterator[tuple[Any, ...]]:
    """The rows of an executed :func:`read_memories` query of a bounded number of rows
    (its ids' range), fetched at once as numpy columns, the embedding as
    :func:`vector_json`; with ``wanted``, only the rows of those ids, by id."""
    cols = cursor.fetchnumpy()
    ids, contents, vectors, times, scans = (
        cols[name].tolist() for name in ("id", "content", "embedding", "ts", "scan")
    )
    order: Iterable[int] = range(len(ids))
    if wanted is not None:
        order = sorted((i for i, rid in enumerate(ids) if rid in wanted), key=ids.__getitem__)
    for i in order:
        yield ids[i], contents[i], vector_json(vectors[i]), times[i], scans[i]


def _part_rows(
    con: Any, select: str, table: str, ids: list[str], as_vector: bool
) -> Iterable[tuple[Any, ...]]:
    """The rows of ``select`` whose ids are ``ids``, by id. Only the range of the ids is
    read (DuckDB skips the row groups outside it: a part of a big store's sorted ids reads
    a few, not the whole table). When the range holds few other rows (a first sync's
    parts: every row wanted), it is read whole and the others dropped here: a join with
    the ids cost 1.0 CPU-s more in a store of 56,000 (0.3 more for counting the range)."""
    lo, hi = min(ids), max(ids)
    between = " WHERE CAST(t.id AS VARCHAR) BETWEEN ? AND ?"
    count = con.execute(f"SELECT count(*) FROM {quoted(table)} AS t" + between, [lo, hi]).fetchone()
    if count is None or count[0] > len(ids) + max(DENSE_SLACK, len(ids) // 4):
        cursor = con.execute(
            select + " JOIN (SELECT unnest(CAST(? AS VARCHAR[])) AS want) AS w "
            "ON CAST(t.id AS VARCHAR) = w.want" + between + " ORDER BY 1",
            [ids, lo, hi],
        )
        return _vector_rows(cursor) if as_vector else _fetch(cursor)
    cursor = con.execute(select + between, [lo, hi])
    wanted = set(ids)
    if as_vector:
        return _vector_rows(cursor, wanted)
    return sorted((row for row in _fetch(cursor) if row[0] in wanted), key=itemgetter(0))


def load_memories(
    snapshot_db: Path, system_id: str, refs: Iterable[RowRef] | None = None
) -> Extraction:
    """:func:`read_memories` of a copy opened here."""
    con = open_copy(snapshot_db)
    try:
        return read_memories(con, system_id, refs)
    finally:
        con.close()


def wanted_ids(refs: Iterable[RowRef], skipped: dict[str, str]) -> dict[str, list[str]]:
    """{table: original ids} of the sendable ``refs`` (in their order); the others go to
    ``skipped`` (``memory_id`` -> reason)."""
    wanted: dict[str, list[str]] = {}
    for ref in refs:
        if ref.problem is not None:
            skipped[ref.memory_id] = ref.problem
        else:
            wanted.setdefault(ref.table, []).append(ref.original_id)
    return wanted


def gated_ids(
    con: Any, schema: dict[str, dict[str, str]], gate: str, most: int = MAX_GATED
) -> dict[str, set[str]] | None:
    """{table: the ids of the rows whose text needs a scan for secrets} (``gate``:
    :func:`read_memories`), in one query a table: DuckDB compiles the gate's regex (some
    250 literals) and builds its automaton once, not for every part read (that cost as
    much as running it over the part's texts). None past ``most`` ids (a store of
    non-ASCII texts: every one), which are not all held at once."""
    found: dict[str, set[str]] = {}
    for table in TABLES:
        cols = schema.get(table)
        if cols is None or "id" not in cols or "content" not in cols:
            continue
        cursor = con.execute(
            f"SELECT CAST(t.id AS VARCHAR) FROM {quoted(table)} AS t "
            f"WHERE t.id IS NOT NULL AND {gate_sql(gate)} LIMIT ?",
            [most + 1],
        )
        found[table] = {str(row[0]) for row in _fetch(cursor)}
        most -= len(found[table])
        if most < 0:
            return None
    return found


def read_memories(
    con: Any,
    system_id: str,
    refs: Iterable[RowRef] | None = None,
    *,
    schema: dict[str, dict[str, str]] | None = None,
    gate: str | None = None,
    clean: set[str] | None = None,
    gated: dict[str, set[str]] | None = None,
) -> Extraction:
    """Materialise memories for ``refs`` (default: every row) from the open copy ``con``;
    problem rows are skipped. Rows are fetched a batch at a time.

    ``schema``: :func:`memory_columns` of ``con``, when the caller already has it. With a
    ``gate`` (:attr:`~akoshad.akosha.redact.SecretRedactor.gate`), the ids of the memories
    whose text needs no scan for secrets are added to ``clean``; ``gated`` (with ``clean``):
    :func:`gated_ids` of the gate, asked before (the gate is then not run here)."""
    schema = memory_columns(con) if schema is None else schema
    skipped: dict[str, str] = {}
    wanted = None if refs is None else wanted_ids(refs, skipped)
    memories: list[Memory] = []
    seen: set[str] = set()
    for table, kind in TABLES.items():
        cols = schema.get(table)
        if cols is None or "id" not in cols or "content" not in cols:
            continue
        ids = None if wanted is None else wanted.get(table)
        if wanted is not None and not ids:
            continue
        # rows named by list_rows passed its SQL checks of the vector
        dtype = cols.get("embedding", "")
        checked = refs is not None and bool(FLOAT_LIST_TYPES.fullmatch(dtype))
        # a part's rows (its ids named: a bounded number) of float32 vectors: numpy columns
        as_vector = ids is not None and bool(FLOAT32_LIST_TYPES.fullmatch(dtype))
        scan_sql = "true" if clean is None or gated is not None else gate_sql(gate)
        select = (
            f"SELECT CAST(t.id AS VARCHAR) AS id, CAST(t.content AS VARCHAR) AS content, "
            f"{embedding_sql(cols, as_vector)} AS embedding, {time_sql(cols, table)} AS ts, "
            f"{scan_sql} AS scan FROM {quoted(table)} AS t"
        )
        flagged = None if gated is None else gated.get(table, set())
        rows: Iterable[tuple[Any, ...]]
        if ids is None:
            rows = _fetch(con.execute(select + " WHERE t.id IS NOT NULL ORDER BY 1"))
        else:
            rows = _part_rows(con, select, table, ids, as_vector)
        for original_id, content, emb, ts, scan in rows:
            mid = memory_id(system_id, original_id)
            if mid in seen:
                skipped[mid] = REASON_DUPLICATE_ID
                continue
            seen.add(mid)
            vector = emb if as_vector else parse_embedding(emb, checked)
            found = _memory(system_id, kind, original_id, content, vector, ts)
            if isinstance(found, str):
                skipped[mid] = found
            else:
                memories.append(found)
                if flagged is not None:
                    scan = original_id in flagged
                if not scan and clean is not None:
                    clean.add(mid)
    return Extraction(memories, skipped)


def _memory(
    system_id: str,
    kind: str,
    original_id: str,
    content: str | None,
    vector: RawJSON | list[float] | str,
    ts: str | None,
) -> Memory | str:
    """One row as a memory, or the reason it cannot be sent."""
    if isinstance(vector, str) and not isinstance(vector, RawJSON):  # a reason
        return vector
    if not content or not content.strip():
        return REASON_NO_TEXT
    metadata: dict[str, Any] = {"source": system_id, "original_id": original_id, "type": kind}
    created_at = iso_utc(ts)
    if created_at is not None:
        metadata["created_at"] = created_at
    mid = memory_id(system_id, original_id)
    return {"memory_id": mid, "text": content, "embedding": vector, "metadata": metadata}


def extract_memories(snapshot_db: Path, system_id: str) -> Extraction:
    """All sendable memories of a snapshot copy, and the rows skipped with their reason."""
    refs = list_rows(snapshot_db, system_id)
    return load_memories(snapshot_db, system_id, refs)


def chunks(
    items: Sequence[RowRef], size: int, max_bytes: int | None = None
) -> Iterator[Sequence[RowRef]]:
    """``items`` in slices of at most ``size`` rows and, with ``max_bytes``, of at most that
    many bytes of text (``RowRef.size``; a row larger alone is a slice of its own): a big
    store is loaded a bounded part at a time, also when its memories are large (1,000
    pasted logs of 1 MB would be 1 GB at once in the child and in the daemon)."""
    start, total = 0, 0
    for i, ref in enumerate(items):
        if i > start and (i - start >= size or (max_bytes and total + ref.size > max_bytes)):
            yield items[start:i]
            start, total = i, 0
        total += ref.size
    if start < len(items):
        yield items[start:]
