"""The state database (SQLite, WAL) and what it keeps.

One connection, used from one dedicated thread: the durable queue, the ledger of uploaded
files, the upload history, the memories already delivered to Akosha, the webhook outbox and
a small key/value table. Nothing here knows about targets or the pipeline.
"""
