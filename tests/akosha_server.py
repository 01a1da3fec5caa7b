"""A stand-in for Akosha 0.24.5's MCP endpoint, served by the official ``mcp`` SDK.

Run as a subprocess (see ``tests/akosha_fixtures.py``)::

    python -m tests.akosha_server --port 0 [--json-response] [--record FILE]

It prints ``LISTENING <port>`` once the socket accepts connections. What it mimics
(INTEROP.md section 3): MCP streamable HTTP at ``POST /mcp`` (406 without the ``Accept``
header, 404 ``Session not found`` for a session id it does not know, e.g. after a
restart), ``GET /healthz`` -> ``{"status": "ok"}``, the 4 MiB request body limit (413),
and the tool ``batch_store_memories(memories)``: 384-dim embeddings required
("Embedding is required", "dim mismatch"), at most 1000 items per call (more: ``status:
failed``), ``Duplicate key`` when an id is sent again, ``isError`` false with ``status``
``completed|partial|failed``. The store lives in memory, so a restart loses it (like
Akosha 0.24.5).

Test-only routes: ``GET /_test/state`` (stored ids and how often each id was sent),
``POST /_test/fail`` (``{"ids": {memory_id: times}, "error": str}``: fail those items that
many times), ``POST /_test/delay`` (``{"seconds": s}``: the tool sleeps first),
``POST /_test/reset``. ``--record FILE`` appends one JSON line per tool call, so what was
sent survives restarts of this server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

EMBED_DIM = 384
MAX_BATCH = 1000
KEPT_METADATA = {"source", "created_at", "original_id", "type", "correlation_id"}


class FakeAkosha:
    """The in-memory store and its failure knobs."""

    def __init__(self, record: Path | None) -> None:
        self.record = record
        self.stored: dict[str, dict[str, Any]] = {}
        self.attempts: dict[str, int] = {}
        self.calls = 0
        self.fail: dict[str, tuple[int, str]] = {}
        self.delay = 0.0

    def store_one(self, item: Any) -> str | None:
        """Store one item; return the error message, or None when stored."""
        if not isinstance(item, dict):
            return "Memory must be an object"
        memory_id = item.get("memory_id")
        if not isinstance(memory_id, str) or not memory_id:
            return "memory_id is required"
        self.attempts[memory_id] = self.attempts.get(memory_id, 0) + 1
        if not isinstance(item.get("text"), str):
            return "text is required"
        injected = self.fail.get(memory_id)
        if injected is not None and injected[0] > 0:
            self.fail[memory_id] = (injected[0] - 1, injected[1])
            return injected[1]
        embedding = item.get("embedding")
        if embedding is None:
            return "Embedding is required"
        if not isinstance(embedding, list) or not all(
            isinstance(x, int | float) for x in embedding
        ):
            return "Embedding must be a list of numbers"
        if len(embedding) != EMBED_DIM:
            return f"Embedding dim mismatch: expected {EMBED_DIM}, got {len(embedding)}"
        metadata = item.get("metadata") or {}
        if not isinstance(metadata, dict):
            return "metadata must be an object"
        created_at = metadata.get("created_at")
        if created_at is not None:
            try:
                datetime.fromisoformat(str(created_at))
            except ValueError:
                return f"created_at is not ISO 8601: {created_at!r}"
        if memory_id in self.stored:
            return (
                f'Constraint Error: Duplicate key "memory_id: {memory_id}" violates primary '
                "key constraint."
            )
        self.stored[memory_id] = {
            "text": item["text"],
            "metadata": {k: v for k, v in metadata.items() if k in KEPT_METADATA},
        }
        return None

    def batch(self, memories: list[Any]) -> dict[str, Any]:
        self.calls += 1
        total = len(memories)
        errors: list[dict[str, Any]] = []
        stored = 0
        if total > MAX_BATCH:
            errors.append(
                {"memory_id": None, "error": f"Batch size {total} exceeds maximum of {MAX_BATCH}"}
            )
        else:
            for item in memories:
                error = self.store_one(item)
                if error is None:
                    stored += 1
                else:
                    mid = item.get("memory_id") if isinstance(item, dict) else None
                    errors.append({"memory_id": mid, "error": error})
        failed = total - stored
        status = "completed" if failed == 0 else ("partial" if stored else "failed")
        result = {
            "status": status,
            "total": total,
            "stored": stored,
            "failed": failed,
            "errors": errors,
            "stored_at": datetime.now().astimezone().isoformat(),
        }
        if self.record is not None:
            line = {
                "t": time.time(),
                "ids": [m.get("memory_id") if isinstance(m, dict) else None for m in memories],
                "status": status,
                "errors": errors,
            }
            with self.record.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
        return result


def build_app(
    state: FakeAkosha, *, json_response: bool, tool_name: str = "batch_store_memories"
) -> Any:
    server: MCPServer[Any] = MCPServer("akosha", version="0.24.5")

    @server.tool(
        name=tool_name,
        description="Store a batch of memories with their embeddings (max 1000 per call).",
    )
    async def batch_store_memories(memories: list[dict[str, Any]]) -> dict[str, Any]:
        if state.delay:
            await asyncio.sleep(state.delay)
        return state.batch(memories)

    @server.custom_route("/healthz", methods=["GET"])  # type: ignore[untyped-decorator]
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @server.custom_route("/_test/state", methods=["GET"])  # type: ignore[untyped-decorator]
    async def test_state(request: Request) -> Response:
        return JSONResponse(
            {
                "stored": sorted(state.stored),
                "attempts": state.attempts,
                "calls": state.calls,
                "texts": {mid: row["text"] for mid, row in state.stored.items()},
            }
        )

    @server.custom_route("/_test/fail", methods=["POST"])  # type: ignore[untyped-decorator]
    async def test_fail(request: Request) -> Response:
        body = await request.json()
        error = str(body.get("error", "temporary storage error"))
        for mid, times in body.get("ids", {}).items():
            state.fail[mid] = (int(times), error)
        return JSONResponse({"ok": True})

    @server.custom_route("/_test/delay", methods=["POST"])  # type: ignore[untyped-decorator]
    async def test_delay(request: Request) -> Response:
        state.delay = float((await request.json()).get("seconds", 0))
        return JSONResponse({"ok": True})

    @server.custom_route("/_test/reset", methods=["POST"])  # type: ignore[untyped-decorator]
    async def test_reset(request: Request) -> Response:
        state.stored.clear()
        state.attempts.clear()
        state.fail.clear()
        state.calls = 0
        state.delay = 0.0
        return JSONResponse({"ok": True})

    return server.streamable_http_app(json_response=json_response, host="127.0.0.1")


def main() -> None:
    ap = argparse.ArgumentParser(description="fake Akosha MCP server for akoshad's tests")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--json-response", action="store_true", help="reply JSON instead of SSE")
    ap.add_argument("--record", type=Path, default=None)
    ap.add_argument(
        "--tool-name",
        default="batch_store_memories",
        help="the store tool's name (later Akosha releases: akosha_batch_store_memories)",
    )
    args = ap.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)
    port = sock.getsockname()[1]
    app = build_app(
        FakeAkosha(args.record), json_response=args.json_response, tool_name=args.tool_name
    )
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)

    # The socket already listens: connections wait in its backlog until uvicorn accepts.
    print(f"LISTENING {port}", flush=True)
    asyncio.run(server.serve(sockets=[sock]))
    sys.exit(0)


if __name__ == "__main__":
    main()
