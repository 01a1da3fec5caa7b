"""Fixtures for the whole suite: the real S3 server and the fake Akosha MCP server."""

pytest_plugins = ["tests.s3server", "tests.akosha_fixtures"]
