"""``GET /metrics`` served by aiohttp on the daemon's event loop.

Imported only when ``metrics_listen`` is set: ``aiohttp.web`` costs about 2 MiB resident.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from loguru import logger
from prometheus_client import CONTENT_TYPE_LATEST

from akoshad.runtime.metrics import Metrics
from akoshad.runtime.pass_metrics import PassMetrics

StatusSource = Callable[[], Awaitable[Mapping[str, Any]]]


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

    async def start(self) -> None:
        """Bind and serve; raises ``OSError`` when the address cannot be bound."""
        app = web.Application()
        app.router.add_get("/metrics", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        logger.info("metrics served at http://{}:{}/metrics", self.host, self.port)

    async def close(self) -> None:
        """Stop serving; idempotent."""
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
