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
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from akoshad.akosha.rows import (
    DUCKDB_SAFE,
    Memory,
    RawJSON,
    RowRef,
    batches,
    chunks,
    load_memories,
    memories_json,
)
from akoshad.errors import SnapshotError, classify_open_error
from akoshad.manifest.facts import Facts
from akoshad.pyworker import WorkerError, WorkerFailed, run_json, serve

if TYPE_CHECKING:
    from akoshad.akosha.redact import SecretRedactor

WORKER_MODULE = "akoshad.duckdb_worker"
TIMEOUT = 900.0  # seconds one child may take (a big store's memories.json takes a few)
Redactions = dict[str, list[str]]  # memory_id -> the kinds of secret replaced in its text
_HEAD = b'{"conversations":['


# ---- parent side ---------------------------------------------------------------------
def _call(command: str, args: Sequence[str], request: Any) -> dict[str, Any]:
    return run_json(WORKER_MODULE, [command, *args], request, timeout=TIMEOUT)


def validate_copy(staged_db: Path) -> tuple[str | None, Facts | None]:
    """A note ("cannot validate: ..." for a newer storage version) and the row count of
    every table of a private DuckDB copy; SnapshotError when it is corrupt or its check
    crashed or hung."""
    try:
        answer = _call("validate", [str(staged_db)], None)
    except WorkerError as exc:
        raise SnapshotError(str(exc), retry=exc.retry) from None
    except WorkerFailed as exc:
        raise SnapshotError(f"DuckDB copy not validated: {exc}", retry=exc.retry) from None
    rows = answer.get("rows")
    facts = None if rows is None else Facts(rows=tuple((str(k), int(n)) for k, n in rows))
    note = answer.get("note")
    return (None if note is None else str(note)), facts


def list_rows(snapshot_db: Path, system_id: str) -> list[RowRef]:
    """:func:`akoshad.akosha.rows.list_rows`, in a child."""
    answer = _call("list", [str(snapshot_db), system_id], None)
    return [RowRef(*ref) for ref in answer["refs"]]


def load_batches(
    snapshot_db: Path,
    system_id: str,
    refs: Sequence[RowRef],
    max_items: int,
    max_bytes: int,
    redact: bool,
) -> tuple[list[list[Memory]], dict[str, str], Redactions]:
    """:func:`load_batches_here`, in a child."""
    request = {"refs": _refs(refs), "max_items": max_items, "max_bytes": max_bytes}
    request["redact"] = redact
    answer = _call("batches", [str(snapshot_db), system_id], request)
    parts = [[_memory(m) for m in batch] for batch in answer["batches"]]
    return parts, answer["skipped"], answer["found"]


def build_memories_json(
    snapshot_db: Path, system_id: str, refs: Sequence[RowRef], chunk: int, redact: bool
) -> tuple[Path, list[str], Redactions]:
    """:func:`write_memories_json` in a child, into a private file (mode 0600) beside the
    copy: its path (the caller uploads it as a stream and removes it), the ids it holds and
    the redactions made. Never held whole in memory: a large store's file is hundreds of MiB."""
    fd, name = tempfile.mkstemp(prefix=".memories-", suffix=".json", dir=snapshot_db.parent)
    os.close(fd)
    try:
        request = {"refs": _refs(refs), "chunk": chunk, "redact": redact}
        answer = _call("memories_json", [str(snapshot_db), system_id, name], request)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name), answer["ids"], answer["found"]


def _refs(refs: Sequence[RowRef]) -> list[list[str | None]]:
    return [[r.memory_id, r.table, r.original_id, r.problem] for r in refs]


def _memory(raw: Memory) -> Memory:
    """A memory as the child sent it: an embedding that came as a string is RawJSON."""
    if isinstance(raw.get("embedding"), str):
        raw["embedding"] = RawJSON(raw["embedding"])
    return raw


# ---- child side (also usable in process) -----------------------------------------------
def _validate(staged_db: Path) -> tuple[str | None, Facts | None]:
    """Open the private copy read-only (with its WAL); a note and the row counts."""
    import duckdb

    from akoshad.manifest.facts import duckdb_row_counts

    try:
        con = duckdb.connect(str(staged_db), read_only=True, config=dict(DUCKDB_SAFE))
    except Exception as exc:
        return classify_open_error(exc), None
    try:
        facts = duckdb_row_counts(con)
    except Exception as exc:
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
) -> tuple[list[list[Memory]], dict[str, str], Redactions]:
    """The memories of ``refs`` (redacted) in send-ready batches, the rows skipped, and the
    redactions made."""
    extraction = load_memories(snapshot_db, system_id, refs)
    found = redact_memories(extraction.memories, _redactor(redact))
    parts = list(batches(extraction.memories, max_items=max_items, max_bytes=max_bytes))
    return parts, extraction.skipped, found


def write_memories_json(
    snapshot_db: Path, system_id: str, refs: Sequence[RowRef], chunk: int, redact: bool, out: Path
) -> tuple[list[str], Redactions]:
    """Load ``refs`` a chunk at a time, redact, and write them to ``out`` as one
    memories.json; the ids it holds and the redactions made."""
    ids: list[str] = []
    found: Redactions = {}
    redactor = _redactor(redact)
    with out.open("wb") as fh:
        fh.write(_HEAD)
        for part in chunks(refs, chunk):
            extraction = load_memories(snapshot_db, system_id, part)
            found.update(redact_memories(extraction.memories, redactor))
            if extraction.memories:
                body = memories_json(extraction.memories)[len(_HEAD) : -len(b"]}")]
                fh.write(b"," + body if ids else body)
                ids.extend(m["memory_id"] for m in extraction.memories)
        fh.write(b"]}")
    return ids, found


def handle(args: list[str], request: Any) -> dict[str, Any]:
    """One command (see the module docstring) and its answer."""
    command, path, *rest = args
    db = Path(path)
    if command == "validate":
        note, facts = _validate(db)
        rows = None if facts is None or facts.rows is None else [list(r) for r in facts.rows]
        return {"note": note, "rows": rows}
    system_id = rest[0]
    if command == "list":
        from akoshad.akosha.rows import list_rows as list_here

        return {"refs": _refs(list_here(db, system_id))}
    refs = [RowRef(*ref) for ref in request["refs"]]
    if command == "batches":
        parts, skipped, found = load_batches_here(
            db, system_id, refs, request["max_items"], request["max_bytes"], request["redact"]
        )
        return {"batches": parts, "skipped": skipped, "found": found}
    if command == "memories_json":
        ids, found = write_memories_json(
            db, system_id, refs, request["chunk"], request["redact"], Path(rest[1])
        )
        return {"ids": ids, "found": found}
    raise ValueError(f"unknown command {command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m akoshad.duckdb_worker COMMAND DB [SYSTEM_ID [OUT]] < request.json``."""
    return serve(handle, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
