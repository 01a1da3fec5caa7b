"""Fixtures running the fake Akosha MCP server (``tests/akosha_server.py``) as a subprocess.

Load them in a test module with ``pytest_plugins = ["tests.akosha_fixtures"]``::

    async def test_x(akosha_server: AkoshaServer) -> None:
        async with AkoshaClient(akosha_server.url) as client: ...
        akosha_server.restart()          # same port, empty store, old sessions 404
        akosha_server.state()["stored"]  # ids it holds now
        akosha_server.sent_counts()      # id -> times sent, across restarts

``akosha_server`` replies with server-sent events, ``akosha_server_json`` with JSON.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback port nobody listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AkoshaServer:
    """One fake Akosha process; ``restart()`` keeps the port and loses the store."""

    def __init__(
        self, workdir: Path, *, json_response: bool = False, tool_name: str | None = None
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.json_response = json_response
        self.tool_name = tool_name  # the store tool's name (default: Akosha 0.24.5's)
        self.record = workdir / "akosha-calls.jsonl"
        self.log = workdir / "akosha-server.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.origin}/mcp"

    # ---- process ---------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> None:
        assert self.proc is None, "already running"
        args = [sys.executable, "-m", "tests.akosha_server", "--port", str(self.port)]
        args += ["--record", str(self.record)]
        if self.json_response:
            args.append("--json-response")
        if self.tool_name is not None:
            args += ["--tool-name", self.tool_name]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                args, cwd=REPO, stdout=subprocess.PIPE, stderr=log, env=_env()
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                self.stop()
                raise RuntimeError(f"fake Akosha did not start: {self.log.read_text()[-2000:]}")
            chunk = os.read(self.proc.stdout.fileno(), 256)
            if not chunk:
                code = self.proc.wait()
                self.proc = None
                raise RuntimeError(f"fake Akosha exited {code}: {self.log.read_text()[-2000:]}")
            line += chunk
        self.port = int(line.split()[1])
        while time.monotonic() < deadline:
            try:
                if self._get("/healthz", timeout=0.5)["status"] == "ok":
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("fake Akosha never answered /healthz")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def kill(self) -> None:
        """Die at once (like a crash)."""
        if self.proc is not None:
            self.proc.kill()
        self.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    # ---- test controls ---------------------------------------------------------------
    def _get(self, path: str, timeout: float = 5.0) -> Any:
        with urllib.request.urlopen(self.origin + path, timeout=timeout) as resp:
            return json.loads(resp.read())

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(
            self.origin + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def state(self) -> dict[str, Any]:
        """``{"stored": [ids], "attempts": {id: n}, "calls": n}`` of the running process."""
        result: dict[str, Any] = self._get("/_test/state")
        return result

    def stored(self) -> set[str]:
        return set(self.state()["stored"])

    def fail(self, ids: dict[str, int], error: str = "temporary storage error") -> None:
        """Make each id fail that many times with ``error``."""
        self._post("/_test/fail", {"ids": ids, "error": error})

    def delay(self, seconds: float) -> None:
        """The tool sleeps ``seconds`` before answering."""
        self._post("/_test/delay", {"seconds": seconds})

    def reset(self) -> None:
        """Empty the store, the failure knobs and the call record."""
        self._post("/_test/reset", {})
        self.record.unlink(missing_ok=True)

    def calls(self) -> list[dict[str, Any]]:
        """Every tool call recorded, across restarts."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line]

    def sent_counts(self) -> Counter[str]:
        """memory_id -> how often it was sent, across restarts."""
        return Counter(i for call in self.calls() for i in call["ids"] if i is not None)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _shared(
    factory: pytest.TempPathFactory, name: str, json_response: bool
) -> Iterator[AkoshaServer]:
    server = AkoshaServer(factory.mktemp(name), json_response=json_response)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def _akosha_sse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AkoshaServer]:
    yield from _shared(tmp_path_factory, "akosha-sse", False)


@pytest.fixture(scope="session")
def _akosha_json(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AkoshaServer]:
    yield from _shared(tmp_path_factory, "akosha-json", True)


def _fresh(server: AkoshaServer) -> AkoshaServer:
    """The shared server with an empty store and record (started again if a test
    stopped or killed it)."""
    if server.proc is None or server.proc.poll() is not None:
        server.stop()
        server.start()
    server.reset()
    return server


@pytest.fixture
def akosha_server(_akosha_sse: AkoshaServer) -> AkoshaServer:
    """A running fake Akosha replying with server-sent events, empty at the start of the
    test (one process per test session; ``restart()``/``stop()``/``kill()`` are fine)."""
    return _fresh(_akosha_sse)


@pytest.fixture
def akosha_server_json(_akosha_json: AkoshaServer) -> AkoshaServer:
    """Like ``akosha_server``, replying with plain JSON."""
    return _fresh(_akosha_json)


# ---- reflection.duckdb builder -------------------------------------------------------------
CONV_DDL = """
CREATE TABLE IF NOT EXISTS conversations_v2 (
    id TEXT PRIMARY KEY, content TEXT NOT NULL, embedding {emb},
    category TEXT NOT NULL, project TEXT, namespace TEXT DEFAULT 'default',
    timestamp {ts} DEFAULT CURRENT_TIMESTAMP, session_id TEXT, metadata VARCHAR
)"""
REFL_DDL = """
CREATE TABLE IF NOT EXISTS reflections_v2 (
    id TEXT PRIMARY KEY, content TEXT NOT NULL, embedding {emb},
    category TEXT NOT NULL, tags TEXT[], timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    created_at {ts} DEFAULT CURRENT_TIMESTAMP, metadata JSON
)"""
# a deterministic vector per row number i (exact as FLOAT)
EMB_SQL = "list_transform(range({dim}), lambda x: ((i * 7 + x) % 100 / 100.0 - 0.5)::FLOAT)"


def expected_embedding(i: int, dim: int = 384) -> list[float]:
    """The float32 values EMB_SQL stores for row number ``i``."""
    import struct

    return [
        struct.unpack("f", struct.pack("f", ((i * 7 + x) % 100 / 100.0 - 0.5)))[0]
        for x in range(dim)
    ]


def make_reflection_db(
    path: Path,
    *,
    embedding_type: str = "FLOAT[384]",
    ts_type: str = "TIMESTAMP",
    tables: tuple[str, ...] = ("conversations_v2", "reflections_v2"),
) -> Path:
    """An empty reflection.duckdb with (a subset of) session-buddy's v2 schema."""
    import duckdb

    con = duckdb.connect(str(path))
    try:
        if "conversations_v2" in tables:
            con.execute(CONV_DDL.format(emb=embedding_type, ts=ts_type))
        if "reflections_v2" in tables:
            con.execute(REFL_DDL.format(emb=embedding_type, ts=ts_type))
    finally:
        con.close()
    return path


def add_rows(
    path: Path,
    table: str,
    start: int,
    stop: int,
    *,
    embedding: str = "ok",
    content: str = "'memory ' || i || ' ' || repeat('x', {pad})",
    pad: int = 10,
) -> list[str]:
    """Insert rows ``start..stop-1`` (ids ``c000042`` / ``r000042``); returns the ids.

    ``embedding``: "ok" (384 dims), "null", "short" (10 dims; needs a FLOAT[] column),
    "nan" (a NaN inside). ``content`` is a SQL expression over the row number ``i``.
    """
    import duckdb

    emb = {
        "ok": EMB_SQL.format(dim=384),
        "null": "NULL",
        "short": EMB_SQL.format(dim=10),
        "nan": "list_transform(range(384), lambda x: CASE WHEN x = 5 THEN 'nan'::FLOAT "
        "ELSE 0.25::FLOAT END)",
    }[embedding]
    con = duckdb.connect(str(path))
    try:
        con.execute(insert_sql(table, start, stop, emb, content.format(pad=pad)))
    finally:
        con.close()
    prefix = "c" if table == "conversations_v2" else "r"
    return [f"{prefix}{i:06d}" for i in range(start, stop)]


def insert_sql(table: str, start: int, stop: int, emb: str, content: str) -> str:
    """INSERT of rows ``start..stop-1`` into ``table`` (see :func:`add_rows`)."""
    prefix = "c" if table == "conversations_v2" else "r"
    ts_col = "timestamp" if table == "conversations_v2" else "created_at"
    return (
        f"INSERT INTO {table} (id, content, embedding, category, {ts_col}) "
        f"SELECT '{prefix}' || lpad(i::VARCHAR, 6, '0'), {content}, "
        f"{emb}, 'facts', TIMESTAMP '2025-03-01 12:00:00' + i * INTERVAL 1 MINUTE "
        f"FROM range({start}, {stop}) t(i)"
    )
