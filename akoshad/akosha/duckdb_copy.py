"""Opening a private snapshot copy of a DuckDB store: read-only and sandboxed.

Only ever open the PRIVATE snapshot copy (the live file is locked by session-buddy and
opening it, even read-only, breaks the writer). The copy is opened read-only, so its bytes
(and its ``.wal``, replayed in memory) are left untouched. DuckDB is imported only when a
copy is opened (never by the daemon: see :mod:`akoshad.duckdb_worker`).
"""

from __future__ import annotations

from collections.abc import Mapping
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
