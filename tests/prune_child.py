"""A prune in a process of its own, to be killed at a step boundary.

``python -m tests.prune_child ROOT SYSTEM_ID NOW KEEP_LAST STAGING OP NTH``: prunes the local
target at ROOT; before the NTH step (or deletion batch) of kind OP it prints ``AT-STEP`` and
sleeps, so the parent can ``kill -9`` it there. Deletions go in batches of 2.
:func:`kill_at_marker` is the parent's side.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from akoshad.storage.prune_exec import run_prune
from akoshad.storage.prune_plan import Step
from akoshad.storage.prune_result import PruneHooks
from akoshad.storage.retention import Retention
from akoshad.targets.local import LocalTarget

ROOT = Path(__file__).resolve().parents[1]


def policy(keep_last: int) -> Retention:
    return Retention(keep_last=keep_last, keep_hourly=0, keep_daily=0, keep_weekly=0)


def kill_at_marker(args: list[str]) -> str:
    """Run the child prune, SIGKILL it once it prints its marker; returns the line read."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.prune_child", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        child.send_signal(signal.SIGKILL)
        return line
    finally:
        child.kill()
        child.wait(30)
        if child.stdout is not None:
            child.stdout.close()


async def main(argv: list[str]) -> None:
    root, system_id, now, keep_last, staging, op, nth = argv
    seen = 0

    async def on_step(_: int, step: Step) -> None:
        nonlocal seen
        if step.op == op:
            seen += 1
            if seen == int(nth):
                print("AT-STEP", flush=True)
                await asyncio.sleep(600)

    target = LocalTarget(Path(root))
    await run_prune(
        target,
        system_id,
        policy(int(keep_last)),
        staging_dir=Path(staging),
        now=datetime.fromisoformat(now),
        hooks=PruneHooks(on_step=on_step),
        delete_batch=2,
    )
    print("DONE", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
