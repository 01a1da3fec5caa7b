"""``akoshad mcp``: the assistant's two tools, served over stdio, backed by the daemon.

``sync_to_akosha(method, enable_fallback)`` asks the running daemon to drain now and
returns what happened; ``akosha_sync_status()`` returns the daemon's status. Both answer
with a structured error (never a hang) when no daemon runs. The MCP SDK is an optional
extra (``pip install 'akoshad[mcp]'``) so the daemon itself stays light. Logs go to stderr:
stdout is the MCP channel.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Literal

from akoshad.config import Settings
from akoshad.control import ControlRequestError, request
from akoshad.errors import AkoshadError, DaemonNotRunning

STATUS_TIMEOUT = 1.5


def not_running(settings: Settings) -> dict[str, Any]:
    return {
        "success": False,
        "error": "daemon_not_running",
        "message": (
            f"akoshad is not running (no answer on {settings.socket_path}); start it with "
            "`akoshad service install` or `akoshad run`"
        ),
    }


def config_summary(settings: Settings) -> dict[str, Any]:
    """What the assistant may see of the configuration (never the secret)."""
    cs = settings.cloud_sync
    return {
        "data_dir": str(settings.data_dir),
        "target": f"s3://{cs.cloud_bucket}" if cs.cloud_bucket else str(settings.local_target_dir),
        "cloud_endpoint": cs.cloud_endpoint,
        "akosha_url": settings.akosha_url,
        "system_id": cs.system_id,
        "force_method": cs.force_method,
        "enable_fallback": cs.enable_fallback,
    }


def sync_result(reply: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The seed's result shape, from the daemon's ``sync --wait`` reply."""
    passes = reply.get("passes") or []
    uploads = [p for p in passes if p.get("upload_id") and not p.get("error")]
    files = [f for p in uploads for f in p.get("files_uploaded") or []]
    memories = sum(int((p.get("memories") or {}).get("delivered", 0)) for p in passes)
    errors = [p["error"] for p in passes if p.get("error")]
    errors += [p["memory_error"] for p in passes if p.get("memory_error")]
    method = uploads[-1]["target"] if uploads else (passes[-1]["target"] if passes else None)
    if method is None and memories:
        method = "http"
    return {
        "method": method,
        "success": bool(reply.get("ok_drain", True)) and not errors,
        "files_uploaded": files,
        "upload_id": uploads[-1]["upload_id"] if uploads else None,
        "upload_ids": [p["upload_id"] for p in uploads],
        "bytes_sent": sum(int(p.get("bytes_sent") or 0) for p in passes),
        "memories_delivered": memories,
        "pending": reply.get("pending", 0),
        "errors": errors,
        "duration_seconds": round(seconds, 3),
    }


async def do_sync(
    settings: Settings, method: str = "auto", enable_fallback: bool = True
) -> dict[str, Any]:
    started = time.monotonic()
    payload = {"cmd": "sync", "wait": True, "method": method, "enable_fallback": enable_fallback}
    try:
        reply = await request(
            settings.socket_path, payload, float(settings.cloud_sync.upload_timeout_seconds) * 4
        )
    except DaemonNotRunning:
        return not_running(settings)
    except (ControlRequestError, AkoshadError) as exc:
        return {"success": False, "error": "sync_failed", "message": str(exc)}
    return sync_result(reply, time.monotonic() - started)


async def do_status(settings: Settings) -> dict[str, Any]:
    try:
        status = await request(settings.socket_path, {"cmd": "status"}, STATUS_TIMEOUT)
    except DaemonNotRunning:
        return not_running(settings)
    except (ControlRequestError, AkoshadError) as exc:
        return {"success": False, "error": "status_failed", "message": str(exc)}
    return {**status, "config": config_summary(settings)}


def build_server(settings: Settings) -> Any:
    from mcp.server.mcpserver import MCPServer

    server: Any = MCPServer("akoshad", instructions="Sync the memory store to Akosha.")

    @server.tool(  # type: ignore[untyped-decorator]
        name="sync_to_akosha",
        description=(
            "Upload what changed in the memory store now (the akoshad daemon does this by "
            "itself after every write; this forces it and waits). method: auto (cloud, with "
            "HTTP for memories), cloud or http."
        ),
    )
    async def sync_to_akosha(
        method: Literal["auto", "cloud", "http"] = "auto", enable_fallback: bool = True
    ) -> dict[str, Any]:
        return await do_sync(settings, method, enable_fallback)

    @server.tool(  # type: ignore[untyped-decorator]
        name="akosha_sync_status",
        description="The akoshad daemon's status: queue, last upload, per-target health.",
    )
    async def akosha_sync_status() -> dict[str, Any]:
        return await do_status(settings)

    return server


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> int:
    try:
        server = build_server(settings)
    except ImportError:
        print("akoshad mcp needs the MCP SDK: pip install 'akoshad[mcp]'", file=sys.stderr)
        return 1
    server.run("stdio")
    return 0
