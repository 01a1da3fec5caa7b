"""The engine checks of a drill: the restored databases and JSON files opened in
short-lived worker processes (``akoshad.restore.drill_worker``, started isolated with
``-I``); a file that crashes or hangs a worker is a problem of its own, and the files after
it get a fresh worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import akoshad
from akoshad.manifest.facts import Facts

WORKER_TIMEOUT = 3600.0
_WORKER = "import sys; sys.path.insert(0, sys.argv[1]); import akoshad.restore.drill_worker as w; "
_WORKER += "sys.exit(w.main(sys.argv[2:]))"
# the worker imports the very akoshad this process runs (-I: no environment, no cwd)
_PACKAGE_PARENT = str(Path(akoshad.__file__).resolve().parent.parent)


class Checkable(Protocol):
    """What the engine checks need of a restored file."""

    @property
    def path(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def facts(self) -> Facts | None: ...


def worker_spec(entries: Sequence[Checkable]) -> list[dict[str, Any]]:
    """What the worker checks: databases, and JSON files that parsed at capture."""
    specs: list[dict[str, Any]] = []
    for e in entries:
        fields = e.facts.as_fields() if e.facts is not None else {}
        if e.kind in ("duckdb", "sqlite") or fields.get("json_ok") is True:
            specs.append({"path": e.path, "kind": e.kind, **fields})
    return specs


async def run_worker(
    root: Path, specs: list[dict[str, Any]], log: Path
) -> tuple[list[str], list[str]]:
    """Run the engine checks in child processes: (problems, notes). A file that crashes a
    worker is a problem of its own; the files after it get a fresh worker."""
    problems: list[str] = []
    notes: list[str] = []
    pending = list(specs)
    while pending:
        current = await _one_worker(root, pending, log, problems, notes)
        if current is None:
            break
        paths = [s["path"] for s in pending]
        pending = pending[paths.index(current) + 1 :] if current in paths else []
    return problems, notes


async def _one_worker(
    root: Path, specs: list[dict[str, Any]], log: Path, problems: list[str], notes: list[str]
) -> str | None:
    """One worker over ``specs``; returns the path it died on (None: it finished)."""
    err = await asyncio.to_thread(log.open, "ab")
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-c",
            _WORKER,
            _PACKAGE_PARENT,
            str(root),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            limit=4 * 1024 * 1024,
        )
    finally:
        err.close()
    assert proc.stdin is not None and proc.stdout is not None
    current: str | None = None
    try:
        proc.stdin.write(json.dumps({"files": specs}).encode())
        await proc.stdin.drain()
        proc.stdin.close()
        async with asyncio.timeout(WORKER_TIMEOUT):
            while line := await proc.stdout.readline():
                message = json.loads(line)
                if not isinstance(message, dict):
                    raise ValueError("not an object")
                if "checking" in message:
                    current = str(message["checking"])
                else:
                    problems.extend(one_line(p) for p in message.get("problems", []))
                    notes.extend(one_line(n) for n in message.get("notes", []))
                    current = None
            code = await proc.wait()
    except TimeoutError:
        problems.append(f"{current or 'checks'}: not done within {WORKER_TIMEOUT:.0f}s")
        return None
    except ValueError:  # a garbled or overlong line: the worker is not trustworthy
        problems.append(f"{current or 'checks'}: the check worker answered garbage")
        return current
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if code != 0 or current is not None:
        how = f"signal {-code}" if code < 0 else f"exit {code}"
        problems.append(f"{current or 'checks'}: the check crashed its worker ({how})")
        return current
    return None


def one_line(text: object) -> str:
    """``text`` on one line, at most 1,000 characters."""
    return " ".join(str(text).split())[:1000]
