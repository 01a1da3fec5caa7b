"""A worker (for :mod:`akoshad.pyworker`) that misbehaves: tests run it in place of a real one.

What it does is named by its arguments (any argument containing the word): ``crash`` (dies
of SIGSEGV, as a native crash in DuckDB would), ``hang`` (sleeps for an hour), ``garbage``
(answers something that is not JSON), ``chatty`` (answers through ``pyworker.serve`` after
printing on stdout from Python and from the file descriptor, as DuckDB's progress bar does).
An argument ``pid=FILE`` makes it write its pid there.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def _chatty(argv: list[str], request: object) -> dict[str, object]:
    print("[=====>      ] 50%")  # Python's stdout
    os.write(1, b"\r[==========] 100%\n")  # the descriptor, as a native library writes
    return {"echo": request}


def main(argv: Sequence[str]) -> int:
    if any("chatty" in a for a in argv):
        from akoshad.pyworker import serve

        return serve(_chatty, argv)
    for arg in argv:
        if arg.startswith("pid="):
            Path(arg[4:]).write_text(str(os.getpid()))
    sys.stdin.buffer.read()
    if any("hang" in a for a in argv):
        time.sleep(3600)
    if any("garbage" in a for a in argv):
        sys.stdout.write("Segmentation fault? {not json")
        return 0
    os.kill(os.getpid(), signal.SIGSEGV)
    return 1
