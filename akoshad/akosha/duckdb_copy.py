"""Opening a private snapshot copy of a DuckDB store: read-only and sandboxed.

Only ever open the PRIVATE snapshot copy (the live file is locked by session-buddy and
opening it, even read-only, breaks the writer). The copy is opened read-only, so its bytes
(and its ``.wal``, replayed in memory) are left untouched. DuckDB is imported only when a
copy is opened (never by the daemon: see :mod:`akoshad.duckdb_worker`). The long-lived
child keeps its last copy open for the pass's next request on it (:class:`KeptCopy`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DuckDBSetting = str | bool | int | float | list[str]
# Every store copy is opened with these: a view in a hostile file cannot read a file outside
# data_dir (``read_text('~/.ssh/...')``) or fetch anything, nor load an extension.
DUCKDB_SAFE: dict[str, DuckDBSetting] = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
}


def open_copy(snapshot_db: Path, settings: Mapping[str, DuckDBSetting] | None = None) -> Any:
    """A read-only connection to a private copy, with :data:`DUCKDB_SAFE` (and ``settings``:
    memory limit, threads, temp directory).

    DuckDB refuses a ``temp_directory`` set once external access is off, and the order it
    applies a config in is not documented: with one, external access is turned off by a
    ``SET`` right after the open, before any query runs (and checked)."""
    import duckdb

    if not snapshot_db.is_file():
        raise FileNotFoundError(f"snapshot copy {snapshot_db} does not exist")
    config = {**(settings or {}), **DUCKDB_SAFE}
    if "temp_directory" not in config:
        return duckdb.connect(str(snapshot_db), read_only=True, config=config)
    del config["enable_external_access"]
    con = duckdb.connect(str(snapshot_db), read_only=True, config=config)
    try:
        con.execute("SET enable_external_access = false")
        if con.execute("SELECT current_setting('enable_external_access')").fetchone() != (False,):
            raise RuntimeError("DuckDB did not turn external access off")
    except BaseException:
        con.close()
        raise
    return con


class KeptCopy:
    """The long-lived DuckDB child's last open copy, kept for the next request on it.

    Validating a copy, listing its rows and building ``memories.json`` are three requests
    in a pass: the copy (and its WAL, replayed) is opened once for them. The connection is
    reused only for the same copy, unchanged on disk (path, inode, size and mtime of the
    file and of its WAL), opened with the same settings; a query that failed on it closes it.
    :meth:`let_go` closes it (the child calls it once it has been idle a moment: the copy's
    disk space and DuckDB's buffers are not held after the pass)."""

    def __init__(self) -> None:
        self._key: tuple[object, ...] | None = None
        self._con: Any = None

    @staticmethod
    def _key_of(snapshot_db: Path, settings: Mapping[str, DuckDBSetting]) -> tuple[object, ...]:
        ids: list[object] = [str(snapshot_db), repr(sorted(settings.items()))]
        for path in (snapshot_db, snapshot_db.with_name(snapshot_db.name + ".wal")):
            try:
                st = os.stat(path)
                ids.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
            except FileNotFoundError:
                ids.append(None)
        return tuple(ids)

    @contextmanager
    def open(
        self, snapshot_db: Path, settings: Mapping[str, DuckDBSetting] | None = None
    ) -> Iterator[Any]:
        """:func:`open_copy`, or the connection kept open on the same copy."""
        key = self._key_of(snapshot_db, settings or {})
        if key != self._key:
            self.let_go()
            self._con = open_copy(snapshot_db, settings)
            self._key = key
        ok = False
        try:
            yield self._con
            ok = True
        finally:
            if not ok:
                self.let_go()

    def let_go(self) -> None:
        """Close the kept connection (if any)."""
        con, self._con, self._key = self._con, None, None
        if con is not None:
            con.close()


@contextmanager
def opened(
    snapshot_db: Path,
    settings: Mapping[str, DuckDBSetting] | None = None,
    kept: KeptCopy | None = None,
) -> Iterator[Any]:
    """A read-only connection to a copy for one request: ``kept``'s (reused), else opened
    here and closed after it."""
    if kept is not None:
        with kept.open(snapshot_db, settings) as con:
            yield con
        return
    con = open_copy(snapshot_db, settings)
    try:
        yield con
    finally:
        con.close()
