"""What akoshad's own sd_notify sender does that the ``sdnotify`` package does not."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path

from akoshad.notify import Notifier


def test_a_status_beyond_latin_1_arrives_as_utf8_on_a_non_blocking_socket() -> None:
    path = Path(tempfile.mkdtemp(prefix="ak", dir="/tmp")) / "n.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    try:
        n = Notifier({"NOTIFY_SOCKET": str(path)})
        n.status("uploading café ✓ 日本")
        s.settimeout(2)
        assert s.recv(4096).decode("utf-8") == "STATUS=uploading café ✓ 日本"
        assert n.failures == 0 and list(n.sent) == ["STATUS=uploading café ✓ 日本"]
        assert n._notifier is not None and n._notifier.socket is not None
        assert n._notifier.socket.getblocking() is False
    finally:
        s.close()
        path.unlink(missing_ok=True)
        path.parent.rmdir()
