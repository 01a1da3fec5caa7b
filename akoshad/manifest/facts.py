"""What a capture established about a file, recorded in its manifest entry for drills.

* DuckDB: the row count of every table (``rows: {table: n}``), read from the private copy
  the snapshot step opens anyway to validate it.
* JSON: whether the captured bytes parsed (``json_ok``). session-buddy writes its JSON in
  place, so a capture may catch a torn file; a drill only insists on files that parsed.

A drill compares what it restores with these facts. Manifests without them (older
akoshad, an in-place capture) are checked without the comparison.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A store's JSON files are small; larger ones are not parsed at capture (nor in a drill).
JSON_PARSE_MAX_BYTES = 64 * 1024 * 1024
# Bounds what a manifest from a target can make a reader keep.
MAX_TABLES = 10_000


@dataclass(frozen=True)
class Facts:
    """Capture facts of one file (hashable: it travels in frozen entries)."""

    rows: tuple[tuple[str, int], ...] | None = None
    json_ok: bool | None = None

    def as_fields(self) -> dict[str, Any]:
        """The manifest entry's optional fields (``rows``, ``json_ok``)."""
        out: dict[str, Any] = {}
        if self.rows is not None:
            out["rows"] = dict(self.rows)
        if self.json_ok is not None:
            out["json_ok"] = self.json_ok
        return out

    def to_json(self) -> str:
        """Compact JSON of ``as_fields`` (the ledger's ``facts`` column; the same few facts
        of thousands of files are spelt once)."""
        return _facts_json(self)

    @classmethod
    def from_fields(cls, raw: Mapping[str, Any]) -> Facts | None:
        """The facts in a manifest entry (or ledger column); None when there are none.
        Malformed values (a hostile or damaged manifest) are left out, never trusted."""
        rows = raw.get("rows")
        json_ok = raw.get("json_ok")
        counts: tuple[tuple[str, int], ...] | None = None
        if isinstance(rows, dict) and len(rows) <= MAX_TABLES:
            items = [
                (k, v)
                for k, v in rows.items()
                if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            ]
            if len(items) == len(rows):
                counts = tuple(sorted(items))
        ok = json_ok if isinstance(json_ok, bool) else None
        if counts is None and ok is None:
            return None
        return cls(rows=counts, json_ok=ok)

    @classmethod
    def from_json(cls, text: str | None) -> Facts | None:
        """Inverse of ``to_json``; None for None or anything unreadable. The facts of one
        text are one shared (frozen) object: a manifest of 100,000 files made from the
        ledger held 100,000 equal ``Facts`` (9 MB)."""
        return _facts_of_json(text) if text else None


def quote_ident(name: str) -> str:
    """A SQL identifier in double quotes (``"`` doubled)."""
    return '"' + name.replace('"', '""') + '"'


def table_label(schema: str, table: str) -> str:
    """``table`` in the main schema, else ``schema.table``: the key of ``rows``."""
    return table if schema == "main" else f"{schema}.{table}"


def duckdb_tables(con: Any) -> list[tuple[str, str]]:
    """(schema, table) of the user tables of the open database ``con``."""
    rows = con.execute(
        "SELECT schema_name, table_name FROM duckdb_tables() "
        "WHERE database_name = current_database() AND NOT internal AND NOT temporary "
        "ORDER BY schema_name, table_name"
    ).fetchall()
    return [(str(s), str(t)) for s, t in rows]


def duckdb_row_counts(con: Any) -> Facts | None:
    """Row counts of every table of the open database ``con`` (None beyond MAX_TABLES)."""
    tables = duckdb_tables(con)
    if len(tables) > MAX_TABLES:
        return None
    counts = []
    for schema, table in tables:
        n = con.execute(f"SELECT count(*) FROM {quote_ident(schema)}.{quote_ident(table)}")
        counts.append((table_label(schema, table), int(n.fetchone()[0])))
    return Facts(rows=tuple(sorted(counts)))


def json_facts(rel: str, staged: Path) -> Facts | None:
    """For a ``*.json`` store file: whether its captured copy parses; else None."""
    if not rel.lower().endswith(".json"):
        return None
    try:
        if staged.stat().st_size > JSON_PARSE_MAX_BYTES:
            return None
        data = staged.read_bytes()
    except OSError:
        return None
    return json_facts_of(rel, data)


def json_facts_of(rel: str, data: bytes) -> Facts | None:
    """For a ``*.json`` store file: whether its captured bytes parse; else None."""
    if not rel.lower().endswith(".json") or len(data) > JSON_PARSE_MAX_BYTES:
        return None
    try:
        json.loads(data)
    except (ValueError, RecursionError):  # also UnicodeDecodeError, absurd nesting
        return Facts(json_ok=False)
    return Facts(json_ok=True)


@functools.lru_cache(maxsize=256)
def _facts_json(facts: Facts) -> str:
    return json.dumps(facts.as_fields(), sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=1024)
def _facts_of_json(text: str) -> Facts | None:
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    return Facts.from_fields(raw) if isinstance(raw, dict) else None
