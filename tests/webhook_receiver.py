"""A real webhook receiver (aiohttp.web on 127.0.0.1) that checks the HMAC signature.

It runs its own event loop in a thread so that synchronous tests (driving a daemon
subprocess) can start it, stop it and start it again on the same port.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.s3server import free_port


@dataclass
class Received:
    """One POST as the receiver saw it."""

    body: bytes
    headers: dict[str, str]
    signature_ok: bool
    at: float = field(default_factory=time.monotonic)

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


class Receiver:
    """``mode``: ``ok`` (204), ``fail`` (500) or ``hang`` (never answers)."""

    def __init__(self, secret: str | None = None, mode: str = "ok", port: int | None = None):
        self.secret = secret
        self.mode = mode
        self.port = port or free_port()
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def url(self, userinfo: str = "", path: str = "/hook") -> str:
        return f"http://{userinfo + '@' if userinfo else ''}127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        header = request.headers.get("X-Akoshad-Signature")
        ok = False
        if self.secret is not None and header is not None:
            want = "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()
            ok = hmac.compare_digest(want, header)
        with self._lock:
            self.received.append(Received(body, dict(request.headers), ok))
        if self.mode == "hang":
            await asyncio.sleep(3600)
        return web.Response(status=500 if self.mode == "fail" else 204)

    def start(self) -> Receiver:
        ready = threading.Event()

        def main() -> None:
            loop = self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, shutdown_timeout=0.5)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
            loop.run_until_complete(site.start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        assert ready.wait(10), "webhook receiver did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop = self._thread = None

    def events(self, name: str | None = None) -> list[Received]:
        with self._lock:
            items = list(self.received)
        return [r for r in items if name is None or r.payload.get("event") == name]
