"""Running akoshad as users do (a subprocess with a config file) and reading its outbox."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web


def write_config(path: Path, **settings: Any) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


def daemon_config(
    tmp_path: Path,
    system_id: str,
    *,
    store: bool = True,
    socket_path: Path | None = None,
    **extra: Any,
) -> tuple[Path, dict[str, str]]:
    """The usual daemon of a test: a generated store under ``tmp_path/store``, its state,
    a local outbox, a quick debounce, no upload pacing; ``extra`` settings on top
    (``cloud_sync`` merged with the system id). Returns (config file, environment)."""
    from tests.storegen import make_store

    if store:
        make_store(tmp_path / "store")
    settings: dict[str, Any] = {
        "data_dir": str(tmp_path / "store"),
        "state_dir": str(tmp_path / "state"),
        "local_target_dir": str(tmp_path / "outbox"),
        "socket_path": str(socket_path or tmp_path / "s.sock"),
        "debounce_seconds": 0.2,
        "max_delay_seconds": 2,
        "min_upload_interval_seconds": 0,  # one upload per change, as these tests time them
    }
    settings.update(extra)
    settings["cloud_sync"] = {"system_id": system_id, **extra.get("cloud_sync", {})}
    return write_config(tmp_path / "c.yaml", **settings), base_env(tmp_path)


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AKOSHAD_", "NOTIFY_", "XDG_"))}
    env.update({"HOME": str(home), "PYTHONUNBUFFERED": "1"})
    return env


def akoshad(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, check: bool = False
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "akoshad", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"akoshad {args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def start_daemon(
    config: Path, env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "akoshad", "run", "--config", str(config)],
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
    )


def stop_daemon(proc: subprocess.Popen[bytes], timeout: float = 40) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


def manifests(outbox: Path, system_id: str) -> list[dict[str, Any]]:
    """Every committed manifest in a local target, oldest first."""
    base = outbox / "systems" / system_id / "uploads"
    if not base.is_dir():
        return []
    out = []
    for d in sorted(base.iterdir()):
        m = d / "manifest.json"
        if m.exists():
            out.append(json.loads(m.read_text()))
    return out


def same_document(got: tuple[str, bytes], want: tuple[str, bytes]) -> bool:
    """Two stored documents are the same: one key and one plaintext. Their gzip bytes are
    not compared: a compressor promises no one spelling of a stream (ISA-L's level 1 gave
    two for one document once, in a full CI run), and akoshad relies only on the key."""
    return got[0] == want[0] and gzip.decompress(got[1]) == gzip.decompress(want[1])


def tree_files(root: Path) -> dict[str, bytes | None]:
    """Every file under ``root``: its bytes, None for a database (a snapshot of one is a
    consistent copy, not the same bytes)."""
    return {
        str(p.relative_to(root)): None if p.suffix in (".db", ".duckdb", ".wal") else p.read_bytes()
        for p in root.rglob("*")
        if p.is_file()
    }


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


def stored_where(entry: dict[str, Any]) -> Any:
    """Where a manifest entry's bytes are: its whole object's key (format 1), its chunks or
    its chunk list (format 2)."""
    return entry.get("key") or entry.get("chunks") or entry.get("chunk_list")


def changed_paths(old: dict[str, Any] | None, new: dict[str, Any]) -> set[str]:
    """The paths ``new`` stores anew: absent from ``old`` or stored elsewhere than there
    (manifests with inline ``metadata.files``)."""
    before = {e["path"]: stored_where(e) for e in (old or {}).get("metadata", {}).get("files", [])}
    return {
        e["path"]
        for e in new["metadata"]["files"]
        if e["path"] not in before or before[e["path"]] != stored_where(e)
    }


@asynccontextmanager
async def served(app: web.Application) -> AsyncIterator[str]:
    """``app`` served on 127.0.0.1 on a free port for the block: its base URL
    (``http://127.0.0.1:PORT``); stopped after."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def printed_by_every_command(
    cfg: Path,
    env: dict[str, str],
    tmp_path: Path,
    daemon_commands: Sequence[tuple[str, ...]],
    while_running: Callable[[], str] | None = None,
) -> list[str]:
    """What the one-shot commands print (``restore`` into ``tmp_path/r``), then, with the
    daemon running (its log in ``tmp_path/d.log``), what ``daemon_commands`` and
    ``while_running`` print, then the daemon's log: all a search for a leaked secret reads."""
    outputs: list[str] = []
    args: tuple[str, ...]
    for args in (
        ("config", "show"),
        ("config", "check"),
        ("run", "--once"),
        ("verify",),
        ("restore", "--latest", "--dest", str(tmp_path / "r")),
    ):
        res = akoshad(*args, "--config", str(cfg), env=env)
        outputs.append(res.stdout + res.stderr)
    proc = start_daemon(cfg, env, tmp_path / "d.log")
    try:
        wait_for(lambda: akoshad("status", "--config", str(cfg), env=env).returncode == 0, 30)
        for args in daemon_commands:
            res = akoshad(*args, "--config", str(cfg), env=env, timeout=60)
            outputs.append(res.stdout + res.stderr)
        if while_running is not None:
            outputs.append(while_running())
    finally:
        stop_daemon(proc)
    outputs.append((tmp_path / "d.log").read_text())
    return outputs
