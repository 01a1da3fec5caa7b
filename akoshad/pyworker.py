"""Run blocking work in a short-lived Python child process and read its one JSON answer.

Work that needs a heavy native library (DuckDB) runs in a child of the very akoshad this
process runs, so the library is never loaded into the daemon: its memory goes back to the
system when the child exits, and a native crash on a hostile file ends only the child.

Parent side, from a worker thread: :func:`run_json` starts ``MODULE.main(argv)`` with the
same interpreter and path flags as this process (``-P``: never the cwd on the path; a user
site-packages this process uses is used there too), writes the request as JSON on its stdin
and returns the JSON object it prints on stdout; a crash, a hang (killed at ``timeout``) or
garbage raises :class:`WorkerFailed` with one clear line. Child side: :func:`serve` reads the
request, calls the handler and prints its answer (or the error it raised).

A long-lived child (:mod:`akoshad.resident`) answers many requests instead: each one a frame
(:func:`write_frame`: a 4-byte big-endian length, then that many bytes of JSON) on its stdin,
each answer a frame on its stdout (:func:`serve_frames`), until its stdin ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, BinaryIO

import akoshad

# imports akoshad from where this process has it, then runs MODULE.main(ARGS)
BOOT = (
    "import importlib, sys; sys.path.insert(0, sys.argv[1]); "
    "sys.exit(importlib.import_module(sys.argv[2]).main(sys.argv[3:]))"
)
PACKAGE_PARENT = str(Path(akoshad.__file__).resolve().parent.parent)
MAX_ERROR = 400
FRAME = struct.Struct(">I")  # a frame's header: the length of the JSON that follows

Handler = Callable[[list[str], Any], dict[str, Any]]


class WorkerFailed(Exception):
    """The worker did not answer: it crashed, hung or answered garbage (one line)."""

    def __init__(self, message: str, *, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


class WorkerError(Exception):
    """The worker answered with an error its handler raised (``retry`` and ``kind`` as it
    said: ``kind`` names a class of error the caller may act on, e.g. out of memory)."""

    def __init__(self, message: str, *, retry: bool = False, kind: str | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.kind = kind


def run_json(module: str, args: Sequence[str], request: Any, *, timeout: float) -> dict[str, Any]:
    """Blocking: run ``module``'s ``main(args)`` in a child, send ``request``, return its
    answer. Raises WorkerFailed (crash, timeout: killed, garbage) or WorkerError."""
    proc = subprocess.Popen(
        child_argv(module, *args),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        out, _ = proc.communicate(json.dumps(request).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise WorkerFailed(f"its worker was stopped after {timeout:g}s", retry=True) from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.communicate()
    if proc.returncode != 0:
        raise crashed(proc.returncode)
    try:
        answer = json.loads(out)
    except ValueError:
        answer = None
    return checked_answer(answer)


def checked_answer(answer: Any) -> dict[str, Any]:
    """A worker's decoded answer as it is, or the error it names raised as WorkerError;
    anything but a JSON object is WorkerFailed (garbage)."""
    if not isinstance(answer, dict):
        raise WorkerFailed("its worker answered garbage")
    if "error" in answer:
        kind = answer.get("kind")
        raise WorkerError(
            str(answer["error"])[:MAX_ERROR],
            retry=answer.get("retry") is True,
            kind=kind if isinstance(kind, str) else None,
        )
    return answer


def crashed(code: int) -> WorkerFailed:
    """The failure of a child that ended (exit status ``code``) without answering. Killed
    by SIGKILL, it is worth a retry: that is the OOM killer (or an operator), never a
    native crash of the work on the file."""
    how = f"signal {-code}" if code < 0 else f"exit {code}"
    return WorkerFailed(f"its worker crashed ({how})", retry=code == -signal.SIGKILL)


def child_argv(module: str, *args: str) -> list[str]:
    """The command line of a child running ``module``'s ``main(args)`` with this
    interpreter, finding akoshad where this process does."""
    return [sys.executable, *python_flags(), "-c", BOOT, PACKAGE_PARENT, module, *args]


def stop_child(proc: subprocess.Popen[bytes], *, kill: bool = False, grace: float) -> None:
    """End ``proc`` and wait for it (never a zombie): its pipes closed, so a child serving
    them exits; killed at once with ``kill``, or when it has not ended within ``grace``
    seconds."""
    if kill and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()


def python_flags() -> list[str]:
    """Interpreter flags for a child that finds what this process finds: ``-P`` (no cwd on
    the path), and ``-I``/``-E``/``-s`` when this process was started with them."""
    if sys.flags.isolated:
        return ["-I"]
    flags = ["-P"]
    if sys.flags.ignore_environment:
        flags.append("-E")
    if sys.flags.no_user_site:
        flags.append("-s")
    return flags


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), bounded."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:MAX_ERROR]


def answer_channel() -> BinaryIO:
    """Child side: keep stdout for the answer alone. Returns a file on the original stdout
    and points file descriptor 1 (and ``sys.stdout``) at stderr, so whatever the work prints
    there (DuckDB draws a progress bar on stdout for any query over 2 s) cannot corrupt the
    answer."""
    sys.stdout.flush()
    answer = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return answer


def serve(handler: Handler, argv: Sequence[str]) -> int:
    """Child side: the request from stdin to ``handler(argv, request)``, its answer (or
    ``{"error", "retry", "kind"}`` for an exception it raised, ``kind`` from the exception's
    attribute of that name) as one JSON object on stdout."""
    out = answer_channel()
    try:
        answer = handler(list(argv), json.loads(sys.stdin.buffer.read()))
    except Exception as exc:
        answer = error_answer(exc)
    out.write(json.dumps(answer).encode())
    out.flush()
    return 0


def error_answer(exc: BaseException) -> dict[str, Any]:
    """``{"error", "retry", "kind"}`` for an exception a handler raised (``kind`` from the
    exception's attribute of that name)."""
    retry = getattr(exc, "retry", False) is True
    answer: dict[str, Any] = {"error": first_line(exc), "retry": retry}
    kind = getattr(exc, "kind", None)
    if isinstance(kind, str):
        answer["kind"] = kind
    return answer


def write_frame(out: IO[bytes], payload: bytes) -> None:
    """One frame: the length of ``payload``, then ``payload``."""
    out.write(FRAME.pack(len(payload)))
    out.write(payload)
    out.flush()


def _read_exactly(fd: int, n: int) -> bytes | None:
    """``n`` bytes from ``fd``, or None at its end (a frame cut short is an end too)."""
    parts: list[bytes] = []
    while n > 0:
        part = os.read(fd, min(n, 1 << 20))
        if not part:
            return None
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def serve_frames(
    handler: Handler,
    after: Callable[[], object] | None = None,
    idle: tuple[float, Callable[[], object]] | None = None,
) -> int:
    """Child side, long-lived: until stdin ends, each request frame
    (``{"args": [...], "request": ...}``) to ``handler`` and its answer (or error, as
    :func:`serve` answers it) as a frame on stdout; ``after`` runs after each answer, and
    ``idle`` = (seconds, callback): the callback runs once when no request came for that
    long after an answer."""
    out = answer_channel()
    fd = sys.stdin.fileno()
    while True:
        if idle is not None and not select.select([fd], [], [], idle[0])[0]:
            idle[1]()
        head = _read_exactly(fd, FRAME.size)
        body = None if head is None else _read_exactly(fd, FRAME.unpack(head)[0])
        if body is None:
            return 0
        try:
            message = json.loads(body)
            answer = handler(list(message["args"]), message["request"])
        except Exception as exc:
            answer = error_answer(exc)
        del body
        write_frame(out, json.dumps(answer).encode())
        del answer
        if after is not None:
            after()
