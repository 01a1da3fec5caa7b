"""What akoshad's own sd_notify sender does that the ``sdnotify`` package does not."""

from __future__ import annotations

import socket
import uuid

from akoshad.runtime.notify import Notifier


def test_a_status_beyond_latin_1_arrives_as_utf8_on_a_non_blocking_socket() -> None:
    name = f"akoshad-test-{uuid.uuid4().hex}"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind("\0" + name)  # an abstract address: nothing on disk
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        n.status("uploading café ✓ 日本")
        s.settimeout(2)
        assert s.recv(4096).decode("utf-8") == "STATUS=uploading café ✓ 日本"
        assert n.failures == 0 and list(n.sent) == ["STATUS=uploading café ✓ 日本"]
        assert n._notifier is not None and n._notifier.socket is not None
        assert n._notifier.socket.getblocking() is False
    finally:
        s.close()
