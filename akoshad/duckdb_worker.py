"""The daemon's DuckDB work, done in a short-lived child process (:mod:`akoshad.pyworker`).

DuckDB costs the process that loads it about 40 MiB of resident memory, and a hostile
database file may crash it. The daemon never imports it: validating a snapshot copy and
reading memories from one run in a child, ``python -m akoshad.duckdb_worker COMMAND ...``,
that answers one JSON object. The functions below (parent side, blocking: call them from a
worker thread) run one child each:

* :func:`validate_copy`: open the private copy read-only, count every table's rows.
* :func:`list_rows`: the memory rows and why a row cannot be sent.
* :func:`load_batches`: the memories of some rows, redacted, in request-sized batches.
* :func:`build_memories_json`: ``memories.json`` of some rows, written by the child into a
  private file beside the copy (so it is encoded one chunk at a time), then read back.

What crosses the pipe is JSON; an embedding kept as DuckDB's text (:class:`RawJSON`) crosses
as a string and becomes a RawJSON again, so what is sent is byte for byte what an in-process
encoding gives. A crash or a hang (killed after ``TIMEOUT``) is a clear error for that file.

Memory: a child opens its copy once, with one thread, no insertion order kept and DuckDB's
buffers bounded by ``MEMORY_LIMIT`` (left alone, DuckDB keeps the blocks it read up to 80 %
of RAM: a big store's child grew past 400 MiB). Past the limit DuckDB spills to a private
directory (mode 0700) beside the copy, made for the child and removed after it (a crash
leaves it in the staging directory, emptied at the next start). Rows are fetched a batch at
a time. Should DuckDB still run out of memory under the limit, the command is run once more
under ``RETRY_MEMORY_LIMIT`` and a line is logged: a big store is never an error for it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from akoshad.akosha.rows import (
    DuckDBSetting,
    Memory,
    RawJSON,
    RowRef,
    batches,
    chunks,
    conversation_entry,
    encode_json,
    iter_refs,
    memory_id,
    open_copy,
    read_memories,
    wanted_ids,
)
from akoshad.errors import SnapshotError, classify_open_error
from akoshad.heap import trim
from akoshad.manifest.facts import Facts
from akoshad.pyworker import WorkerError, WorkerFailed, first_line, run_json, serve

if TYPE_CHECKING:
    from akoshad.akosha.redact import SecretRedactor

WORKER_MODULE = "akoshad.duckdb_worker"
TIMEOUT = 900.0  # seconds one child may take (a big store's memories.json takes a few)
MEMORY_LIMIT = "32MB"  # DuckDB's buffers in a child; past it, it spills to its temp directory
READ_ROWS = 500  # rows one query of a child reads at most (what MEMORY_LIMIT is measured with)
# the one retry of a command that ran out of memory anyway: DuckDB's own default (80 % of
# RAM), what every command had before the limit
RETRY_MEMORY_LIMIT: str | None = None
TEMP_PREFIX = ".duckdb-tmp-"  # the child's private spill directory, beside the copy
OUT_OF_MEMORY = "out-of-memory"  # the WorkerError kind of a command DuckDB ran out of memory in
Redactions = dict[str, list[str]]  # memory_id -> the kinds of secret replaced in its text
_HEAD = b'{"conversations":['
# every child's connection, besides the limits the parent sends and DUCKDB_SAFE
_BOUNDED: dict[str, DuckDBSetting] = {"threads": 1, "preserve_insertion_order": False}


# ---- parent side ---------------------------------------------------------------------
@contextmanager
def spill_dir(beside: Path) -> Iterator[Path]:
    """A new private directory (mode 0700) in ``beside`` for DuckDB to spill into, removed
    with what it holds on the way out."""
    path = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=beside))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _call(command: str, db: Path, args: Sequence[str], request: dict[str, Any]) -> dict[str, Any]:
    """Run ``command`` on ``db`` in a child bounded by MEMORY_LIMIT, spilling into a private
    directory beside ``db``; once more under RETRY_MEMORY_LIMIT if DuckDB ran out of memory."""
    with spill_dir(db.parent) as temp:
        argv = [command, str(db), *args]
        try:
            return run_json(
                WORKER_MODULE, argv, _with_limit(request, MEMORY_LIMIT, temp), timeout=TIMEOUT
            )
        except WorkerError as exc:
            if exc.kind != OUT_OF_MEMORY:
                raise
            logger.warning(
                "DuckDB ran out of memory under {} reading {} ({}); trying once more under {}",
                MEMORY_LIMIT,
                db.name,
                exc,
                RETRY_MEMORY_LIMIT or "its default limit",
            )
        request = _with_limit(request, RETRY_MEMORY_LIMIT, temp)
        return run_json(WORKER_MODULE, argv, request, timeout=TIMEOUT)


def _with_limit(request: dict[str, Any], limit: str | None, temp: Path) -> dict[str, Any]:
    settings: dict[str, str] = {"temp_directory": str(temp)}
    if limit is not None:
        settings["memory_limit"] = limit
    return {**request, "duckdb": settings}


def validate_copy(staged_db: Path) -> tuple[str | None, Facts | None]:
    """A note ("cannot validate: ..." for a newer storage version) and the row count of
    every table of a private DuckDB copy; SnapshotError when it is corrupt or its check
    crashed or hung."""
    try:
        answer = _call("validate", staged_db, [], {})
    except WorkerError as exc:
        raise SnapshotError(str(exc), retry=exc.retry) from None
    except WorkerFailed as exc:
        raise SnapshotError(f"DuckDB copy not validated: {exc}", retry=exc.retry) from None
    except OSError as exc:  # no room for its spill directory
        raise SnapshotError(f"DuckDB copy not validated: {exc}", retry=True) from None
    rows = answer.get("rows")
    facts = None if rows is None else Facts(rows=tuple((str(k), int(n)) for k, n in rows))
    note = answer.get("note")
    return (None if note is None else str(note)), facts


def list_rows(snapshot_db: Path, system_id: str) -> list[RowRef]:
    """:func:`akoshad.akosha.rows.list_rows`, in a child."""
    answer = _call("list", snapshot_db, [system_id], {})
    reasons: list[str | None] = [None, *answer["reasons"]]
    refs: list[RowRef] = []
    for table, originals, codes in answer["tables"]:
        for original, code in zip(originals, codes, strict=True):
            refs.append(RowRef(memory_id(system_id, original), table, original, reasons[code]))
        originals.clear()  # each table's ids are let go as soon as they are RowRefs
    return refs


def _tables(refs: Iterable[RowRef]) -> dict[str, Any]:
    """``refs`` compactly, for the pipe: per table (in order) its original ids and a code
    per row (0: no problem, else 1 + the index of its reason in ``reasons``: a big store
    with many rows left out names each reason once)."""
    tables: list[tuple[str, list[str], list[int]]] = []
    codes: dict[str, int] = {}
    for ref in refs:
        if not tables or tables[-1][0] != ref.table:
            tables.append((ref.table, [], []))
        tables[-1][1].append(ref.original_id)
        code = 0 if ref.problem is None else codes.setdefault(ref.problem, len(codes) + 1)
        tables[-1][2].append(code)
    return {"tables": tables, "reasons": list(codes)}


def load_batches(
    snapshot_db: Path,
    system_id: str,
    refs: Sequence[RowRef],
    max_items: int,
    max_bytes: int,
    redact: bool,
) -> tuple[list[list[Memory]], dict[str, str], Redactions]:
    """:func:`load_batches_here`, in a child."""
    skipped: dict[str, str] = {}
    request = {"ids": wanted_ids(refs, skipped), "max_items": max_items, "max_bytes": max_bytes}
    request["redact"] = redact
    answer = _call("batches", snapshot_db, [system_id], request)
    parts = [[_memory(m) for m in batch] for batch in answer["batches"]]
    return parts, {**skipped, **answer["skipped"]}, answer["found"]


def build_memories_json(
    snapshot_db: Path, system_id: str, refs: Sequence[RowRef], chunk: int, redact: bool
) -> tuple[Path, list[str], Redactions]:
    """:func:`write_memories_json` in a child, into a private file (mode 0600) beside the
    copy: its path (the caller uploads it as a stream and removes it), the ids it holds and
    the redactions made. Never held whole in memory: a large store's file is hundreds of MiB.
    Rows with a problem are left out."""
    fd, name = tempfile.mkstemp(prefix=".memories-", suffix=".json", dir=snapshot_db.parent)
    os.close(fd)
    try:
        request = {"ids": wanted_ids(refs, {}), "chunk": chunk, "redact": redact}
        answer = _call("memories_json", snapshot_db, [system_id, name], request)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    # the child names the rows it left out: the ids written are the caller's own strings
    left_out = set(answer["left_out"])
    ids = [r.memory_id for r in refs if r.problem is None and r.memory_id not in left_out]
    return Path(name), ids, answer["found"]


def _memory(raw: Memory) -> Memory:
    """A memory as the child sent it: an embedding that came as a string is RawJSON."""
    if isinstance(raw.get("embedding"), str):
        raw["embedding"] = RawJSON(raw["embedding"])
    return raw


# ---- child side (also usable in process) -----------------------------------------------
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

    try:
        con = open_copy(staged_db, settings)
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
    finally:
        con.close()
    return None, facts


def _redactor(redact: bool | SecretRedactor | None) -> SecretRedactor | None:
    """None (off: False/None), a redactor of the default rules (True), or the one given."""
    if redact is None or redact is False:
        return None
    from akoshad.akosha.redact import SecretRedactor

    return SecretRedactor() if redact is True else redact


def redact_memories(memories: list[Memory], redactor: SecretRedactor | None) -> Redactions:
    """Replace every recognised secret in the memories' text (in place); ``memory_id`` ->
    the kinds found. The ids are not touched, so a delivered memory is not sent again."""
    found: Redactions = {}
    if redactor is None:
        return found
    for memory in memories:
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
    con = open_copy(snapshot_db, settings)
    try:
        for part in chunks(refs, READ_ROWS):
            extraction = read_memories(con, system_id, part)
            memories += extraction.memories
            skipped.update(extraction.skipped)
    finally:
        con.close()
    found = redact_memories(memories, _redactor(redact))
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
    first = True
    con = open_copy(snapshot_db, settings)
    try:
        with out.open("wb") as fh:
            fh.write(_HEAD)
            for part in parts:
                extraction = read_memories(con, system_id, part)
                found.update(redact_memories(extraction.memories, redactor))
                for memory in extraction.memories:  # an entry at a time: no chunk-sized bytes
                    if not first:
                        fh.write(b",")
                    fh.write(encode_json(conversation_entry(memory)))
                    first = False
                written = {m["memory_id"] for m in extraction.memories}
                left_out.update(r.memory_id for r in part if r.memory_id not in written)
                del extraction, written
                trim()  # the part's rows and text, freed, go back to the system
            fh.write(b"]}")
    finally:
        con.close()
    return left_out, found


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
        con = open_copy(db, settings)
        try:
            return _tables(iter_refs(con, system_id))
        finally:
            con.close()
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m akoshad.duckdb_worker COMMAND DB [SYSTEM_ID [OUT]] < request.json``."""
    return serve(handle, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
