"""The state database (SQLite, WAL) and what it keeps.

One connection, used from one dedicated thread (``db``: open, migrations, transactions,
setting a corrupt file aside, a small key/value table). :class:`~akoshad.store.db.StateDB`
is made of one part per thing it keeps: ``queue`` (the durable queue), ``ledger`` (files
uploaded, the upload history, skipped files), ``memories`` (delivered to Akosha, skipped,
carried by a cloud upload) and ``webhook_outbox``; ``records`` holds the rows it hands out.
Nothing here knows about targets or the pipeline.
"""
