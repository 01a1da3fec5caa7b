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


def grow_pipe(fd: int) -> None:
    """Ask for a larger pipe buffer (Linux; elsewhere, or refused, the default stays)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, set_size, PIPE_SIZE)


def write_answer(fd: int, head: bytes, body: bytes) -> None:
    """``head`` and ``body`` in one write (the parent wakes once for them), the rest after
    a short write."""
    done = os.writev(fd, [head, body])
    if done < len(head) + len(body):
        rest = memoryview(head + body)[done:]
        while rest:
            rest = rest[os.write(fd, rest) :]


def serve(recipient_keys: Sequence[str]) -> int:
    """Seal each body read from stdin, answer on stdout, until the end of the input."""
    import pyrage
    from pyrage import x25519

    recipients = [x25519.Recipient.from_str(k) for k in recipient_keys]
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    grow_pipe(out.fileno())
    while True:
        head = inp.read(REQUEST.size)  # a large read goes straight into its bytes
        if len(head) < REQUEST.size:
            return 0  # the end of the input: the parent is done
        (size,) = REQUEST.unpack(head)
        body = inp.read(size)
        if len(body) < size:
            return 0
        try:
            answer, status = pyrage.encrypt(body, recipients), 0
        except Exception as exc:  # one line back; the parent seals the body itself
            lines = str(exc).splitlines() or [type(exc).__name__]
            answer, status = lines[0][:MAX_ERROR].encode(), 1
        write_answer(out.fileno(), ANSWER.pack(status, len(answer)), answer)


def main(argv: Sequence[str] | None = None) -> int:
    """The child's entry point."""
    try:
        return serve(sys.argv[1:] if argv is None else argv)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
