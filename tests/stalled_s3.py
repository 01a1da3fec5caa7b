"""An S3 endpoint that hangs every upload: a pass that uses it stays in hand."""

from __future__ import annotations

import socket
import threading

EMPTY_LISTING = (
    b'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult '
    b'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>b</Name><Prefix></Prefix>'
    b"<KeyCount>0</KeyCount><MaxKeys>1</MaxKeys><IsTruncated>false</IsTruncated>"
    b"</ListBucketResult>"
)


class StalledServer:
    """An S3 endpoint that hangs: it answers the bucket check (a ListObjectsV2, so akoshad
    goes on to write) with an empty listing and the owner record (``owner.json``: one writer
    per system id) like a bucket would, and never answers anything else."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []  # connections left hanging
        self._stop = threading.Event()
        self.owner: bytes | None = None  # the owner.json body akoshad wrote
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                head, _, buf = buf.partition(b"\r\n\r\n")
                line = head.split(b"\r\n")[0]
                if b"/owner.json" in line:
                    buf = self._owner(conn, line, head, buf)
                    continue
                if not (head.startswith(b"GET ") and b"list-type=2" in line):
                    self.conns.append(conn)  # hang: never answered
                    return
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\n"
                    + f"Content-Length: {len(EMPTY_LISTING)}\r\n\r\n".encode()
                    + EMPTY_LISTING
                )
        except OSError:
            return

    def _owner(self, conn: socket.socket, line: bytes, head: bytes, buf: bytes) -> bytes:
        """GET/HEAD/PUT of the owner record, answered as a bucket would; returns what is
        left in the buffer after the request."""
        length = 0
        for h in head.split(b"\r\n")[1:]:
            name, _, value = h.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
            if name.strip().lower() == b"expect" and b"100-continue" in value.lower():
                conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        while len(buf) < length:
            chunk = conn.recv(65536)
            if not chunk:
                break
            buf += chunk
        body, buf = buf[:length], buf[length:]
        method = line.split(b" ")[0]
        if method == b"PUT":
            self.owner = body
            conn.sendall(b'HTTP/1.1 200 OK\r\nETag: "1"\r\nContent-Length: 0\r\n\r\n')
        elif self.owner is None:
            missing = (
                b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchKey</Code>'
                b"<Message>no such key</Message></Error>"
            )
            payload = b"" if method == b"HEAD" else missing
            conn.sendall(
                b"HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\n"
                + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
        else:
            payload = b"" if method == b"HEAD" else self.owner
            conn.sendall(
                b'HTTP/1.1 200 OK\r\nETag: "1"\r\nContent-Type: application/json\r\n'
                + f"Content-Length: {len(self.owner)}\r\n\r\n".encode()
                + payload
            )
        return buf

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for c in self.conns:
            c.close()
        self.sock.close()


def stalled_cloud(server: StalledServer, system_id: str, **extra: object) -> dict[str, object]:
    """``cloud_sync`` settings for a bucket on ``server``."""
    return {
        "system_id": system_id,
        "cloud_bucket": "b",
        "cloud_endpoint": f"http://127.0.0.1:{server.port}",
        "access_key_id": "AKIAEXAMPLEKEY",
        "secret_access_key": "x" * 30,
        "max_retries": 0,
        **extra,
    }
