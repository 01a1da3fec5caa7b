"""Talking to Akosha: the MCP streamable-HTTP client, memory rows and their encodings.

``client`` speaks MCP over HTTP (sessions, retries), ``sse`` reads answers sent as
server-sent events, ``results`` says what a reply means, ``rows`` reads memories
from a private copy of ``reflection.duckdb`` (opened by ``duckdb_copy``), ``encoding``
encodes them, ``redact`` removes secrets from memory text before it leaves the machine.
"""
