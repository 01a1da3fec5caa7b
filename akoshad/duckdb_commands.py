"""The DuckDB worker's commands, answered in its child (``python -m akoshad.duckdb_worker``).

:func:`handle` answers one command on a private snapshot copy: ``validate`` (open it
read-only, count every table's rows), ``list`` (the memory rows and why a row cannot be
sent), ``batches`` (the memories of some rows, redacted, in request-sized batches) and
``memories_json`` (``memories.json`` of some rows, written to a file an entry at a time).
The functions also run in process (tests, benchmarks); the parent side that starts the
child and reads its answer is :mod:`akoshad.duckdb_worker`.

Memory: a child opens its copy once, with one thread, no insertion order kept and DuckDB's
buffers bounded by the limit the parent sends (left alone, DuckDB keeps the blocks it read
up to 80 % of RAM: a big store's child grew past 400 MiB), spilling into the directory it
sends. A query reads at most ``READ_ROWS`` rows, fetched a batch at a time; ``memories.json``
is read by ``READERS`` threads, a cursor each, a part each, while it is written. DuckDB running
out of memory anyway is answered as :class:`OutOfMemory`, which the parent retries once.
The long-lived child (:func:`keep_copies`) keeps its last copy open for the next request
on the same copy (:class:`~akoshad.akosha.duckdb_copy.KeptCopy`).
"""

from __future__ import annotations

import re
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from akoshad.akosha.duckdb_copy import DuckDBSetting, KeptCopy, opened
from akoshad.akosha.encoding import Memory, batches, encode_entry
from akoshad.akosha.rows import (
    Extraction,
    RowRef,
    chunks,
    gated_ids,
    iter_refs,
    memory_columns,
    memory_id,
    read_memories,
)
from akoshad.errors import SnapshotError, classify_open_error
from akoshad.heap import trim
from akoshad.manifest.facts import Facts
from akoshad.pyworker import first_line

if TYPE_CHECKING:
    from akoshad.akosha.redact import SecretRedactor

READ_ROWS = 500  # rows one query reads at most (what the parent's memory limit is measured with)
# parts of memories.json read ahead, each in a thread, while this one is encoded: one, as
# a second reader (its own cursor, its own share of the memory limit) cost the child
# 30 MiB of RSS and saved no time in a first sync, where the daemon's packing has the
# other core (bench/first_sync_bench.py --cases store)
READERS = 1
# memories.json is written through a buffer this large: an entry (some 8 KB) at a time
# through the default 8 KiB one made two writes per entry, 113,000 for a store of 56,000
# memories (0.6 of the child's 5.3 CPU-s); the parent cuts its parts from the file as it
# grows, so it sees the file grow a MiB at a time
WRITE_BUFFER = 1 << 20
OUT_OF_MEMORY = "out-of-memory"  # the WorkerError kind of a command DuckDB ran out of memory in
Redactions = dict[str, list[str]]  # memory_id -> the kinds of secret replaced in its text
_HEAD = b'{"conversations":['
# every child's connection, besides the limits the parent sends and DUCKDB_SAFE
_BOUNDED: dict[str, DuckDBSetting] = {"threads": 1, "preserve_insertion_order": False}


_KEPT: KeptCopy | None = None  # the long-lived child's open copy (None: open per request)


def keep_copies() -> KeptCopy:
    """From now on, a copy stays open for the next request on it (the long-lived child)."""
    global _KEPT
    if _KEPT is None:
        _KEPT = KeptCopy()
    return _KEPT


class OutOfMemory(Exception):
    """DuckDB ran out of memory under the child's limit (answered with its ``kind``)."""

    kind = OUT_OF_MEMORY


def _out_of_memory(exc: BaseException) -> bool:
    import duckdb

    return isinstance(exc, duckdb.OutOfMemoryException) or str(exc).startswith(
        "Out of Memory Error"
    )


def bounded_settings(request: dict[str, Any] | None = None) -> dict[str, DuckDBSetting]:
    """A child's connection settings: one thread, no insertion order, and the memory limit
    and spill directory the parent sent (``request["duckdb"]``)."""
    given = (request or {}).get("duckdb") or {}
    settings = dict(_BOUNDED)
    for key in ("memory_limit", "temp_directory"):
        if isinstance(given.get(key), str):
            settings[key] = given[key]
    return settings


def _validate(
    staged_db: Path, settings: dict[str, DuckDBSetting] | None = None
) -> tuple[str | None, Facts | None]:
    """Open the private copy read-only (with its WAL); a note and the row counts."""
    from akoshad.manifest.facts import duckdb_row_counts

    with ExitStack() as stack:
        try:
            con = stack.enter_context(opened(staged_db, settings, _KEPT))
        except Exception as exc:
            if _out_of_memory(exc):
                raise
            return classify_open_error(exc), None
        try:
            facts = duckdb_row_counts(con)
        except Exception as exc:
            if _out_of_memory(exc):
                raise
            raise SnapshotError(f"DuckDB copy is not readable: {exc}") from None
    return None, facts


def _redactor(redact: bool | SecretRedactor | None) -> SecretRedactor | None:
    """None (off: False/None), the redactor of the default rules (True), or the one given."""
    if redact is None or redact is False:
        return None
    from akoshad.akosha.redact import default_redactor

    return default_redactor() if redact is True else redact


def redact_memories(
    memories: list[Memory], redactor: SecretRedactor | None, clean: Iterable[str] = ()
) -> Redactions:
    """Replace every recognised secret in the memories' text (in place); ``memory_id`` ->
    the kinds found. The ids are not touched, so a delivered memory is not sent again.
    The memories of ``clean`` (texts the redactor's gate found nothing to look at in) are
    not scanned."""
    found: Redactions = {}
    if redactor is None:
        return found
    skip = clean if isinstance(clean, set | frozenset) else set(clean)
    for memory in memories:
        if memory["memory_id"] in skip:
            continue
        text, kinds = redactor.redact(memory["text"])
        if kinds:
            memory["text"] = text
            found[memory["memory_id"]] = kinds
    return found


def load_batches_here(
    snapshot_db: Path,
    system_id: str,
    refs: Sequence[RowRef],
    max_items: int,
    max_bytes: int,
    redact: bool | SecretRedactor | None,
    settings: dict[str, DuckDBSetting] | None = None,
) -> tuple[list[list[Memory]], dict[str, str], Redactions]:
    """The memories of ``refs`` (redacted) in send-ready batches, the rows skipped, and the
    redactions made."""
    memories: list[Memory] = []
    skipped: dict[str, str] = {}
    redactor = _redactor(redact)
    clean: set[str] = set()
    gate = None if redactor is None else redactor.gate
    with opened(snapshot_db, settings, _KEPT) as con:
        schema = memory_columns(con)
        for part in chunks(refs, READ_ROWS):
            extraction = read_memories(con, system_id, part, schema=schema, gate=gate, clean=clean)
            memories += extraction.memories
            skipped.update(extraction.skipped)
    found = redact_memories(memories, redactor, clean)
    parts = list(batches(memories, max_items=max_items, max_bytes=max_bytes))
    return parts, skipped, found


def write_memories_json(
    snapshot_db: Path,
    system_id: str,
    refs: Sequence[RowRef],
    chunk: int,
    redact: bool,
    out: Path,
    settings: dict[str, DuckDBSetting] | None = None,
) -> tuple[list[str], Redactions]:
    """Load ``refs`` a chunk at a time (one connection; at most READ_ROWS), redact, and
    write them to ``out`` as one memories.json; the ids it holds and the redactions made."""
    parts = chunks(refs, min(chunk, READ_ROWS))
    left_out, found = _write_memories_json(snapshot_db, system_id, parts, redact, out, settings)
    return [r.memory_id for r in refs if r.memory_id not in left_out], found


def _write_memories_json(
    snapshot_db: Path,
    system_id: str,
    parts: Iterable[Sequence[RowRef]],
    redact: bool,
    out: Path,
    settings: dict[str, DuckDBSetting] | None,
) -> tuple[set[str], Redactions]:
    """memories.json of the rows of ``parts``, a part at a time; the ids left out (a
    problem, no text...) and the redactions made."""
    left_out: set[str] = set()
    found: Redactions = {}
    redactor = _redactor(redact)
    gate = None if redactor is None else redactor.gate
    first = True
    limit = (settings or {}).get("memory_limit")
    with (
        opened(snapshot_db, settings, _KEPT) as con,
        _limit_for_readers(con, limit if isinstance(limit, str) else None),
        out.open("wb", buffering=WRITE_BUFFER) as fh,
    ):
        fh.write(_HEAD)
        schema = memory_columns(con)
        for part, extraction, clean in _read_ahead(con, system_id, parts, schema, gate):
            found.update(redact_memories(extraction.memories, redactor, clean))
            for memory in extraction.memories:  # an entry at a time: no chunk-sized bytes
                if not first:
                    fh.write(b",")
                fh.write(encode_entry(memory))
                first = False
            written = {m["memory_id"] for m in extraction.memories}
            left_out.update(r.memory_id for r in part if r.memory_id not in written)
            del extraction, written
            trim()  # the part's rows and text, freed, go back to the system
        fh.write(b"]}")
    return left_out, found


_SIZE_RE = re.compile(r"\s*(\d+)\s*([KMG])(i?)B\s*", re.IGNORECASE)


def _scaled_limit(limit: str, factor: int) -> str | None:
    """``limit`` (a DuckDB size such as ``32MB``) times ``factor``, in KiB; None when it
    is not such a size."""
    found = _SIZE_RE.fullmatch(limit)
    if found is None:
        return None
    base = 1024 if found.group(3) else 1000
    scale = {"K": 1, "M": 2, "G": 3}[found.group(2).upper()]
    return f"{int(found.group(1)) * base**scale * factor // 1024}KiB"


@contextmanager
def _limit_for_readers(con: Any, limit: str | None) -> Iterator[None]:
    """While ``memories.json`` is read by :data:`READERS` queries at once, DuckDB's memory
    limit is ``limit`` for each of them (each pins its own blocks); ``limit`` again after."""
    raised = None if limit is None or READERS < 2 else _scaled_limit(limit, READERS)
    if raised is None:
        yield
        return
    con.execute(f"SET memory_limit = '{raised}'")
    try:
        yield
    finally:
        con.execute(f"SET memory_limit = '{limit}'")


def _read_ahead(
    con: Any,
    system_id: str,
    parts: Iterable[Sequence[RowRef]],
    schema: dict[str, dict[str, str]],
    gate: str | None,
) -> Iterator[tuple[Sequence[RowRef], Extraction, set[str]]]:
    """Each part, its rows read from ``con`` and the ids whose text needs no scan, in order;
    the next :data:`READERS` parts are read meanwhile, each in a thread with a cursor of
    its own (DuckDB runs a query without the GIL, two at once on two cores, while the
    caller encodes this one): at most ``READERS + 1`` parts' rows are held at once.
    Which texts the ``gate`` sends to a scan is asked first, a query a table (:func:`gated_ids`)."""
    gated = None if gate is None else gated_ids(con, schema, gate)
    local = threading.local()
    cursors: list[Any] = []
    lock = threading.Lock()

    def read(part: Sequence[RowRef]) -> tuple[Sequence[RowRef], Extraction, set[str]]:
        cursor = getattr(local, "cursor", None)
        if cursor is None:
            cursor = local.cursor = con.cursor()
            with lock:
                cursors.append(cursor)
        clean: set[str] = set()
        extraction = read_memories(
            cursor, system_id, part, schema=schema, gate=gate, clean=clean, gated=gated
        )
        return part, extraction, clean

    todo = iter(parts)
    pending: deque[Future[tuple[Sequence[RowRef], Extraction, set[str]]]] = deque()
    try:
        with ThreadPoolExecutor(READERS, thread_name_prefix="duckdb-read") as pool:
            try:
                for part in islice(todo, READERS):
                    pending.append(pool.submit(read, part))
                while pending:
                    done = pending.popleft().result()
                    following = next(todo, None)
                    if following is not None:
                        pending.append(pool.submit(read, following))
                    yield done
                    del done
            finally:
                for future in pending:
                    future.cancel()
    finally:
        for cursor in cursors:
            cursor.close()


def _tables(refs: Iterable[RowRef]) -> dict[str, Any]:
    """``refs`` compactly, for the pipe: per table (in order) its original ids, a code per
    row (0: no problem, else 1 + the index of its reason in ``reasons``: a big store with
    many rows left out names each reason once) and each row's text size."""
    tables: list[tuple[str, list[str], list[int], list[int]]] = []
    codes: dict[str, int] = {}
    for ref in refs:
        if not tables or tables[-1][0] != ref.table:
            tables.append((ref.table, [], [], []))
        tables[-1][1].append(ref.original_id)
        code = 0 if ref.problem is None else codes.setdefault(ref.problem, len(codes) + 1)
        tables[-1][2].append(code)
        tables[-1][3].append(ref.size)
    return {"tables": tables, "reasons": list(codes)}


def _ref_chunks(system_id: str, ids: dict[str, list[str]], size: int) -> Iterator[list[RowRef]]:
    """The rows named by ``{table: original ids}`` as RowRefs, ``size`` at a time (made
    one chunk at a time: a big store's rows are never all objects at once)."""
    for table, originals in ids.items():
        for i in range(0, len(originals), size):
            yield [RowRef(memory_id(system_id, o), table, o) for o in originals[i : i + size]]


def handle(args: list[str], request: Any) -> dict[str, Any]:
    """One command (see the module docstring) and its answer; DuckDB running out of memory
    is answered as :class:`OutOfMemory`."""
    try:
        return _handle(args, request or {})
    except Exception as exc:
        if _out_of_memory(exc):
            raise OutOfMemory(first_line(exc)) from None
        raise


def _handle(args: list[str], request: dict[str, Any]) -> dict[str, Any]:
    command, path, *rest = args
    db = Path(path)
    settings = bounded_settings(request)
    if command == "validate":
        note, facts = _validate(db, settings)
        rows = None if facts is None or facts.rows is None else [list(r) for r in facts.rows]
        return {"note": note, "rows": rows}
    system_id = rest[0]
    if command == "list":
        with opened(db, settings, _KEPT) as con:
            return _tables(iter_refs(con, system_id))
    ids: dict[str, list[str]] = request.pop("ids")
    if command == "batches":
        refs = [RowRef(memory_id(system_id, o), t, o) for t, names in ids.items() for o in names]
        parts, skipped, found = load_batches_here(
            db,
            system_id,
            refs,
            request["max_items"],
            request["max_bytes"],
            request["redact"],
            settings,
        )
        return {"batches": parts, "skipped": skipped, "found": found}
    if command == "memories_json":
        todo = _ref_chunks(system_id, ids, min(request["chunk"], READ_ROWS))
        left_out, found = _write_memories_json(
            db, system_id, todo, request["redact"], Path(rest[1]), settings
        )
        return {"left_out": sorted(left_out), "found": found}
    raise ValueError(f"unknown command {command!r}")
