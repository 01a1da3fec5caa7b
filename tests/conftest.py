"""Fixtures for the whole suite, one plugin module per server the tests talk to.

- ``tests.s3server``: ``s3_server`` (session: one SeaweedFS ``weed mini``, one bucket),
  ``s3`` (the same server, restarted if a test left it stopped), ``system_id`` (a fresh
  id, hence key prefix, per test). Tests using them are marked ``s3``.
- ``tests.akosha_fixtures``: the fake Akosha MCP server.

To add fixtures: put them in a module of their own and list it here (or add small, generic
ones below).
"""

pytest_plugins = ["tests.s3server", "tests.akosha_fixtures"]
