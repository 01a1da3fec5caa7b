"""``akoshad mcp``: the assistant's two tools, served over stdio, backed by the daemon.

``sync_to_akosha(method, enable_fallback, timeout_seconds)`` asks the running daemon to
drain now and returns what happened, or after ``timeout_seconds`` (default 60, at most
600) what is still pending while the drain goes on in the daemon;
``akosha_sync_status()`` returns the daemon's status. Neither ever hangs: with no daemon
both answer ``{"success": false, "error": "daemon_not_running", ...}`` at once. The MCP
SDK (v1 ``FastMCP`` or v2 ``MCPServer``) is an optional extra
(``pip install 'akoshad[mcp]'``) so the daemon itself stays light. stdout is the MCP
channel: logs go to stderr only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from loguru import logger

from akoshad.config import Settings
from akoshad.errors import AkoshadError, DaemonNotRunning, DaemonWentAway
from akoshad.fastpath import state_held
from akoshad.runtime.control_client import ControlRequestError, request
from akoshad.store.places import place_fields

SDK_MISSING = (
    "akoshad mcp needs the MCP SDK: pip install 'akoshad[mcp]' (installed with pipx: "
    "pipx inject akoshad mcp; with uv tool: uv tool install 'akoshad[mcp]')"
)
# a live daemon answers `status` within this even while busy (the end of a pass of 100,000
# files held it 2.9 s); a missing one fails at once
PING_TIMEOUT = 5.0
SYNC_TIMEOUT_DEFAULT = 60.0  # how long sync_to_akosha waits for the drain by default
SYNC_TIMEOUT_MIN, SYNC_TIMEOUT_MAX = 1.0, 600.0  # what a caller may ask for (clamped)

SYNC_DESCRIPTION = (
    "Upload what changed in the session-buddy memory store now and wait for it. The "
    "akoshad daemon already syncs by itself a few seconds after every write; this forces "
    "it. method: auto (the configured chain: S3 bucket, else the local outbox; memories "
    "over HTTP to Akosha when configured), cloud (bucket only) or http (memories to Akosha "
    "only). enable_fallback: allow HTTP delivery of memories when the bucket is the target. "
    "timeout_seconds (default 60, 1-600): how long to wait; a drain still running then goes "
    "on in the daemon, and the answer says what is pending (follow it with "
    "akosha_sync_status)."
)
STATUS_DESCRIPTION = (
    "The akoshad daemon's status: state, pending changes, last upload, counters, per-target "
    "health, and a configuration summary (no secrets)."
)


class ToolFailure(Exception):
    """Ends a tool call early with a structured error result."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.result: dict[str, Any] = {"success": False, "error": code, "message": message}


def not_running(settings: Settings) -> ToolFailure:
    """No answer on the socket: no daemon, or (an akoshad holds the state) one still
    starting, or a ``run --once``, ``prune`` or ``takeover`` at work: then starting another
    is no fix, asking again shortly is (``akoshad status`` says the same)."""
    if state_held(settings.state_dir):
        return ToolFailure(
            "daemon_not_ready",
            f"akoshad does not answer on {settings.socket_path} yet, but an akoshad holds its "
            f"state {settings.state_dir}: a daemon still starting (its socket answers once "
            "its targets answered or were given up on), or a `run --once`, `prune` or "
            "`takeover` at work; ask again shortly",
        )
    return ToolFailure(
        "daemon_not_running",
        f"akoshad is not running (no answer on {settings.socket_path}); start it with "
        "`akoshad service install` or `akoshad run`",
    )


def not_answering(sock: Path) -> str:
    """``daemon_not_responding``'s message: a daemon hung, or one too busy to answer in
    time, which a restart would interrupt; so ask again first."""
    return (
        f"akoshad accepted the connection on {sock} but did not answer within "
        f"{PING_TIMEOUT:g} s: it is hung, or too busy to answer; ask again shortly, and if it "
        "still does not answer, restart it (`systemctl --user restart akoshad`)"
    )


async def ask(
    settings: Settings, payload: dict[str, Any], seconds: float, on_timeout: ToolFailure
) -> dict[str, Any]:
    """One control request under a hard deadline, every failure mapped to ``ToolFailure``."""
    try:
        async with asyncio.timeout(seconds):
            return await request(settings.socket_path, payload, seconds + 1)
    except TimeoutError:
        raise on_timeout from None
    except DaemonWentAway as exc:  # it took the request, then went (a restart, a crash)
        raise ToolFailure("daemon_went_away", str(exc)) from None
    except DaemonNotRunning:
        raise not_running(settings) from None
    except ControlRequestError as exc:
        raise ToolFailure(f"{payload['cmd']}_failed", str(exc)) from None
    except AkoshadError as exc:  # e.g. permission denied on the socket
        raise ToolFailure("daemon_unreachable", str(exc)) from None


def config_summary(settings: Settings) -> dict[str, Any]:
    """What the assistant may see of the configuration (never a secret)."""
    data = settings.redacted()
    cs = data["cloud_sync"]
    bucket = cs.get("cloud_bucket")
    return {
        "data_dir": data["data_dir"],
        "target": f"s3://{bucket}" if bucket else data["local_target_dir"],
        "cloud_endpoint": cs.get("cloud_endpoint"),  # redact_url'ed by redacted()
        "akosha_url": data.get("akosha_url"),
        "system_id": cs.get("system_id"),
        "force_method": cs.get("force_method"),
        "enable_fallback": cs.get("enable_fallback"),
        "socket_path": data.get("socket_path"),
    }


def sync_result(reply: dict[str, Any], seconds: float, requested: str = "auto") -> dict[str, Any]:
    """The seed's result shape, from the daemon's ``sync --wait`` reply.

    ``method`` is where the files went (``cloud`` or ``local``), ``http`` when only
    memories were delivered, None when nothing had changed. A pass whose files wait for
    the cloud is not an error when memories went over HTTP instead (or http was asked).
    """
    passes = [p for p in reply.get("passes") or [] if isinstance(p, dict)]
    uploads = [p for p in passes if p.get("upload_id") and not p.get("error")]
    memories = [p["memories"] for p in passes if isinstance(p.get("memories"), dict)]
    errors: list[str] = [str(reply["error"])] if reply.get("error") else []
    notes: list[str] = []
    for p in passes:
        target, error, memory_error = p.get("target"), p.get("error"), p.get("memory_error")
        if error:
            by_http = p.get("memories") is not None and not memory_error
            if target == "wait" and (requested == "http" or by_http):
                notes.append(f"file snapshots stay queued for the cloud: {error}")
            else:
                errors.append(f"{target}: {error}")
        if memory_error:
            errors.append(f"http: {memory_error}")
        errors += [f"skipped {k}: {v}" for k, v in (p.get("skipped") or {}).items()]
        errors += [f"retrying {k}: {v}" for k, v in (p.get("retrying") or {}).items()]
    method: str | None = None
    if uploads:
        method = uploads[-1]["target"]
    elif memories and not any(p.get("memory_error") for p in passes):
        method = "http"
    elif passes:
        method = "cloud" if passes[-1].get("target") == "wait" else passes[-1].get("target")
    files = [f for p in uploads for f in p.get("files_uploaded") or []]
    delivered = sum(int(m.get("delivered") or 0) for m in memories)
    if errors:
        message = f"sync failed: {errors[0]}" + (
            f" (+{len(errors) - 1} more)" if errors[1:] else ""
        )
    elif uploads:
        ids = ", ".join(p["upload_id"] for p in uploads)
        message = f"uploaded {len(files)} changed file(s) to {method} as {ids}"
    elif delivered:
        message = f"delivered {delivered} memories to Akosha"
    else:
        message = "nothing to upload: the store is unchanged since the last upload"
    return {
        "method": method,
        "success": not errors,
        "files_uploaded": files,
        "upload_id": uploads[-1]["upload_id"] if uploads else None,
        "upload_ids": [p["upload_id"] for p in uploads],
        "bytes_sent": sum(int(p.get("bytes_sent") or 0) for p in passes),
        "memories_delivered": delivered,
        "errors": errors,
        "notes": notes,
        "pending": int(reply.get("pending") or 0),
        "duration_seconds": round(seconds, 3),
        "message": message,
    }


def sync_timeout(requested: float | None) -> float:
    """The wait a caller asked for, within ``SYNC_TIMEOUT_MIN`` .. ``SYNC_TIMEOUT_MAX``."""
    if requested is None or requested != requested:  # None or NaN: the default
        return SYNC_TIMEOUT_DEFAULT
    return min(SYNC_TIMEOUT_MAX, max(SYNC_TIMEOUT_MIN, float(requested)))


async def still_running(settings: Settings, seconds: float, started: float) -> dict[str, Any]:
    """The answer when the wait is over before the drain: what is still pending (from a
    quick ``status``) and how to follow it."""
    pending: int | None = None
    in_flight: int | None = None
    state: str | None = None
    with contextlib.suppress(ToolFailure):
        st = await ask(settings, {"cmd": "status"}, PING_TIMEOUT, ToolFailure("", ""))
        pending, in_flight, state = st.get("pending"), st.get("in_flight"), st.get("state")
    what = (
        f"{pending} change(s) pending, {in_flight} in flight"
        if pending is not None
        else "its progress is unknown (no status answer)"
    )
    return {
        "success": False,
        "error": "sync_timeout",
        "still_running": True,
        "state": state,
        "pending": pending,
        "in_flight": in_flight,
        "duration_seconds": round(time.monotonic() - started, 3),
        "message": f"the sync did not finish within {seconds:g} s and goes on in the daemon: "
        f"{what}; follow it with akosha_sync_status",
    }


async def do_sync(
    settings: Settings,
    method: str = "auto",
    enable_fallback: bool = True,
    timeout_seconds: float | None = SYNC_TIMEOUT_DEFAULT,
) -> dict[str, Any]:
    """``sync_to_akosha``: a quick ping (so a dead or wedged daemon fails fast), then the
    drain, waited for at most ``timeout_seconds`` (clamped by ``sync_timeout``)."""
    started = time.monotonic()
    sock = settings.socket_path
    seconds = sync_timeout(timeout_seconds)
    try:
        await ask(
            settings,
            {"cmd": "status"},
            PING_TIMEOUT,
            ToolFailure(
                "daemon_not_responding",
                not_answering(sock),
            ),
        )
        payload = {
            "cmd": "sync",
            "wait": True,
            "method": method,
            "enable_fallback": enable_fallback,
            **place_fields(settings),
        }
        reply = await ask(settings, payload, seconds, ToolFailure("sync_timeout", ""))
    except ToolFailure as failure:
        if failure.result["error"] == "sync_timeout":
            result = await still_running(settings, seconds, started)
            logger.warning("sync_to_akosha: {}", result["message"])
            return result
        logger.warning("sync_to_akosha: {}", failure)
        return failure.result
    result = sync_result(reply, time.monotonic() - started, method)
    logger.info("sync_to_akosha(method={}): {}", method, result["message"])
    return result


async def do_status(settings: Settings) -> dict[str, Any]:
    """``akosha_sync_status``: the daemon's status plus the configuration summary."""
    try:
        status = await ask(
            settings,
            {"cmd": "status"},
            PING_TIMEOUT,
            ToolFailure(
                "daemon_not_responding",
                not_answering(settings.socket_path),
            ),
        )
    except ToolFailure as failure:
        return failure.result
    return {"success": True, **status, "config": config_summary(settings)}


def _server_class() -> Any:
    """The SDK's high-level server: ``MCPServer`` (mcp 2.x) or ``FastMCP`` (mcp 1.x)."""
    try:
        return importlib.import_module("mcp.server.mcpserver").MCPServer
    except ImportError:
        return importlib.import_module("mcp.server.fastmcp").FastMCP


def build_server(settings: Settings) -> Any:
    """The MCP server with exactly the two tools. Raises ImportError without the SDK."""
    server_class = _server_class()
    from mcp.types import ToolAnnotations

    server: Any = server_class("akoshad", instructions="Sync the memory store to Akosha.")

    @server.tool(  # type: ignore[untyped-decorator]
        name="sync_to_akosha",
        description=SYNC_DESCRIPTION,
        annotations=ToolAnnotations.model_validate(
            {
                "title": "Sync to Akosha",
                "readOnlyHint": False,
                "destructiveHint": False,
                "idempotentHint": True,
                "openWorldHint": True,
            }
        ),
    )
    async def sync_to_akosha(
        method: Literal["auto", "cloud", "http"] = "auto",
        enable_fallback: bool = True,
        timeout_seconds: float = SYNC_TIMEOUT_DEFAULT,
    ) -> dict[str, Any]:
        return await do_sync(settings, method, enable_fallback, timeout_seconds)

    @server.tool(  # type: ignore[untyped-decorator]
        name="akosha_sync_status",
        description=STATUS_DESCRIPTION,
        annotations=ToolAnnotations.model_validate(
            {"title": "Akosha sync status", "readOnlyHint": True, "openWorldHint": False}
        ),
    )
    async def akosha_sync_status() -> dict[str, Any]:
        return await do_status(settings)

    return server


def cmd_mcp(
    args: argparse.Namespace, settings: Settings, *, environ: Mapping[str, str] | None = None
) -> int:
    """Serve the tools over stdio until the client closes the connection."""
    try:
        server = build_server(settings)
    except ImportError:
        print(SDK_MISSING, file=sys.stderr)
        return 1
    from akoshad.runtime.logs import setup_logging

    setup_logging(settings.model_copy(update={"log_file": None}), environ=environ or {})
    server.run("stdio")
    return 0
