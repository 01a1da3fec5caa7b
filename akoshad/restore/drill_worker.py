"""The engine checks of a restore drill, run in a short-lived child process.

``python -m akoshad.restore.drill_worker ROOT`` reads ``{"files": [{path, kind, rows, json_ok}]}``
on stdin (paths relative to ROOT, a drill's private restore) and answers one JSON object
per line on stdout: ``{"checking": path}`` before each file, then
``{"path", "problems", "notes"}`` after it. A native crash on a hostile database ends only
this process (the parent sees which file it was on), and DuckDB's memory goes back to the
system when it exits.

* DuckDB (with its WAL beside it): opened read-only, every column of every table read
  through an aggregate (a corrupted data block fails there even when ``count(*)`` works),
  row counts compared with those recorded at capture.
* SQLite: ``PRAGMA integrity_check``.
* JSON that parsed at capture: parsed again.
"""

from __future__ import annotations

import io
import json
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

from akoshad.akosha.duckdb_copy import DUCKDB_SAFE
from akoshad.errors import NEWER_DUCKDB_STORAGE
from akoshad.manifest.facts import duckdb_tables, quote_ident, table_label
from akoshad.pyworker import answer_channel
from akoshad.pyworker import first_line as _first_line

MAX_PROBLEMS_PER_FILE = 50
MAX_LINE = 400
SQLITE_LINES = 5
DUCKDB_CONFIG: dict[str, str | bool | int | float | list[str]] = {
    "threads": 1,  # beside the pipeline, on a small machine
    "memory_limit": "512MB",
    **DUCKDB_SAFE,  # a hostile file cannot make it read or fetch more
}

Spec = Mapping[str, Any]


def _columns(con: Any, schema: str, table: str) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = ? AND table_name = ? ORDER BY column_index",
        [schema, table],
    ).fetchall()
    return [str(r[0]) for r in rows]


def count_rows(con: Any, schema: str, table: str) -> int:
    """``count(*)`` of a table (DuckDB answers it from row group metadata)."""
    row = con.execute(f"SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(table)}")
    return int(row.fetchone()[0])


def read_columns(con: Any, schema: str, table: str) -> None:
    """Read every value of every column through an aggregate of its hash: a corrupted data
    block fails here (its checksum), where a row count does not read it."""
    columns = _columns(con, schema, table)
    if columns:
        aggregates = ", ".join(f"bit_xor(hash({quote_ident(c)}))" for c in columns)
        con.execute(
            f"SELECT {aggregates} FROM {quote_ident(schema)}.{quote_ident(table)}"
        ).fetchall()


def _compare_rows(rel: str, expected: Mapping[str, int], found: Mapping[str, int]) -> list[str]:
    problems: list[str] = []
    for label in sorted(expected.keys() | found.keys()):
        want, got = expected.get(label), found.get(label)
        if want is None:
            problems.append(f"{rel}: table {label} was not there at capture")
        elif got is None:
            problems.append(f"{rel}: table {label} is missing ({want} row(s) at capture)")
        elif want != got:
            problems.append(f"{rel}: table {label} has {got} row(s), {want} at capture")
    return problems


def check_duckdb(
    path: Path, rel: str, expected: Mapping[str, int] | None
) -> tuple[list[str], list[str]]:
    """(problems, notes) of one restored DuckDB file."""
    import duckdb

    try:
        con = duckdb.connect(str(path), read_only=True, config=DUCKDB_CONFIG)
    except Exception as exc:
        message = _first_line(exc)
        if NEWER_DUCKDB_STORAGE.search(message):
            return [], [f"{rel}: cannot check with this duckdb: {message}"]
        return [f"{rel}: does not open with duckdb: {message}"], []
    problems: list[str] = []
    found: dict[str, int] = {}
    uncounted: set[str] = set()
    try:
        for schema, table in duckdb_tables(con):
            label = table_label(schema, table)
            try:
                found[label] = count_rows(con, schema, table)
                read_columns(con, schema, table)
            except Exception as exc:
                if label not in found:
                    uncounted.add(label)
                problems.append(f"{rel}: table {label} cannot be read: {_first_line(exc)}")
    except Exception as exc:
        problems.append(f"{rel}: its catalog cannot be read: {_first_line(exc)}")
        return problems, []
    finally:
        con.close()
    if expected is not None:
        counted = {k: v for k, v in expected.items() if k not in uncounted}
        problems.extend(_compare_rows(rel, counted, found))
    return problems, []


def check_sqlite(path: Path, rel: str) -> list[str]:
    """Problems of one restored SQLite file (``PRAGMA integrity_check``)."""
    uri = f"file:{quote(str(path.absolute()))}?mode=ro&immutable=1"
    try:
        con = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        return [f"{rel}: does not open with sqlite: {_first_line(exc)}"]
    try:
        con.execute("PRAGMA trusted_schema = OFF")
        rows = con.execute("PRAGMA integrity_check(20)").fetchall()
    except sqlite3.Error as exc:
        return [f"{rel}: integrity_check failed: {_first_line(exc)}"]
    finally:
        con.close()
    messages = [str(r[0]) for r in rows]
    if messages == ["ok"]:
        return []
    lines = [
        line.strip()
        for message in messages
        for line in message.splitlines()
        if line.strip() and not line.startswith("***")
    ]
    shown = [f"{rel}: integrity_check: {line[:MAX_LINE]}" for line in lines[:SQLITE_LINES]]
    if len(lines) > SQLITE_LINES:
        shown.append(f"{rel}: integrity_check: ... and {len(lines) - SQLITE_LINES} more")
    return shown


def check_json(path: Path, rel: str) -> list[str]:
    """Problems of one restored JSON file that parsed at capture."""
    try:
        json.loads(path.read_bytes())
    except (ValueError, RecursionError) as exc:
        return [f"{rel}: does not parse as JSON (it did at capture): {_first_line(exc)}"]
    return []


def check_file(root: Path, spec: Spec) -> tuple[list[str], list[str]]:
    """(problems, notes) of the file ``spec`` describes, restored under ``root``."""
    rel = str(spec["path"])
    path = root / rel
    kind = spec.get("kind")
    if kind == "duckdb":
        rows = spec.get("rows")
        return check_duckdb(path, rel, rows if isinstance(rows, dict) else None)
    if kind == "sqlite":
        return check_sqlite(path, rel), []
    if spec.get("json_ok") is True:
        return check_json(path, rel), []
    return [], []


def run(root: Path, specs: Sequence[Spec], out: TextIO) -> None:
    """Check every file, announcing each before it starts (see the module docstring)."""
    for spec in specs:
        rel = str(spec["path"])
        out.write(json.dumps({"checking": rel}) + "\n")
        out.flush()
        try:
            problems, notes = check_file(root, spec)
        except Exception as exc:  # a checker's own failure is a finding, not a crash
            problems, notes = [f"{rel}: check failed: {_first_line(exc)}"], []
        if len(problems) > MAX_PROBLEMS_PER_FILE:
            more = len(problems) - MAX_PROBLEMS_PER_FILE
            problems = [*problems[:MAX_PROBLEMS_PER_FILE], f"{rel}: ... and {more} more"]
        out.write(json.dumps({"path": rel, "problems": problems, "notes": notes}) + "\n")
        out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m akoshad.restore.drill_worker ROOT < spec.json", file=sys.stderr)
        return 2
    out = io.TextIOWrapper(answer_channel(), encoding="utf-8")
    request = json.loads(sys.stdin.read())
    run(Path(args[0]), list(request["files"]), out)
    out.flush()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
