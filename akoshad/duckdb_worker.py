"""The daemon's DuckDB work, done in a child process, never in the daemon.

DuckDB costs the process that loads it about 40 MiB of resident memory, and a hostile
database file may crash it. The daemon never imports it: validating a snapshot copy and
reading memories run in a child of the same akoshad, ``python -m akoshad.duckdb_worker``
(its commands: :mod:`akoshad.duckdb_commands`). Two ways to run them:

* :class:`DuckDBWorker`, what the daemon, ``run --once`` and the CLI use: one long-lived
  child (:mod:`akoshad.resident`) started on first use, answering request after request
  over its pipes (no interpreter start nor ``import duckdb`` per request: about 0.2 s
  each), stopped after ``IDLE_SECONDS`` without work (its DuckDB memory goes back to the
  system), recycled after ``MAX_REQUESTS`` answers or past ``MAX_RSS``, and stopped with
  the daemon. A crash is an error for that file and the next request gets a new child.
* without one (``run=None``): a short-lived child per call (:func:`~akoshad.pyworker.run_json`).

The functions below (parent side, blocking: call them from a worker thread) are:

* :func:`validate_copy`: open the private copy read-only, count every table's rows.
* :func:`list_rows`: the memory rows and why a row cannot be sent.
* :func:`load_batches`: the memories of some rows, redacted, in request-sized batches.
* :func:`build_memories_json`: ``memories.json`` of some rows, written by the child into a
  private file beside the copy (so it is encoded one chunk at a time), then read back.

What crosses the pipe is JSON; an embedding kept as DuckDB's text (:class:`RawJSON`) crosses
as a string and becomes a RawJSON again, so what is sent is byte for byte what an in-process
encoding gives. A crash or a hang (killed after ``TIMEOUT``) is a clear error for that file.

Memory: a request's DuckDB buffers are bounded by ``MEMORY_LIMIT``. Past the limit DuckDB
spills to a private directory (mode 0700) beside the copy, made for the request and removed
after it; the long-lived child keeps a copy open for the pass's next request on it
(validate, list, ``memories.json``: one open, within ``KEEP_SECONDS``), and its directory
with it, removed once the copy is gone (the staging directory is emptied after each pass;
a crash leaves it there, emptied at the next start). Should DuckDB still run out of memory
under the limit, the command is run once more under ``RETRY_MEMORY_LIMIT`` and a line is
logged: a big store is never an error for it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from akoshad.akosha.encoding import Memory, RawJSON
from akoshad.akosha.rows import RowRef, memory_id, wanted_ids
from akoshad.duckdb_commands import OUT_OF_MEMORY, Redactions, handle, keep_copies
from akoshad.errors import SnapshotError
from akoshad.heap import trim
from akoshad.manifest.facts import Facts
from akoshad.names import copy_of
from akoshad.pyworker import WorkerError, WorkerFailed, run_json, serve, serve_frames
from akoshad.resident import SERVE_ARG, ResidentWorker

WORKER_MODULE = "akoshad.duckdb_worker"
TIMEOUT = 900.0  # seconds one child may take (a big store's memories.json takes a few)
MEMORY_LIMIT = "32MB"  # DuckDB's buffers in a child; past it, it spills to its temp directory
# the one retry of a command that ran out of memory anyway: DuckDB's own default (80 % of
# RAM), what every command had before the limit
RETRY_MEMORY_LIMIT: str | None = None
TEMP_PREFIX = ".duckdb-tmp-"  # the child's private spill directory, beside the copy
IDLE_SECONDS = 60.0  # the long-lived child is stopped after this long without a request
MAX_REQUESTS = 500  # ... and replaced after this many answers
MAX_RSS = 256 << 20  # ... or once its resident memory passed this (bytes)
KEEP_SECONDS = 3.0  # it keeps its last copy open this long for the next request on it

# how a command reaches a child: (argv, request) -> answer; None is a one-shot child
Runner = Callable[[list[str], dict[str, Any]], dict[str, Any]]


class DuckDBWorker:
    """The long-lived DuckDB child of a daemon (or of one command): a :data:`Runner`.
    Started on first use; :meth:`close` stops it (the owner's lifecycle calls it)."""

    def __init__(
        self,
        *,
        idle_seconds: float = IDLE_SECONDS,
        max_requests: int = MAX_REQUESTS,
        max_rss: int = MAX_RSS,
    ) -> None:
        self.resident = ResidentWorker(
            WORKER_MODULE, idle_seconds=idle_seconds, max_requests=max_requests, max_rss=max_rss
        )
        self._spills: dict[Path, Path] = {}  # copy -> its spill directory, beside it
        self._spills_lock = threading.Lock()  # capture threads ask concurrently

    @contextmanager
    def spill_dir(self, db: Path) -> Iterator[Path]:
        """The private spill directory of copy ``db`` (made on its first request): the
        child keeps the copy open between requests, and the connection its directory. It is
        removed when a request on the copy fails; the directories of copies gone (the
        staging directory is emptied after each pass) are removed here, all at :meth:`close`."""
        with self._spills_lock:
            for copy, temp in list(self._spills.items()):
                if copy != db and not copy.exists():
                    shutil.rmtree(temp, ignore_errors=True)
                    del self._spills[copy]
            kept = self._spills.get(db)
            if kept is None or not kept.is_dir():
                kept = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=db.parent))
                self._spills[db] = kept
        try:
            yield kept
        except BaseException:  # the child let the copy go (or died): so does its directory
            with self._spills_lock:
                if self._spills.get(db) == kept:
                    del self._spills[db]
            shutil.rmtree(kept, ignore_errors=True)
            raise

    def __call__(self, argv: list[str], request: dict[str, Any]) -> dict[str, Any]:
        return self.resident.call(argv, request, timeout=TIMEOUT)

    @property
    def pid(self) -> int | None:
        """The running child's pid (None: not running)."""
        return self.resident.pid

    def close(self) -> None:
        """Stop the child and remove its spill directories; later calls fail (blocking)."""
        self.resident.close()
        with self._spills_lock:
            for temp in self._spills.values():
                shutil.rmtree(temp, ignore_errors=True)
            self._spills.clear()


def _one_shot(argv: list[str], request: dict[str, Any]) -> dict[str, Any]:
    return run_json(WORKER_MODULE, argv, request, timeout=TIMEOUT)


@contextmanager
def spill_dir(beside: Path) -> Iterator[Path]:
    """A new private directory (mode 0700) in ``beside`` for DuckDB to spill into, removed
    with what it holds on the way out."""
    path = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=beside))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _call(
    command: str,
    db: Path,
    args: Sequence[str],
    request: dict[str, Any],
    run: Runner | None = None,
    on_retry: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run ``command`` on ``db`` in a child (``run``'s, else a one-shot one) bounded by
    MEMORY_LIMIT, spilling into a private directory beside ``db``; once more under
    RETRY_MEMORY_LIMIT if DuckDB ran out of memory (``on_retry`` called first)."""
    run = run or _one_shot
    spill = run.spill_dir(db) if isinstance(run, DuckDBWorker) else spill_dir(db.parent)
    with spill as temp:
        argv = [command, str(db), *args]
        try:
            return run(argv, _with_limit(request, MEMORY_LIMIT, temp))
        except WorkerError as exc:
            if exc.kind != OUT_OF_MEMORY:
                raise
            # imported here: the child imports this module too, and loguru (with asyncio,
            # ssl, multiprocessing) would cost it 4 MiB it never uses
            from loguru import logger

            logger.warning(
                "DuckDB ran out of memory under {} reading {} ({}: {}); trying once more under {}",
                MEMORY_LIMIT,
                copy_of(db),
                command,
                exc,
                RETRY_MEMORY_LIMIT or "its default limit",
            )
        if on_retry is not None:
            on_retry()
        return run(argv, _with_limit(request, RETRY_MEMORY_LIMIT, temp))


def _with_limit(request: dict[str, Any], limit: str | None, temp: Path) -> dict[str, Any]:
    settings: dict[str, str] = {"temp_directory": str(temp)}
    if limit is not None:
        settings["memory_limit"] = limit
    return {**request, "duckdb": settings}


def validate_copy(staged_db: Path, run: Runner | None = None) -> tuple[str | None, Facts | None]:
    """A note ("cannot validate: ..." for a newer storage version) and the row count of
    every table of a private DuckDB copy; SnapshotError when it is corrupt or its check
    crashed or hung."""
    try:
        answer = _call("validate", staged_db, [], {}, run)
    except WorkerError as exc:
        raise SnapshotError(str(exc), retry=exc.retry) from None
    except WorkerFailed as exc:
        raise SnapshotError(f"DuckDB copy not validated: {exc}", retry=exc.retry) from None
    except OSError as exc:  # no room for its spill directory
        raise SnapshotError(f"DuckDB copy not validated: {exc}", retry=True) from None
    rows = answer.get("rows")
    facts = None if rows is None else Facts(rows=tuple((str(k), int(n)) for k, n in rows))
    note = answer.get("note")
    return (None if note is None else str(note)), facts


def list_rows(snapshot_db: Path, system_id: str, run: Runner | None = None) -> list[RowRef]:
    """:func:`akoshad.akosha.rows.list_rows`, in a child."""
    answer = _call("list", snapshot_db, [system_id], {}, run)
    reasons: list[str | None] = [None, *answer["reasons"]]
    refs: list[RowRef] = []
    for table, originals, codes, *rest in answer["tables"]:
        sizes = rest[0] if rest else [0] * len(originals)  # (a child of an earlier akoshad)
        for original, code, size in zip(originals, codes, sizes, strict=True):
            refs.append(
                RowRef(memory_id(system_id, original), table, original, reasons[code], size)
            )
        originals.clear()  # each table's ids are let go as soon as they are RowRefs
    return refs


def load_batches(
    snapshot_db: Path,
    system_id: str,
    refs: Sequence[RowRef],
    max_items: int,
    max_bytes: int,
    redact: bool,
    run: Runner | None = None,
) -> tuple[list[list[Memory]], dict[str, str], Redactions]:
    """:func:`~akoshad.duckdb_commands.load_batches_here`, in a child."""
    skipped: dict[str, str] = {}
    request = {"ids": wanted_ids(refs, skipped), "max_items": max_items, "max_bytes": max_bytes}
    request["redact"] = redact
    answer = _call("batches", snapshot_db, [system_id], request, run)
    parts = [[_memory(m) for m in batch] for batch in answer["batches"]]
    return parts, {**skipped, **answer["skipped"]}, answer["found"]


def build_memories_json(
    snapshot_db: Path,
    system_id: str,
    refs: Sequence[RowRef],
    chunk: int,
    redact: bool,
    run: Runner | None = None,
    *,
    out: Path | None = None,
    on_retry: Callable[[], None] | None = None,
) -> tuple[Path, list[str], Redactions]:
    """:func:`~akoshad.duckdb_commands.write_memories_json` in a child, into a private file
    (mode 0600) beside the copy (``out``: one made by :func:`memories_file`): its path (the
    caller uploads it as a stream, also while it is written, and removes it), the ids it
    holds and the redactions made. Never held whole in memory: a large store's file is
    hundreds of MiB. Rows with a problem are left out. The child appends to the file and
    never goes back; should DuckDB run out of memory, ``on_retry`` is called before the file
    is written again from the start."""
    wanted = wanted_ids(refs, {})
    return build_memories_json_of(
        snapshot_db, system_id, wanted, chunk, redact, run, out=out, on_retry=on_retry
    )


def build_memories_json_of(
    snapshot_db: Path,
    system_id: str,
    wanted: dict[str, list[str]],
    chunk: int,
    redact: bool,
    run: Runner | None = None,
    *,
    out: Path | None = None,
    on_retry: Callable[[], None] | None = None,
) -> tuple[Path, list[str], Redactions]:
    """:func:`build_memories_json` of the rows named by ``wanted`` ({table: original ids},
    :func:`~akoshad.akosha.rows.wanted_ids`): a big store's 100,000s of rows cost their
    original ids only, not a :class:`RowRef` each, while the file is built."""
    name = str(out if out is not None else memories_file(snapshot_db))
    try:
        request = {"ids": wanted, "chunk": chunk, "redact": redact}
        argv = [system_id, name]
        answer = _call("memories_json", snapshot_db, argv, request, run, on_retry)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    # the child names the rows it left out: the ids written are made from the caller's own
    left_out = set(answer["left_out"])
    ids = [memory_id(system_id, o) for originals in wanted.values() for o in originals]
    if left_out:
        ids = [i for i in ids if i not in left_out]
    return Path(name), ids, answer["found"]


def memories_file(snapshot_db: Path) -> Path:
    """A new empty private file (mode 0600) for ``memories.json``, beside the copy."""
    fd, name = tempfile.mkstemp(prefix=".memories-", suffix=".json", dir=snapshot_db.parent)
    os.close(fd)
    return Path(name)


def _memory(raw: Memory) -> Memory:
    """A memory as the child sent it: an embedding that came as a string is RawJSON."""
    if isinstance(raw.get("embedding"), str):
        raw["embedding"] = RawJSON(raw["embedding"])
    return raw


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m akoshad.duckdb_worker COMMAND DB [SYSTEM_ID [OUT]] < request.json``: the
    child, answering one command of :mod:`akoshad.duckdb_commands`; with ``--serve``, the
    long-lived child answering request frames until its stdin ends."""
    args = sys.argv[1:] if argv is None else list(argv)
    if args == [SERVE_ARG]:
        kept = keep_copies()
        return serve_frames(handle, after=trim, idle=(KEEP_SECONDS, kept.let_go))
    return serve(handle, args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
