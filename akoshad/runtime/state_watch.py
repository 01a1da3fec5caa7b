"""The daemon's state directory, watched while it runs.

A ``state_dir`` removed under a running daemon (a clean-up of ``~/.local/state``, a tmpfs
emptied) took the ledger, the queue, the history and ``owner_id`` with it; the daemon went
on in files no longer there, its lock gone (a second ``akoshad run`` on that directory was
let in), and its next start was another machine, refused as not the owner of its
``system_id`` until someone ran ``akoshad takeover``. Every :data:`CHECK_SECONDS` the daemon
now checks that ``state_dir/akoshad.lock`` is still the file it locked; when not, it writes
its owner id there again (unless one is there already) and stops with exit 1, so that a
service manager restarts it on a new state that still owns the id (its first upload sends
the whole store again).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from loguru import logger

from akoshad.names import EXIT_FAIL
from akoshad.private import make_private_dirs, shared_dir_problem
from akoshad.storage.owner import write_owner_id

if TYPE_CHECKING:
    from akoshad.runtime.wiring import Parts, StateLock

CHECK_SECONDS = 5.0
_TAKE = "; run `akoshad takeover` after the restart if it should own the system id"


def lock_lost(lock: StateLock) -> bool:
    """Blocking: ``lock`` is held but its path names no file, or another file."""
    fd = lock.fileno()
    if fd is None:
        return False
    try:
        now = os.lstat(lock.path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:  # cannot tell (a permission taken away): not taken for a loss
        return False
    held = os.fstat(fd)
    return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino)


def _keep_owner_id(lock: StateLock, owner_id: str) -> str:
    """Blocking: write ``owner_id`` into the state directory again; what the next start is."""
    state_dir = lock.path.parent
    try:
        make_private_dirs(state_dir)
        problem = shared_dir_problem("state_dir", state_dir)
        if problem is not None:
            return f"its owner id is not written there again ({problem}){_TAKE}"
        if write_owner_id(state_dir, owner_id):
            return (
                "this machine's owner id is written there again, so the restart still owns "
                "the system id; its first upload sends the whole store again"
            )
    except OSError as exc:
        return f"its owner id could not be written there again ({exc.strerror or exc}){_TAKE}"
    return f"another owner id is there now: the restart is another machine{_TAKE}"


async def watch_state_dir(
    parts: Parts, stop: Callable[[int], None], every: float = CHECK_SECONDS
) -> None:
    """Until the daemon stops: when its state directory's lock file is gone or replaced,
    keep the owner id there (``_keep_owner_id``), log why and ``stop(EXIT_FAIL)``."""
    lock = parts.lock
    if lock is None:
        return
    while True:
        with suppress(TimeoutError):
            await asyncio.wait_for(parts.stop_event.wait(), every)
            return
        if await asyncio.to_thread(lock_lost, lock):
            break
    machine = await parts.owners.machine()
    kept = await asyncio.to_thread(_keep_owner_id, lock, machine.owner_id)
    logger.error(
        "state_dir {} was removed while akoshad ran (its {} is gone or replaced): the "
        "ledger, queue and upload history went with it; stopping (exit 1) so that a "
        "restart begins a new state there: {}",
        lock.path.parent,
        lock.path.name,
        kept,
    )
    stop(EXIT_FAIL)
