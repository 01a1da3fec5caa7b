"""A restore stopped by Ctrl-C, SIGTERM (``timeout``, a service manager) or SIGHUP (its
terminal closed) cleans up and says so: every file that landed is whole and checked, no
temporary file is left, and one line says that ``--dest`` holds only part of the upload.
Without it, SIGTERM and SIGHUP killed the restore where it stood (its temporary files
left behind) and Ctrl-C ended it without a word: a partial ``--dest`` looked complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

from akoshad.names import printable
from akoshad.restore.marker import MARKER, only_marker, unmark

STOPPING = (signal.SIGTERM, signal.SIGHUP)  # SIGINT: asyncio.run cancels the task itself


@contextlib.contextmanager
def cancelled_by_signals() -> Iterator[list[int]]:
    """Within: SIGTERM and SIGHUP cancel the current task (as Ctrl-C does), so that its
    clean-up runs; yields the signals caught (the exit code is 128 + the first)."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    caught: list[int] = []

    def stop(signum: int) -> None:
        caught.append(signum)
        if task is not None:
            task.cancel()

    added = []
    for signum in STOPPING:
        try:
            loop.add_signal_handler(signum, stop, signum)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            continue
        added.append(signum)
    try:
        yield caught
    finally:
        for signum in added:
            loop.remove_signal_handler(signum)


def interrupted_line(dest: Path, upload_id: str) -> str:
    """What ``dest`` holds after a restore of ``upload_id`` was interrupted. Blocking."""
    try:
        empty = not any(os.scandir(dest))
    except OSError:  # not there (never made): nothing landed
        empty = True
    if only_marker(dest):  # stopped before any file landed: nothing to mark
        with contextlib.suppress(OSError):
            unmark(dest)
        empty = True
    if empty:
        return f"restore of upload {upload_id} interrupted: nothing was restored into {dest}"
    return (
        f"restore of upload {upload_id} interrupted: {dest} holds only part of it (each "
        "file there is whole and checked; a DuckDB database with its WAL or neither; no "
        f"temporary file is left; {MARKER} in it says so until a restore restores every "
        "file): restore again with --force"
    )


def tell(line: str) -> None:
    """``line`` on stderr, unless it is gone (a terminal hung up)."""
    with contextlib.suppress(OSError, ValueError):
        print(f"akoshad: {printable(line)}", file=sys.stderr, flush=True)
