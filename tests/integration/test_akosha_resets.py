"""A proxy in front of Akosha that resets a request body over its limit instead of
answering 413 (INTEROP.md: "a client behind a proxy may see only a reset"): the batch is
split, only the memory too large alone is skipped; an outage stays an outage."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import ClientSession, web

from akoshad.akosha.rejections import REJECTED_PREFIX, TOO_LARGE
from akoshad.pipeline.memory_sync import RESET_TRIES, DeliveryInterrupted
from tests.akosha_fixtures import AkoshaServer, add_rows
from tests.helpers import served
from tests.integration.test_memory_sync import Rig, ids

LIMIT = 200_000  # the proxy's body limit


class ResettingProxy:
    """Forwards to Akosha; a body over ``limit`` (any body with ``limit`` 0) is answered by
    closing the connection. ``resets`` counts them, ``bodies`` the sizes forwarded."""

    def __init__(self, upstream: str, limit: int) -> None:
        self.upstream = upstream
        self.limit = limit
        self.resets = 0
        self.bodies: list[int] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.method == "POST" and len(body) > self.limit:
            self.resets += 1
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)  # never sent: the connection is gone
        self.bodies.append(len(body))
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with (
            ClientSession() as up,
            up.request(request.method, self.upstream, data=body, headers=headers) as resp,
        ):
            data = await resp.read()
            keep = ("content-type", "mcp-session-id")
            out = {k: v for k, v in resp.headers.items() if k.lower() in keep}
            return web.Response(status=resp.status, body=data, headers=out)


@pytest.fixture
async def proxied(
    tmp_path: Path, akosha_server: AkoshaServer
) -> AsyncIterator[tuple[Rig, ResettingProxy]]:
    proxy = ResettingProxy(akosha_server.url, LIMIT)
    app = web.Application(client_max_size=64 * 2**20)
    app.router.add_route("*", "/mcp", proxy.handle)
    async with served(app) as base:
        rig = Rig(tmp_path, f"{base}/mcp")
        try:
            yield rig, proxy
        finally:
            await rig.close()


async def test_a_batch_reset_by_a_proxy_is_split_and_only_the_big_memory_skipped(
    proxied: tuple[Rig, ResettingProxy], akosha_server: AkoshaServer
) -> None:
    rig, proxy = proxied
    add_rows(rig.snapshot, "conversations_v2", 0, 3)
    add_rows(rig.snapshot, "conversations_v2", 3, 4, pad=300_000)  # alone over the limit
    add_rows(rig.snapshot, "conversations_v2", 4, 8)
    sync = await rig.sync()
    report = await sync.deliver(rig.snapshot)
    big = "testbox:c000003"
    assert akosha_server.stored() == ids("c", 0, 8) - {big}
    assert list(report.skipped) == [big]
    assert report.skipped[big].startswith(REJECTED_PREFIX + TOO_LARGE)
    assert "reset" in report.skipped[big]
    assert report.held == {}
    assert proxy.resets >= RESET_TRIES
    # the next delivery sends nothing again
    again = await sync.deliver(rig.snapshot)
    assert (again.pending, again.requests) == (0, 0)


async def test_a_proxy_that_resets_everything_is_an_outage_not_a_skip(
    proxied: tuple[Rig, ResettingProxy], akosha_server: AkoshaServer
) -> None:
    """Every request reset (a small ``ping`` too): nothing is split or skipped."""
    rig, proxy = proxied
    add_rows(rig.snapshot, "conversations_v2", 0, 4)
    sync = await rig.sync()
    assert (await sync.deliver(rig.snapshot)).delivered == 4  # the session is open
    add_rows(rig.snapshot, "conversations_v2", 4, 8)
    proxy.limit = 0
    with pytest.raises(DeliveryInterrupted, match="reset") as info:
        await sync.deliver(rig.snapshot)
    assert info.value.report.requests == RESET_TRIES  # tried again, never split
    assert (await sync.status())["skipped"] == 0
    proxy.limit = LIMIT
    report = await sync.deliver(rig.snapshot)
    assert (report.delivered, report.skipped) == (4, {})


async def test_a_refused_connection_is_not_split(tmp_path: Path) -> None:
    from tests.akosha_fixtures import free_port

    rig = Rig(tmp_path, f"http://127.0.0.1:{free_port()}/mcp")
    add_rows(rig.snapshot, "conversations_v2", 0, 4)
    try:
        sync = await rig.sync()
        with pytest.raises(DeliveryInterrupted, match="cannot connect") as info:
            await sync.deliver(rig.snapshot)
        assert info.value.report.requests == 1
        assert (await sync.status())["skipped"] == 0
    finally:
        await rig.close()
