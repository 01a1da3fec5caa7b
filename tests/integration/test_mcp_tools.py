"""`akoshad mcp` over stdio, driven by the official MCP SDK's client."""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from tests.helpers import (
    akoshad,
    base_env,
    manifests,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)
from tests.storegen import make_store


def _setup(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    make_store(tmp_path / "store")
    sock = Path(tempfile.mkdtemp(prefix="ak", dir="/tmp")) / "a.sock"
    cfg = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(sock),
        debounce_seconds=60,  # the daemon would wait: only the tool's sync uploads now
        max_delay_seconds=120,
        cloud_sync={
            "system_id": "mcp",
            "secret_access_key": "mcp-planted-secret-xyz",
            "access_key_id": "AKIAEXAMPLE",
        },
    )
    return cfg, base_env(tmp_path)


async def _call(
    cfg: Path, env: dict[str, str], tool: str | None, args: dict[str, Any] | None = None
) -> Any:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "akoshad", "mcp", "--config", str(cfg)], env=env
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        if tool is None:
            return await session.list_tools()
        result = await session.call_tool(tool, args or {})
        assert not result.is_error, result
        if result.structured_content is not None:
            return result.structured_content
        return json.loads(result.content[0].text)


async def test_tools_are_listed_with_their_schemas(tmp_path: Path) -> None:
    cfg, env = _setup(tmp_path)
    listed = await _call(cfg, env, None)
    tools = {t.name: t for t in listed.tools}
    assert set(tools) == {"sync_to_akosha", "akosha_sync_status"}
    props = tools["sync_to_akosha"].input_schema["properties"]
    assert props["method"]["default"] == "auto"
    assert set(props["method"]["enum"]) == {"auto", "cloud", "http"}
    assert props["enable_fallback"]["default"] is True
    assert tools["akosha_sync_status"].input_schema.get("properties", {}) == {}


async def test_sync_and_status_against_a_daemon(tmp_path: Path) -> None:
    cfg, env = _setup(tmp_path)
    proc = start_daemon(cfg, env, tmp_path / "d.log")
    try:
        wait_for(lambda: akoshad("status", "--config", str(cfg), env=env).returncode == 0, 30)
        wait_for(lambda: manifests(tmp_path / "outbox", "mcp"), 30)  # the startup upload
        idle = await _call(cfg, env, "sync_to_akosha", {"method": "auto"})
        assert idle["success"] is True and idle["upload_id"] is None  # nothing to do
        (tmp_path / "store" / "akosha_sync_state.json").write_text('{"from": "the tool"}')
        await asyncio.sleep(0.5)  # let the watcher see it (the debouncer holds it 60 s)
        result = await _call(cfg, env, "sync_to_akosha", {"method": "auto"})
        assert result["success"] is True and result["method"] == "local", result
        assert result["files_uploaded"] == ["akosha_sync_state.json"]
        uploaded = [m["metadata"]["upload_id"] for m in manifests(tmp_path / "outbox", "mcp")]
        assert result["upload_id"] == uploaded[-1] and len(uploaded) == 2
        status = await _call(cfg, env, "akosha_sync_status")
        cli = json.loads(akoshad("status", "--json", "--config", str(cfg), env=env).stdout)
        for key in ("state", "pid", "version", "data_dir", "last_upload"):
            assert status[key] == cli[key], key
        assert set(status["counters"]) == set(cli["counters"])
        assert set(status["targets"]) == set(cli["targets"])
        assert status["config"]["system_id"] == "mcp"
        assert "mcp-planted-secret-xyz" not in json.dumps(status)
    finally:
        assert stop_daemon(proc) == 0


async def test_no_daemon_structured_error_fast(tmp_path: Path) -> None:
    cfg, env = _setup(tmp_path)
    for tool, args in (("sync_to_akosha", {}), ("akosha_sync_status", {})):
        t0 = time.monotonic()
        result = await _call(cfg, env, tool, args)
        assert result["success"] is False and result["error"] == "daemon_not_running"
        assert "akoshad service install" in result["message"]
        # the tool answered within 2 s (the time includes starting `akoshad mcp`)
        assert time.monotonic() - t0 < 2 + 3
