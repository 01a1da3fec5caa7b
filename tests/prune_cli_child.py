"""``akoshad prune`` in a process of its own, stopped at a step so the parent can kill it.

``python -m tests.prune_cli_child OP NTH AKOSHAD_ARGS...`` runs akoshad's command line with
``AKOSHAD_ARGS`` (e.g. ``prune --config FILE``); the prune deletes in batches of 2, and
before the NTH step (or deletion batch) of kind OP it prints ``AT-STEP`` and sleeps.
Only the test hook is added: everything else is the real command.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from akoshad.storage import prune_exec
from akoshad.storage.prune_plan import Step

ROOT = Path(__file__).resolve().parents[1]


def paused_at(
    args: list[str], env: dict[str, str], stderr: int = subprocess.PIPE
) -> subprocess.Popen[str]:
    """This module in a child (``args``: OP NTH AKOSHAD_ARGS...), its output read as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.prune_cli_child", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )


def kill_at_step(child: subprocess.Popen[str]) -> str:
    """Wait for ``child`` (:func:`paused_at`) to print ``AT-STEP`` (it must), ``kill -9``
    it there; returns what it wrote to stderr."""
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "AT-STEP\n"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        _, err = child.communicate(timeout=30)
    return err


def main(argv: list[str]) -> int:
    op, nth, *args = argv
    real = prune_exec.execute_plan
    seen = 0

    async def on_step(_: int, step: Step) -> None:
        nonlocal seen
        if step.op == op:
            seen += 1
            if seen == int(nth):
                print("AT-STEP", flush=True)
                await asyncio.sleep(600)

    async def paused(*a: Any, **kw: Any) -> prune_exec.PruneResult:
        given = kw.pop("hooks", None) or prune_exec.PruneHooks()
        kw["hooks"] = prune_exec.PruneHooks(given.forget_pack, given.record_chunks, on_step)
        kw["delete_batch"] = 2
        return await real(*a, **kw)

    prune_exec.execute_plan = paused  # type: ignore[assignment]
    from akoshad.cli.main import main as cli

    return cli(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
