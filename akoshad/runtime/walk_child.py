"""The store's walk of ``run --once``, begun before the daemon's modules are imported.

In a thread, the walk and the imports share one interpreter lock, so the walk's time was
added to the run's (10,000 small files in 10,000 directories, interleaved runs: 5.10 s in
a thread, 4.02 s forked, with the index parts' faster compression, 0.12 s of it, in the
same change). On Linux, while the process is still single-threaded, the walk runs in a
forked child instead, on another core, and hands its result back through a pipe (a pickle
of strings and integers, read by a thread of this process). Whatever goes wrong there (no
fork, a child that dies or answers garbage) is answered by walking again in a thread: the
result, or the error a caller sees, is always what
:func:`~akoshad.pipeline.store_walk.walk_store` gives in process.
"""

from __future__ import annotations

import gc
import os
import pickle
import sys
import threading
from concurrent.futures import Future
from pathlib import Path

from akoshad import fastpath
from akoshad.pipeline.store_walk import WalkResult, walk_store
from akoshad.pipeline.storefiles import PathFilter

Walked = Future[tuple[WalkResult, fastpath.StatMap | None]]
_READ = 1 << 20


def begin_walk(root: Path, flt: PathFilter) -> Walked:
    """Walk ``root`` with every entry's lstat (``walk_store``), in a forked child when this
    process may fork, else in a thread; the future holds ``(result, stats)``."""
    walked: Walked = Future()

    def in_thread() -> None:
        try:
            stats: fastpath.StatMap = {}
            walked.set_result((walk_store(root, flt, stats), stats))
        except BaseException as exc:  # handed to the reconcile that waits for it
            walked.set_exception(exc)

    child = _fork_walk(root, flt) if may_fork() else None
    if child is None:
        target = in_thread
    else:

        def target() -> None:
            found = _collect(*child)
            if found is None:
                in_thread()
            else:
                walked.set_result(found)

    threading.Thread(target=target, name="akoshad-walk", daemon=True).start()
    return walked


def may_fork() -> bool:
    """True on Linux while this process has one thread (a fork is then safe)."""
    return sys.platform == "linux" and hasattr(os, "fork") and threading.active_count() == 1


def _fork_walk(root: Path, flt: PathFilter) -> tuple[int, int] | None:
    """``(pid, read end)`` of a child walking ``root``; None when it cannot be started."""
    try:
        r, w = os.pipe()
    except OSError:
        return None
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return None
    if pid == 0:  # the child: walk, write the pickle, exit without any of the parent's cleanup
        code = 1
        try:
            os.close(r)
            gc.disable()  # short-lived: spare the parent's pages a collection would touch
            stats: fastpath.StatMap = {}
            result = walk_store(root, flt, stats)
            data = pickle.dumps(
                (
                    result.files,
                    result.refused,
                    result.excluded,
                    result.not_files,
                    result.outside_names,
                    stats,
                ),
                protocol=5,
            )
            view = memoryview(data)
            while view:
                view = view[os.write(w, view) :]
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _collect(pid: int, fd: int) -> tuple[WalkResult, fastpath.StatMap] | None:
    """The child's result, or None (then the caller walks in process)."""
    parts: list[bytes] = []
    try:
        while True:
            part = os.read(fd, _READ)
            if not part:
                break
            parts.append(part)
    except OSError:
        parts = []
    finally:
        os.close(fd)
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        status = 1
    if status != 0 or not parts:
        return None
    try:
        files, refused, excluded, not_files, outside, stats = pickle.loads(b"".join(parts))
    except Exception:
        return None
    if not isinstance(files, list) or not all(
        isinstance(d, dict) for d in (refused, not_files, outside, stats)
    ):
        return None
    return WalkResult(files, refused, int(excluded), not_files, outside_names=outside), stats
