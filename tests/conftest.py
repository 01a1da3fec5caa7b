"""Fixtures for the whole suite, one plugin module per server the tests talk to.

- ``tests.s3server``: ``s3_server`` (session: one SeaweedFS ``weed mini``, one bucket),
  ``s3`` (the same server, restarted if a test left it stopped), ``system_id`` (a fresh
  id, hence key prefix, per test). Tests using them are marked ``s3``.
- ``tests.akosha_fixtures``: the fake Akosha MCP server.

Files go in ``tmp_path``; a socket that needs a short path goes in ``tests.tmpdirs.short_dir()``,
whose folders are removed when the run ends (below). The suite leaves nothing in the system
temp folder (``tests/unit/test_temp_hygiene.py`` holds it).

To add fixtures: put them in a module of their own and list it here (or add small, generic
ones below).
"""

from __future__ import annotations

import gc
import signal
from collections.abc import Iterator

import pytest

from tests.tmpdirs import remove_all

pytest_plugins = ["tests.s3server", "tests.akosha_fixtures"]


def pytest_configure(config: pytest.Config) -> None:
    """A suite started in the background (``nohup``, ``cmd &`` in a script) inherits Ctrl-C
    ignored, and so would every akoshad the tests start: the tests that send it SIGINT
    (an interrupted restore, drill or sync) need it taken as at a terminal."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the short folders made for sockets during this run."""
    remove_all()


@pytest.fixture(autouse=True)
def _collector_as_it_was() -> Iterator[None]:
    """A command run in process (``entry.main``, ``run_daemon``) freezes the objects of
    the moment and raises the collector's threshold (``akoshad.collector``): undone after
    each test, so later tests' garbage is collected as usual."""
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    if enabled:
        gc.enable()
