"""Consistent private copies of store files, taken without disturbing the live writer.

``snapshot`` holds the :class:`~akoshad.pipeline.capture.snapshot.Snapshotter` (one capture:
stat, kind, then the capture of that kind), made of ``plain`` (a stable copy, or a large
file where it lies), ``duckdb`` (the database and its WAL as one pair, validated in a child
process) and ``sqlite`` (the backup API); ``files`` holds what a capture hands out and the
helpers they share. What a capture established is recorded for the manifest
(``akoshad.manifest.facts``).
"""
