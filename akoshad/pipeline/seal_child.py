"""The sealing child (``python -m akoshad.pipeline.seal_child RECIPIENT...``) and the frames
it shares with its parent (:mod:`akoshad.pipeline.seal_worker`).

Request: the body's length (4 bytes, little endian), then the body. Answer: a status byte
(0: sealed, 1: a one-line error) and a length, then the sealed body or the message. The
child imports nothing but ``pyrage`` (its memory stays near the interpreter's own), seals
one body at a time to the recipients on its command line (public keys) and ends at the end
of its input.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import sys
from collections.abc import Sequence

REQUEST = struct.Struct("<I")  # body length, then the body
ANSWER = struct.Struct("<BI")  # 0 = sealed / 1 = error (a one-line message), length
MAX_ERROR = 400
PIPE_SIZE = 1024 * 1024  # pipe buffers asked for (Linux), so a body crosses in a few copies


class ChildEnded(Exception):
    """The parent ended the child's input."""


def read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd``; ChildEnded at the end of the input."""
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = os.readv(fd, [view[got:]])
        if n == 0:
            raise ChildEnded("ended")
        got += n
    return bytes(buf)


def write_all(fd: int, *parts: bytes) -> None:
    """Every byte of ``parts`` written to ``fd`` (blocking), in order."""
    for part in parts:
        view = memoryview(part)
        while view:
            view = view[os.write(fd, view) :]


def grow_pipe(fd: int) -> None:
    """Ask for a larger pipe buffer (Linux; elsewhere, or refused, the default stays)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, set_size, PIPE_SIZE)


def serve(recipient_keys: Sequence[str]) -> int:
    """Seal each body read from stdin, answer on stdout, until the end of the input."""
    import pyrage
    from pyrage import x25519

    recipients = [x25519.Recipient.from_str(k) for k in recipient_keys]
    inp, out = sys.stdin.buffer.fileno(), sys.stdout.buffer.fileno()
    grow_pipe(out)
    while True:
        try:
            (size,) = REQUEST.unpack(read_exactly(inp, REQUEST.size))
            body = read_exactly(inp, size)
        except ChildEnded:
            return 0  # the end of the input: the parent is done
        try:
            answer, status = pyrage.encrypt(body, recipients), 0
        except Exception as exc:  # one line back; the parent seals the body itself
            lines = str(exc).splitlines() or [type(exc).__name__]
            answer, status = lines[0][:MAX_ERROR].encode(), 1
        write_all(out, ANSWER.pack(status, len(answer)), answer)


def main(argv: Sequence[str] | None = None) -> int:
    """The child's entry point."""
    try:
        return serve(sys.argv[1:] if argv is None else argv)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
