"""A worker (for :mod:`akoshad.pyworker`) that misbehaves: tests run it in place of a real one.

What it does is named by its arguments (any argument containing the word): ``crash`` (dies
of SIGSEGV, as a native crash in DuckDB would), ``killed`` (dies of SIGKILL, as the OOM
killer kills it), ``hang`` (sleeps for an hour), ``garbage``
(answers something that is not JSON), ``chatty`` (answers through ``pyworker.serve`` after
printing on stdout from Python and from the file descriptor, as DuckDB's progress bar does).
An argument ``pid=FILE`` makes it write its pid there.

With ``--serve`` it is a long-lived worker (:mod:`akoshad.resident`); the arguments of each
request (their last path component) name what it does: ``crash``, ``killed``, ``exit`` (exits 3),
``hang``, ``garbage`` (a frame that is not JSON), ``grow=N`` (keeps N MiB more); else a
DuckDB worker command is answered as the real worker does, anything else with its pid and
the request.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO


def _chatty(argv: list[str], request: object) -> dict[str, object]:
    print("[=====>      ] 50%")  # Python's stdout
    os.write(1, b"\r[==========] 100%\n")  # the descriptor, as a native library writes
    return {"echo": request}


_KEPT: list[bytes] = []  # what ``grow`` keeps
_ANSWERS: list[BinaryIO] = []  # the served worker's answer channel (for ``garbage``)


def _served(argv: list[str], request: object) -> dict[str, object]:
    names = [Path(a).name for a in argv]  # a copy's name, not the folders it is in
    if any("crash" in a for a in names):
        os.kill(os.getpid(), signal.SIGSEGV)
    if any("killed" in a for a in names):
        os.kill(os.getpid(), signal.SIGKILL)
    if any("exit" in a for a in names):
        os._exit(3)
    if any("hang" in a for a in names):
        time.sleep(3600)
    if any("garbage" in a for a in names):
        from akoshad.pyworker import write_frame

        write_frame(_ANSWERS[0], b"Segmentation fault? {not json")
    if argv[0].startswith("grow="):
        _KEPT.append(os.urandom(int(argv[0][5:]) << 20))
    if argv[0] in ("validate", "list", "batches", "memories_json"):  # a sound copy
        from akoshad.duckdb_commands import handle

        return handle(argv, request)
    return {"pid": os.getpid(), "echo": request}


def _serve() -> int:
    from akoshad import pyworker

    channel = pyworker.answer_channel

    def keep_channel() -> BinaryIO:
        _ANSWERS.append(channel())
        return _ANSWERS[0]

    pyworker.answer_channel = keep_channel
    return pyworker.serve_frames(_served)


def main(argv: Sequence[str]) -> int:
    if list(argv) == ["--serve"]:
        return _serve()
    if any("chatty" in a for a in argv):
        from akoshad.pyworker import serve

        return serve(_chatty, argv)
    for arg in argv:
        if arg.startswith("pid="):
            Path(arg[4:]).write_text(str(os.getpid()))
    sys.stdin.buffer.read()
    if any("killed" in Path(a).name for a in argv):
        os.kill(os.getpid(), signal.SIGKILL)
    if any("hang" in a for a in argv):
        time.sleep(3600)
    if any("garbage" in a for a in argv):
        sys.stdout.write("Segmentation fault? {not json")
        return 0
    os.kill(os.getpid(), signal.SIGSEGV)
    return 1
