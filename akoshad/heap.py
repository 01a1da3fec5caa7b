"""Give the C heap's free pages back to the system after a large piece of work.

The daemon sets glibc's mmap threshold at start (large buffers come and go as mappings),
but many small allocations (a batch of memories parsed from a worker's answer) leave freed
pages inside the heap, where they stay resident. :func:`trim` hands them back
(``malloc_trim``); it is a no-op where glibc is not there.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any

TRIM_THRESHOLD = 8 * 1024 * 1024  # bytes freed at a heap's top kept for reuse
# glibc's mallopt parameters
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


@functools.cache
def _libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def trim() -> bool:
    """Blocking (milliseconds; call it from a worker thread): release the free memory of
    every malloc arena to the system. True when it released some."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def mallopt(*settings: tuple[int, int]) -> bool:
    """Set glibc's malloc parameters (``M_*``, value), every one of them; a no-op where
    glibc is not there. True when each was taken."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return all([bool(libc.mallopt(param, value)) for param, value in settings])


def bounded_heap() -> None:
    """Large buffers (upload parts) go straight to mmap and back to the system when freed,
    so the resident size stays flat instead of keeping freed parts in malloc arenas."""
    mallopt(
        (M_MMAP_THRESHOLD, 1024 * 1024),  # fixed at 1 MiB
        # up to 8 MiB freed at the top of a heap stays for the next buffers (at the
        # default 128 KiB, each chunk of a large file freed its pages and the next one
        # faulted them in again, zeroed); trim() gives it all back
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
        (M_ARENA_MAX, 2),  # two arenas for our few threads
    )
