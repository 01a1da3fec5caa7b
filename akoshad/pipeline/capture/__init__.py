"""Consistent private copies of store files, taken without disturbing the live writer.

DuckDB pairs (database + ``.wal``), SQLite databases and plain files are copied into a
private staging directory and validated there; what a capture established is recorded for
the manifest (``akoshad.manifest.facts``).
"""
