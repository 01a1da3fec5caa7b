"""``GET /metrics`` served by aiohttp on the daemon's event loop.

Imported only when ``metrics_listen`` is set: ``aiohttp.web`` costs about 2 MiB resident.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST

from akoshad.ratelog import RateLimitedLog
from akoshad.runtime.metrics import Metrics
from akoshad.runtime.pass_metrics import PassMetrics

# /metrics has no authentication: any local process may connect. Each connection holds a
# file descriptor of the daemon's, so only this many are served at once (a scraper needs
# one or two), with a short listen backlog (an accept burst may pass the cap by that
# much), and an idle one is closed after IDLE_SECONDS (aiohttp's default is an hour).
MAX_CONNECTIONS = 32
LISTEN_BACKLOG = 16
IDLE_SECONDS = 75.0

StatusSource = Callable[[], Awaitable[Mapping[str, Any]]]
RETRY_SECONDS = 60.0  # an address that could not be bound is tried again this often


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9464`` for IPv6) -> (host, port); validated by config."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class MetricsServer:
    """``GET /metrics`` on ``listen``, served by aiohttp on the running event loop."""

    def __init__(self, metrics: PassMetrics, status: StatusSource, listen: str) -> None:
        if not isinstance(metrics, Metrics):  # wiring makes them when metrics_listen is set
            raise TypeError("/metrics needs the Prometheus metrics, not NoMetrics")
        self.metrics = metrics
        self._status = status
        self.host, self.port = parse_listen(listen)
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None
        self._log = RateLimitedLog(300.0)

    async def start(self) -> None:
        """Bind and serve; raises ``OSError`` when the address cannot be bound."""
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, keepalive_timeout=IDLE_SECONDS
        )
        await runner.setup()
        handlers = runner.server
        assert handlers is not None  # set by setup()
        try:
            self._listener = await asyncio.get_running_loop().create_server(
                lambda: self._connection(handlers),
                self.host,
                self.port,
                backlog=LISTEN_BACKLOG,
                reuse_address=True,
            )
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        logger.info("metrics served at http://{}:{}/metrics", self.host, self.port)

    def _connection(self, handlers: web.Server) -> asyncio.BaseProtocol:
        """A handler for a new connection, or one that closes it at once past the cap."""
        if len(handlers.connections) >= MAX_CONNECTIONS:
            self._log.error(
                "metrics-cap",
                "/metrics: {} connections open, refusing more until they close",
                MAX_CONNECTIONS,
            )
            return _Refused()
        return handlers()

    async def close(self) -> None:
        """Stop serving; idempotent."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, _request: web.Request) -> web.Response:
        try:
            status = await self._status()
        except Exception as exc:  # the state may be closing: say so, never a traceback
            logger.warning("metrics scrape failed: {}", exc)
            return web.Response(status=503, text=f"akoshad status unavailable: {exc}\n")
        body = self.metrics.render(status)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _bind(server: MetricsServer, listen: str) -> str | None:
    """Bind ``server``: None when it serves, else why it cannot."""
    try:
        await server.start()
    except OSError as exc:
        return f"metrics_listen {listen} cannot be served ({exc}); tried again every minute"
    return None


async def serve_metrics(
    server: MetricsServer, listen: str, report: Callable[[str | None], None]
) -> bool:
    """Bind ``server``; on failure log it once and ``report`` the problem (shown in
    ``status``), on success ``report(None)``. True when it serves."""
    problem = await _bind(server, listen)
    if problem is not None:
        logger.error("{}", problem)
    report(problem)
    return problem is None


async def start_metrics(
    server: MetricsServer,
    listen: str,
    report: Callable[[str | None], None],
    stack: AsyncExitStack,
    stop_event: asyncio.Event,
) -> Coroutine[Any, Any, None] | None:
    """Serve ``server`` on ``listen`` until ``stack`` closes. An address that cannot be
    bound is logged and ``report``-ed (backing up goes on); the coroutine returned binds it
    again every minute until a stop (None: it serves, nothing to retry)."""
    stack.push_async_callback(server.close)
    if await serve_metrics(server, listen, report):
        return None
    return keep_trying(server, listen, report, stop_event)


async def keep_trying(
    server: MetricsServer,
    listen: str,
    report: Callable[[str | None], None],
    stop_event: asyncio.Event,
) -> None:
    """Until it serves or the daemon stops: bind ``server`` again every
    :data:`RETRY_SECONDS` (a port held by a process that has not let go yet)."""
    while not stop_event.is_set():
        try:
            await asyncio.wait_for(stop_event.wait(), RETRY_SECONDS)
        except TimeoutError:
            pass
        else:
            return
        problem = await _bind(server, listen)
        report(problem)
        if problem is None:
            return


class _Refused(asyncio.Protocol):
    """A connection past ``MAX_CONNECTIONS``: closed as soon as it is accepted."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            transport.abort()  # a reset: the descriptor is free at once
        else:
            transport.close()
