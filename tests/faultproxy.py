"""A fault-injecting HTTP reverse proxy for tests: akoshad -> proxy -> real server.

Each request is, by a seeded draw, forwarded untouched or answered with a fault:
``error`` (500 InternalError or 503 SlowDown with Retry-After), ``reset`` (the connection
is cut in the middle of the request body), ``stall`` (no answer for ``stall_seconds``,
then the connection is cut). ``down()`` / ``up()`` stop and restart listening, like a
server that is gone for a while. It runs in its own thread with its own event loop so
that tests (and subprocesses pointed at it) can use it from anywhere.

Host headers are forwarded unchanged, so SigV4 signatures made for the proxy's address
stay valid upstream.
"""

from __future__ import annotations

import asyncio
import random
import socket
import threading
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field

from aiohttp import ClientSession, ClientTimeout, web

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}
SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FaultPlan:
    """Shares of requests that get each fault (the rest are forwarded)."""

    error: float = 0.0
    reset: float = 0.0
    stall: float = 0.0
    stall_seconds: float = 2.0
    seed: int = 1
    # a request carrying this header gets ``refusal`` (status, code, message): a server
    # that does not implement what the header asks for
    refuse_header: str | None = None
    refusal: tuple[int, str, str] = (
        501,
        "NotImplemented",
        "A header you provided implies functionality that is not implemented",
    )

    @property
    def total(self) -> float:
        return self.error + self.reset + self.stall


@dataclass
class FaultStats:
    forwarded: int = 0
    faults: Counter[str] = field(default_factory=Counter)

    @property
    def injected(self) -> int:
        return sum(self.faults.values())


class FaultProxy:
    """Reverse proxy on 127.0.0.1:``port`` to ``upstream`` (``http://host:port``)."""

    def __init__(self, upstream: str, plan: FaultPlan | None = None, port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan = plan or FaultPlan()
        self.port = port or free_port()
        self.stats = FaultStats()
        self._rng = random.Random(self.plan.seed)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._client: ClientSession | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- lifecycle (called from the test thread) -------------------------------------
    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def down(self) -> None:
        """Stop listening: connections are refused until ``up()``."""
        self._call(self._site_stop())

    def up(self) -> None:
        self._call(self._site_start())

    def set_plan(self, plan: FaultPlan) -> None:
        with self._lock:
            self.plan = plan
            self._rng = random.Random(plan.seed)

    def _call(self, coro: object) -> object:
        fut: Future[object] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return fut.result(30)

    # ---- inside the proxy's loop -----------------------------------------------------
    async def _start(self) -> None:
        self._client = ClientSession(timeout=ClientTimeout(total=600), auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await self._site_start()

    async def _site_start(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def _site_stop(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()

    def _draw(self) -> str:
        with self._lock:
            x = self._rng.random()
            p = self.plan
        if x < p.error:
            return "error"
        if x < p.error + p.reset:
            return "reset"
        if x < p.total:
            return "stall"
        return "forward"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.plan.refuse_header and self.plan.refuse_header in request.headers:
            self.stats.faults["refused"] += 1
            await request.read()
            status, code, message = self.plan.refusal
            body = f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
            return web.Response(status=status, text=body, content_type="application/xml")
        fault = self._draw()
        if fault == "error":
            self.stats.faults["error"] += 1
            await request.read()
            if self._rng.random() < 0.5:
                return web.Response(
                    status=503,
                    body=SLOWDOWN,
                    headers={"Retry-After": "1"},
                    content_type="application/xml",
                )
            return web.Response(status=500, body=INTERNAL, content_type="application/xml")
        if fault == "reset":
            self.stats.faults["reset"] += 1
            await request.content.read(4096)  # part of the body, then cut
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if fault == "stall":
            self.stats.faults["stall"] += 1
            await asyncio.sleep(self.plan.stall_seconds)
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        return await self._forward(request)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._client.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body if body else None,
            allow_redirects=False,
            skip_auto_headers=("Content-Type", "User-Agent", "Accept", "Accept-Encoding"),
        ) as upstream:
            payload = await upstream.read()
            out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            self.stats.forwarded += 1
            if request.method == "HEAD":
                resp = web.Response(status=upstream.status, headers=out_headers)
                length = upstream.headers.get("Content-Length")
                if length is not None:
                    resp.headers["Content-Length"] = length
                return resp
            return web.Response(status=upstream.status, headers=out_headers, body=payload)
