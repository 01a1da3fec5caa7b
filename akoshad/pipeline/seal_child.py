"""The sealing child (``python -m akoshad.pipeline.seal_child FD RECIPIENT...``) and the
exchange it shares with its parent (:mod:`akoshad.pipeline.seal_worker`).

The bodies travel through a shared area, not the pipes: ``FD`` is a file both processes map
(a ``memfd`` on Linux, else an unlinked temporary file), :data:`IN_AREA` bytes for the
parent's bodies, then :data:`OUT_AREA` bytes for the child's sealed ones. Through the pipes
go only small messages. Request: the number of bodies (4 bytes, little endian), then each
body's offset and length in the input area. Answer: a status byte and a number; status 0:
that many bodies were sealed, and their lengths follow (4 bytes each), the bodies lying one
after another from the start of the output area; status 1: a one-line error of that many
bytes follows. Piping the bodies cost more CPU than sealing them (four copies through
kernel buffers, a fresh allocation each). The child imports nothing but
:mod:`akoshad.storage.age_write` (``cryptography``) and ``akoshad.heap`` (its memory stays
near the interpreter's own), seals to the recipients on its command line (public keys)
straight from the input area into the output area, and ends at the end of its input.
While no request waits, it prepares the next bodies' age headers (:data:`AHEAD` at most:
a fresh file key and ephemeral X25519 key each, most of a small body's sealing), so that a
request then waits for the cipher only; each is used for one body and never again.
"""

from __future__ import annotations

import mmap
import os
import select
import struct
import sys
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from akoshad.heap import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, mallopt

if TYPE_CHECKING:
    from akoshad.storage.age_write import AgeWriter, Start

MiB = 1024 * 1024
IN_AREA = 2 * MiB  # the bodies of one round trip (the parent splits larger batches)
OUT_AREA = IN_AREA + 64 * 1024  # their sealed forms (the parent checks the bound first)
MAX_BODIES = 256  # bodies in one request
REQUEST = struct.Struct("<I")  # bodies in the request, then a SPAN each
SPAN = struct.Struct("<II")  # a body's offset and length in the input area
ANSWER = struct.Struct("<BI")  # 0 = sealed (that many lengths follow) / 1 = error (its length)
LENGTH = struct.Struct("<I")
MAX_ERROR = 400
AHEAD = 64  # headers prepared while the parent has nothing to seal
HEAP_KEEP = 32 * MiB  # freed memory the child keeps for reuse


class _Refused(Exception):
    """A request the child cannot serve (one line back to the parent)."""


def _read_exact(fd: int, size: int) -> bytes | None:
    """``size`` bytes from ``fd``; None at the end of the input."""
    parts: list[bytes] = []
    got = 0
    while got < size:
        part = os.read(fd, size - got)
        if not part:
            return None
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def write_all(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd`` (a blocking pipe)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _seal_into(area: memoryview, spans: bytes, writer: AgeWriter, ready: deque[Start]) -> bytes:
    """Seal every body ``spans`` names into the output area, one after another (each with
    a header of ``ready`` while there are some); the answer (status 0 and the lengths)."""
    lengths = bytearray()
    pos = IN_AREA
    for offset, length in SPAN.iter_unpack(spans):
        if offset + length > IN_AREA:
            raise _Refused("a body lies outside the shared area")
        end = pos + writer.sealed_size(length)
        if end > IN_AREA + OUT_AREA:
            raise _Refused("the sealed bodies do not fit the shared area")
        start = ready.popleft() if ready else None
        written = writer.seal_into(area[offset : offset + length], area[pos:end], start)
        pos += written
        lengths += LENGTH.pack(written)
    return ANSWER.pack(0, len(spans) // SPAN.size) + bytes(lengths)


def _prepare(writer: AgeWriter, ready: deque[Start], inp: int) -> None:
    """While no request waits, the next bodies' headers (each for one body only)."""
    while len(ready) < AHEAD and not select.select([inp], [], [], 0)[0]:
        ready.append(writer.start())


def steady_heap() -> bool:
    """Keep the memory freed in the heap for the next body (glibc only; True when set).
    With glibc's defaults each freed buffer of a sealer that allocates its output per
    body went back to the system and the next one was faulted in and zeroed page by page
    (with ``pyrage``: half of the child's time). The child's heap then stays at the size of
    its largest run, a few MiB."""
    return mallopt((M_MMAP_THRESHOLD, HEAP_KEEP // 2), (M_TRIM_THRESHOLD, HEAP_KEEP))


def serve(fd: int, recipient_keys: Sequence[str]) -> int:
    """Seal the bodies of each request read from stdin, answer on stdout, until the end of
    the input."""
    steady_heap()
    from akoshad.storage.age_write import AgeWriter, recipient_bytes

    writer = AgeWriter([recipient_bytes(k) for k in recipient_keys])
    area = memoryview(mmap.mmap(fd, IN_AREA + OUT_AREA))
    inp, out = sys.stdin.fileno(), sys.stdout.fileno()

    ready: deque[Start] = deque()
    while True:
        _prepare(writer, ready, inp)
        head = _read_exact(inp, REQUEST.size)
        if head is None:
            return 0  # the end of the input: the parent is done
        (count,) = REQUEST.unpack(head)
        if count > MAX_BODIES:
            return 2  # not our parent's request: stop
        spans = _read_exact(inp, SPAN.size * count)
        if spans is None:
            return 0
        try:
            answer = _seal_into(area, spans, writer, ready)
        except Exception as exc:  # one line back; the parent seals the bodies itself
            lines = str(exc).splitlines() or [type(exc).__name__]
            said = lines[0][:MAX_ERROR].encode()
            answer = ANSWER.pack(1, len(said)) + said
        write_all(out, answer)


def main(argv: Sequence[str] | None = None) -> int:
    """The child's entry point: the shared area's descriptor, then the recipients."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return serve(int(args[0]), args[1:])
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
