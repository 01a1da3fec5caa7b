"""`akoshad mcp` over stdio, driven by the official MCP SDK's stdio client.

The server is started as users' assistants start it (`python -m akoshad mcp --config F`);
results are read through `model_dump(by_alias=True)` (the wire names) so the tests hold
with mcp 1.x and 2.x alike.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import duckdb
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from akoshad.cli.mcp import PING_TIMEOUT, SDK_MISSING
from tests.akosha_fixtures import AkoshaServer
from tests.helpers import (
    akoshad,
    changed_paths,
    daemon_config,
    manifests,
    start_daemon,
    stop_daemon,
    wait_for,
)
from tests.tmpdirs import short_dir

SYSTEM = "mcp"
SECRET = "mcp-planted-secret-xyz"
NO_DAEMON_BUDGET = 2.0  # seconds a tool may take to say that no daemon answers


class Rig:
    """A store, a config (socket in a short /tmp dir) and an environment."""

    def __init__(self, tmp: Path, **extra: Any) -> None:
        self.tmp = tmp
        self.store = tmp / "store"
        self.outbox = tmp / "outbox"
        self.sock = short_dir() / "a.sock"
        self.stderr = tmp / "mcp-stderr.log"
        settings: dict[str, Any] = {
            "debounce_seconds": 60,  # the daemon would wait: only the tool's sync uploads now
            "max_delay_seconds": 120,
            "min_upload_interval_seconds": 30,  # the default (daemon_config turns pacing off)
            "cloud_sync": {"secret_access_key": SECRET, "access_key_id": "AKIAEXAMPLE"},
            **extra,
        }
        self.config, self.env = daemon_config(tmp, SYSTEM, socket_path=self.sock, **settings)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return akoshad(*args, "--config", str(self.config), env=self.env)

    def status(self) -> dict[str, Any]:
        res = self.cli("status", "--json")
        assert res.returncode == 0, res.stderr
        return dict(json.loads(res.stdout))

    def uploads(self) -> list[str]:
        return [m["metadata"]["upload_id"] for m in manifests(self.outbox, SYSTEM)]

    @asynccontextmanager
    async def session(self) -> AsyncIterator[ClientSession]:
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "akoshad", "mcp", "--config", str(self.config)],
            env=self.env,
        )
        with self.stderr.open("a") as errlog:
            async with (
                stdio_client(params, errlog=errlog) as (read, write),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                yield session


async def call(session: ClientSession, tool: str, args: dict[str, Any] | None = None) -> Any:
    """Call ``tool``; its structured result (or the JSON of its text content)."""
    result = (await session.call_tool(tool, args or {})).model_dump(by_alias=True)
    assert not result.get("isError"), result
    if result.get("structuredContent") is not None:
        return result["structuredContent"]
    return json.loads(result["content"][0]["text"])


async def timed(session: ClientSession, tool: str, args: dict[str, Any] | None = None) -> Any:
    t0 = time.monotonic()
    result = await call(session, tool, args)
    return result, time.monotonic() - t0


def running_daemon(rig: Rig) -> subprocess.Popen[bytes]:
    """Start the daemon and wait until its startup pass is over (its upload made, then its
    memories delivered: the pass syncs until both are done) and nothing is pending."""
    proc = start_daemon(rig.config, rig.env, rig.tmp / "daemon.log")

    def settled() -> bool:
        status = rig.status()
        return bool(status["pending"] == 0 and status["state"] != "syncing")

    try:
        wait_for(lambda: rig.cli("status").returncode == 0, 30)
        wait_for(lambda: rig.uploads() and settled(), 30)
    except BaseException:
        stop_daemon(proc)
        raise
    return proc


# ---- the tool list ----------------------------------------------------------------------------
async def test_tools_are_listed_with_their_schemas(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    async with rig.session() as session:
        listed = (await session.list_tools()).model_dump(by_alias=True)
    tools = {t["name"]: t for t in listed["tools"]}
    assert set(tools) == {"sync_to_akosha", "akosha_sync_status"}
    schema = tools["sync_to_akosha"]["inputSchema"]
    props = schema["properties"]
    assert set(props) == {"method", "enable_fallback", "timeout_seconds"}
    assert props["timeout_seconds"]["default"] == 60  # bounded wait (1-600 s)
    assert props["method"]["enum"] == ["auto", "cloud", "http"]
    assert props["method"]["default"] == "auto"
    assert props["enable_fallback"]["type"] == "boolean"
    assert props["enable_fallback"]["default"] is True
    assert not schema.get("required")  # all are optional
    status_schema = tools["akosha_sync_status"]["inputSchema"]
    assert status_schema["type"] == "object" and not status_schema.get("properties")
    for tool in tools.values():
        assert tool["description"]
    assert tools["akosha_sync_status"]["annotations"]["readOnlyHint"] is True


# ---- against a running daemon -----------------------------------------------------------------
async def test_sync_and_status_against_a_daemon(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    proc = running_daemon(rig)
    try:
        before = rig.uploads()
        assert len(before) == 1  # the startup upload
        async with rig.session() as session:
            idle = await call(session, "sync_to_akosha")
            assert idle["success"] is True and idle["upload_id"] is None, idle
            assert idle["files_uploaded"] == [] and idle["errors"] == []
            assert rig.uploads() == before  # nothing changed: no upload

            (rig.store / "akosha_sync_state.json").write_text('{"from": "the tool"}')
            wait_for(lambda: rig.status()["pending"] >= 1, 10)  # seen, held by the debouncer
            result, took = await timed(session, "sync_to_akosha", {"method": "auto"})
            print(f"\nsync_to_akosha (one changed file, local target): {took:.3f} s")
            assert result["success"] is True and result["method"] == "local", result
            assert result["files_uploaded"] == ["akosha_sync_state.json"]
            assert result["errors"] == [] and result["pending"] == 0
            assert result["bytes_sent"] > 0 and result["memories_delivered"] == 0
            assert isinstance(result["duration_seconds"], float)
            after = rig.uploads()
            assert len(after) == 2 and result["upload_id"] == after[-1] != before[-1]
            assert result["upload_ids"] == [after[-1]]
            previous, manifest = manifests(rig.outbox, SYSTEM)[-2:]
            assert changed_paths(previous, manifest) == {"akosha_sync_state.json"}

            status, took = await timed(session, "akosha_sync_status")
            print(f"akosha_sync_status: {took:.3f} s")
        cli = rig.status()
        for key in ("state", "pid", "version", "data_dir", "last_upload", "system_id"):
            assert status[key] == cli[key], key
        assert status["last_upload"]["upload_id"] == result["upload_id"]
        assert set(status["counters"]) == set(cli["counters"])
        assert set(status["targets"]) == set(cli["targets"]) == {"local"}
        assert status["success"] is True
        assert status["config"] == {
            "data_dir": str(rig.store),
            "target": str(rig.outbox),
            "cloud_endpoint": None,
            "akosha_url": None,
            "system_id": SYSTEM,
            "force_method": "auto",
            "enable_fallback": True,
            "socket_path": str(rig.sock),
        }
        assert SECRET not in json.dumps(status)
        log = rig.stderr.read_text()
        assert "sync_to_akosha(method=auto): uploaded 1 changed file(s)" in log  # stderr only
    finally:
        assert stop_daemon(proc) == 0


async def test_sync_over_http_reports_memories(tmp_path: Path, akosha_server: AkoshaServer) -> None:
    rig = Rig(tmp_path, akosha_url=akosha_server.url)
    proc = running_daemon(rig)
    try:
        first = len(akosha_server.stored())
        assert first > 0  # the startup pass delivered the store's memories
        con = duckdb.connect(str(rig.store / "reflection.duckdb"))
        for rid in ("mcp-1", "mcp-2"):
            con.execute(
                "INSERT INTO conversations_v2 (id, content, embedding, category) "
                "VALUES (?, ?, ?, 'c')",
                [rid, f"text {rid}", [0.5] * 384],
            )
        con.close()
        wait_for(lambda: rig.status()["pending"] >= 1, 10)
        async with rig.session() as session:
            result = await call(session, "sync_to_akosha", {"method": "http"})
            status = await call(session, "akosha_sync_status")
        assert result["success"] is True, result
        assert result["memories_delivered"] == 2
        assert result["method"] == "local"  # the file snapshot still went to the outbox
        assert result["upload_id"] == rig.uploads()[-1]
        assert {f"{SYSTEM}:mcp-1", f"{SYSTEM}:mcp-2"} <= akosha_server.stored()
        assert len(akosha_server.stored()) == first + 2
        assert status["config"]["akosha_url"] == akosha_server.url
        assert set(status["targets"]) == {"local", "http"}
    finally:
        assert stop_daemon(proc) == 0


# ---- no daemon ----------------------------------------------------------------------------------
async def _assert_structured_error(
    rig: Rig, code: str, budget: float = NO_DAEMON_BUDGET
) -> dict[str, float]:
    took: dict[str, float] = {}
    async with rig.session() as session:
        for tool in ("sync_to_akosha", "akosha_sync_status"):
            result, took[tool] = await timed(session, tool)
            assert result["success"] is False and result["error"] == code, result
            assert str(rig.sock) in result["message"]
            if code == "daemon_not_running":
                assert "akoshad service install" in result["message"]
            assert took[tool] < budget, (tool, took[tool])
    return took


async def test_no_daemon_structured_error_fast(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    t0 = time.monotonic()
    took = await _assert_structured_error(rig, "daemon_not_running")  # no socket file
    print(f"\nno socket: {took}, whole session incl. start {time.monotonic() - t0:.2f} s")

    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a dead daemon's socket file
    stale.bind(str(rig.sock))
    stale.close()
    assert rig.sock.exists()
    took = await _assert_structured_error(rig, "daemon_not_running")
    print(f"stale socket (refused): {took}")


async def test_an_akoshad_holding_the_state_is_not_called_not_running(tmp_path: Path) -> None:
    """No answer on the socket while an akoshad holds the state (a daemon still starting:
    its socket answers once its targets answered or were given up on; a `run --once`): the
    tools say so and to ask again, as `akoshad status` does, not to start one."""
    rig = Rig(tmp_path)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    holder = await asyncio.create_subprocess_exec(  # an akoshad by its command line
        sys.executable, "-c", "import time; time.sleep(60)", "akoshad", "run"
    )
    try:
        (state / "akoshad.lock").write_text(f"{holder.pid}\n")
        async with rig.session() as session:
            for tool in ("sync_to_akosha", "akosha_sync_status"):
                result, took = await timed(session, tool)
                assert result["success"] is False and result["error"] == "daemon_not_ready"
                assert "holds its state" in result["message"], result
                assert "ask again shortly" in result["message"]
                assert took < NO_DAEMON_BUDGET, (tool, took)
    finally:
        holder.kill()
        await holder.wait()


async def test_wedged_daemon_does_not_hang_the_tools(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wedged:
        wedged.bind(str(rig.sock))
        wedged.listen(8)  # connections are accepted by the kernel, never answered
        # waited for as long as a busy daemon may take to answer status (PING_TIMEOUT)
        took = await _assert_structured_error(rig, "daemon_not_responding", PING_TIMEOUT + 1.0)
    print(f"\nwedged socket: {took}")


def test_missing_sdk_one_line_hint(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    code = (
        "import sys; sys.modules['mcp'] = None; from akoshad.cli.main import main; "
        f"sys.exit(main(['mcp', '--config', {str(rig.config)!r}]))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=rig.env, timeout=60
    )
    assert res.returncode == 1
    assert res.stdout == ""  # stdout is the MCP channel: nothing there
    assert res.stderr.strip() == SDK_MISSING
