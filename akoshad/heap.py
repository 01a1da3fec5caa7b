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


def bounded_heap() -> None:
    """Large buffers (upload parts) go straight to mmap and back to the system when freed,
    so the resident size stays flat instead of keeping freed parts in malloc arenas."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(-3, 1024 * 1024)  # M_MMAP_THRESHOLD: fixed at 1 MiB
            # M_TRIM_THRESHOLD: up to 8 MiB freed at the top of a heap stays for the next
            # buffers (at the default 128 KiB, each chunk of a large file freed its pages
            # and the next one faulted them in again, zeroed); trim() gives it all back
            libc.mallopt(-1, TRIM_THRESHOLD)
            libc.mallopt(-8, 2)  # M_ARENA_MAX: two arenas for our few threads
        except (OSError, AttributeError):
            pass
