"""Builds small session-buddy-like stores for tests, and a live DuckDB writer process."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import duckdb

EMBED_DIM = 384
WRITER = Path(__file__).with_name("live_writer.py")


def _embedding(rng: random.Random) -> list[float]:
    return [rng.uniform(-1, 1) for _ in range(EMBED_DIM)]


def make_reflection(
    path: Path, conversations: int = 20, reflections: int = 5, seed: int = 1
) -> None:
    rng = random.Random(seed)
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE IF NOT EXISTS conversations_v2 (id TEXT PRIMARY KEY, content TEXT NOT NULL,"
        " embedding FLOAT[384], category TEXT NOT NULL, project TEXT,"
        " timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP, metadata VARCHAR)"
    )
    con.execute(
        "CREATE TABLE IF NOT EXISTS reflections_v2 (id TEXT PRIMARY KEY, content TEXT NOT NULL,"
        " embedding FLOAT[384], category TEXT NOT NULL, tags TEXT[],"
        " timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP)"
    )
    for i in range(conversations):
        con.execute(
            "INSERT INTO conversations_v2 (id, content, embedding, category, project) "
            "VALUES (?, ?, ?, 'context', 'demo')",
            [
                f"conv-{seed}-{i}",
                f"conversation {i} " + "lorem ipsum " * rng.randint(5, 40),
                _embedding(rng),
            ],
        )
    for i in range(reflections):
        con.execute(
            "INSERT INTO reflections_v2 (id, content, embedding, category, tags) "
            "VALUES (?, ?, ?, 'insight', ['a','b'])",
            [f"refl-{seed}-{i}", f"reflection {i}", _embedding(rng)],
        )
    con.close()


def make_kg(path: Path, entities: int = 30) -> None:
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE kg_entities (id TEXT PRIMARY KEY, name TEXT, entity_type TEXT)")
    con.execute("CREATE TABLE kg_relationships (id TEXT, src TEXT, dst TEXT, kind TEXT)")
    for i in range(entities):
        con.execute("INSERT INTO kg_entities VALUES (?, ?, 'thing')", [f"e{i}", f"entity {i}"])
        if i:
            con.execute(
                "INSERT INTO kg_relationships VALUES (?, ?, ?, 'rel')",
                [f"r{i}", f"e{i - 1}", f"e{i}"],
            )
    con.close()


def make_sqlite(path: Path, rows: int = 50, table: str = "events") -> None:
    con = sqlite3.connect(path)
    con.execute(f"CREATE TABLE IF NOT EXISTS {table} (id INTEGER PRIMARY KEY, what TEXT, at REAL)")
    con.executemany(
        f"INSERT INTO {table} (what, at) VALUES (?, ?)",
        [(f"event {i}", time.time()) for i in range(rows)],
    )
    con.commit()
    con.close()


def make_store(root: Path, *, conversations: int = 20, seed: int = 1) -> Path:
    """Two DuckDB files, SQLite files, JSON files and a sessions/ folder."""
    root.mkdir(parents=True, exist_ok=True)
    make_reflection(root / "reflection.duckdb", conversations=conversations, seed=seed)
    make_kg(root / "knowledge_graph.duckdb")
    make_sqlite(root / "activity.db")
    make_sqlite(root / "natural_scheduler.db", rows=10, table="reminders")
    (root / "akosha_sync_state.json").write_text(json.dumps({"last_sync": None}))
    for i in range(3):
        d = root / "sessions" / f"session-{i}"
        d.mkdir(parents=True, exist_ok=True)
        (d / "state.json").write_text(json.dumps({"id": i, "notes": ["x"] * i}))
    return root


def duckdb_rows(path: Path, table: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
    finally:
        con.close()


def sqlite_rows(path: Path, table: str) -> list[tuple[object, ...]]:
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return sorted(con.execute(f"SELECT * FROM {table}").fetchall())
    finally:
        con.close()


class LiveWriter:
    """A child process holding reflection.duckdb open read-write and committing rows."""

    def __init__(self, db: Path, interval: float = 0.05, log: Path | None = None) -> None:
        self.db = db
        self.log = log or db.with_name("writer.log")
        self.proc = subprocess.Popen(
            [sys.executable, str(WRITER), str(db), str(interval), str(self.log)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(
                f"writer failed: {line} {self.proc.stderr.read() if self.proc.stderr else ''}"
            )

    def committed(self) -> list[str]:
        """Ids whose commit returned, in order (read from the writer's log)."""
        if not self.log.exists():
            return []
        return [
            line.split()[1]
            for line in self.log.read_text().splitlines()
            if line.startswith("committed ")
        ]

    def errors(self) -> list[str]:
        if not self.log.exists():
            return []
        return [line for line in self.log.read_text().splitlines() if line.startswith("error")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
