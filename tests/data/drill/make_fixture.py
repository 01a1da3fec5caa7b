"""Builds tests/data/drill/outbox: one upload whose every object matches its manifest
(size and SHA-256) but whose databases are damaged, as a drill must find out.

    python tests/data/drill/make_fixture.py   (from the repository root)

* ``reflection.duckdb``: opens, but a data block of ``conversations_v2`` is corrupted (its
  row count still answers); the manifest records row counts for ``reflections_v2`` that
  disagree with the file (``rows`` as a capture would have recorded them).
* ``knowledge_graph.duckdb``: its first block is corrupted: it no longer opens.
* ``activity.db``: SQLite with a damaged b-tree page (``PRAGMA integrity_check`` fails).
* ``sessions/s1/state.json``: recorded as parsed at capture (``json_ok``), now truncated.
* ``akosha_sync_state.json`` and ``natural_scheduler.db``: intact (no problem expected).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import sqlite3
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import duckdb

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from akoshad.manifest.facts import Facts  # noqa: E402
from akoshad.manifest.layout import FileEntry, build_manifest, encode_manifest, upload_prefix  # noqa: E402

SYSTEM_ID = "drillfixture"
UPLOAD_ID = "20250101T000000000000Z-f1x7ur"
BLOCK = 262144
HEADER = 3 * 4096
RECORDED_REFLECTIONS = 40  # the file holds 30


def _flip(path: Path, offset: int, n: int = 16) -> None:
    with path.open("r+b") as fh:
        fh.seek(offset)
        data = fh.read(n)
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in data))


def _reads(path: Path) -> tuple[bool, bool, bool]:
    """(opens and counts, conversations readable, reflections readable)."""
    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error:
        return False, False, False
    try:
        con.execute("SELECT count(*) FROM conversations_v2").fetchall()
        con.execute("SELECT count(*) FROM reflections_v2").fetchall()
    except duckdb.Error:
        con.close()
        return False, False, False
    results = []
    for table in ("conversations_v2", "reflections_v2"):
        try:
            con.execute(f"SELECT bit_xor(hash(id)), bit_xor(hash(content)) FROM {table}").fetchall()
            results.append(True)
        except duckdb.Error:
            results.append(False)
    con.close()
    return True, results[0], results[1]


def make_reflection(work: Path) -> Path:
    """A DuckDB file with one corrupted data block of conversations_v2."""
    clean = work / "clean.duckdb"
    con = duckdb.connect(str(clean))
    con.execute("CREATE TABLE conversations_v2 (id INTEGER, content VARCHAR)")
    con.execute(
        "INSERT INTO conversations_v2 SELECT i, 'conversation ' || i || repeat(' lorem', 20) "
        "FROM range(20000) r(i)"
    )
    con.execute("CREATE TABLE reflections_v2 (id INTEGER, content VARCHAR)")
    con.execute("INSERT INTO reflections_v2 SELECT i, 'reflection ' || i FROM range(30) r(i)")
    con.close()
    blocks = (clean.stat().st_size - HEADER) // BLOCK
    for block in range(1, blocks):
        candidate = work / "reflection.duckdb"
        shutil.copyfile(clean, candidate)
        _flip(candidate, HEADER + block * BLOCK + 4096)
        if _reads(candidate) == (True, False, True):
            return candidate
    raise SystemExit("no data block of conversations_v2 found to corrupt")


def make_kg(work: Path) -> Path:
    path = work / "knowledge_graph.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE kg_entities AS SELECT i AS id, 'entity ' || i AS name FROM range(50) r(i)"
    )
    con.close()
    _flip(path, HEADER + 64)
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.Error:
        return path
    raise SystemExit("the corrupted knowledge graph still opens")


def make_sqlite(path: Path, rows: int, damage: bool) -> Path:
    con = sqlite3.connect(path)
    con.execute("PRAGMA page_size = 4096")
    con.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, what TEXT)")
    con.execute("CREATE INDEX events_what ON events(what)")
    con.executemany(
        "INSERT INTO events (what) VALUES (?)", [(f"event {i:05d}",) for i in range(rows)]
    )
    con.commit()
    con.close()
    if damage:
        _flip(path, 3 * 4096 + 200, 64)  # inside a b-tree page, past its header
        con = sqlite3.connect(path)
        try:
            result = con.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError:
            result = [("malformed",)]
        con.close()
        if result == [("ok",)]:
            raise SystemExit("the damaged SQLite file still passes integrity_check")
    return path


def store(outbox: Path, path: str, data: bytes, kind: str, facts: Facts | None) -> FileEntry:
    """Write one gzip object (what the local target stores) and describe it."""
    name = path.replace("/", "__") + ".gz"
    key = upload_prefix(SYSTEM_ID, UPLOAD_ID) + name
    stored = gzip.compress(data, compresslevel=9, mtime=0)
    dest = outbox / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(stored)
    return FileEntry(
        path=path,
        name=name,
        key=key,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        stored_size=len(stored),
        compression="gzip",
        kind=kind,
        facts=facts,
    )


def main() -> None:
    outbox = HERE / "outbox"
    shutil.rmtree(outbox, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        recorded = Facts(
            rows=(("conversations_v2", 20000), ("reflections_v2", RECORDED_REFLECTIONS))
        )
        entries = [
            store(
                outbox, "reflection.duckdb", make_reflection(work).read_bytes(), "duckdb", recorded
            ),
            store(
                outbox,
                "knowledge_graph.duckdb",
                make_kg(work).read_bytes(),
                "duckdb",
                Facts(rows=(("kg_entities", 50),)),
            ),
            store(
                outbox,
                "activity.db",
                make_sqlite(work / "a.db", 600, True).read_bytes(),
                "sqlite",
                None,
            ),
            store(
                outbox,
                "natural_scheduler.db",
                make_sqlite(work / "n.db", 20, False).read_bytes(),
                "sqlite",
                None,
            ),
            store(
                outbox,
                "sessions/s1/state.json",
                b'{"id": 1, "notes": ["x"',
                "file",
                Facts(json_ok=True),
            ),
            store(
                outbox,
                "akosha_sync_state.json",
                b'{"last_sync": null}',
                "file",
                Facts(json_ok=True),
            ),
        ]
    manifest = build_manifest(
        system_id=SYSTEM_ID,
        upload_id=UPLOAD_ID,
        entries=entries,
        skipped={},
        uploaded_at=datetime(2025, 1, 1, tzinfo=UTC),
    )
    manifest["metadata"]["akoshad_version"] = "fixture"
    key = upload_prefix(SYSTEM_ID, UPLOAD_ID) + "manifest.json"
    (outbox / key).write_bytes(encode_manifest(manifest))
    sizes = sum(p.stat().st_size for p in outbox.rglob("*") if p.is_file())
    print(json.dumps({"upload_id": UPLOAD_ID, "files": len(entries), "bytes": sizes}))


if __name__ == "__main__":
    main()
