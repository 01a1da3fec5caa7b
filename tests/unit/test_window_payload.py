"""A file window as a request body: sent by the kernel (sendfile) on a plain connection,
piece by piece where it cannot be, and never shorter than announced."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from akoshad.targets.s3 import window_payload
from akoshad.targets.s3.parts import _FileWindow
from tests.helpers import served

MiB = 1024 * 1024


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A loopback HTTP server that keeps every body it receives whole."""
    bodies: list[bytes] = []

    async def put(request: web.Request) -> web.Response:
        bodies.append(await request.read())  # a body cut short raises: never kept
        return web.Response(text=str(len(bodies[-1])))

    app = web.Application(client_max_size=64 * MiB)
    app.router.add_put("/", put)
    async with served(app) as base:
        yield f"{base}/", bodies


def sendfile_calls(monkeypatch: pytest.MonkeyPatch, *, refuse: bool = False) -> list[int]:
    """Record the byte count of every ``loop.sendfile`` call of the running loop;
    ``refuse``: each call raises as a loop that cannot send files does."""
    loop = asyncio.get_running_loop()
    real = loop.sendfile
    calls: list[int] = []

    async def counted(
        transport: Any, file: Any, offset: int = 0, count: int | None = None, **kw: Any
    ) -> int:
        calls.append(count or 0)
        if refuse:
            raise RuntimeError("sendfile is not supported for this transport")
        return await real(transport, file, offset, count, **kw)

    monkeypatch.setattr(loop, "sendfile", counted)
    return calls


def data_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


async def put_window(url: str, window: Any, **kw: Any) -> str:
    async with aiohttp.ClientSession() as session, session.put(url, data=window, **kw) as resp:
        resp.raise_for_status()
        return await resp.text()


async def test_a_window_goes_out_with_sendfile_byte_for_byte(
    receiver: tuple[str, list[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, bodies = receiver
    window_payload.register()
    window_payload.register()  # idempotent: registered once
    firsts = window_payload.payload.PAYLOAD_REGISTRY._first
    assert sum(f is window_payload.WindowPayload for f, _ in firsts) == 1
    data = data_file(tmp_path / "pack", 10 * MiB)
    calls = sendfile_calls(monkeypatch)
    fd = os.open(tmp_path / "pack", os.O_RDONLY)
    try:
        # the middle of the file: the window's offset in the file is honoured
        window = _FileWindow(fd, 3 * MiB + 17, 5 * MiB)
        window.seek(0)
        assert await put_window(url, window, headers={"Content-Length": str(5 * MiB)}) == str(
            5 * MiB
        )
        window.close()
    finally:
        os.close(fd)
    assert bodies == [data[3 * MiB + 17 : 8 * MiB + 17]]
    assert calls == [5 * MiB]


async def test_a_payload_sent_twice_sends_the_same_bytes(
    receiver: tuple[str, list[bytes]], tmp_path: Path
) -> None:
    url, bodies = receiver
    data = data_file(tmp_path / "f", 2 * MiB)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        window = _FileWindow(fd, 0, 2 * MiB)
        window.seek(MiB)
        body = window_payload.WindowPayload(window)  # from where the window stood
        assert body.size == MiB
        await put_window(url, body)  # type: ignore[arg-type]
        await put_window(url, body)  # type: ignore[arg-type]  # a redirect, say
        window.close()
    finally:
        os.close(fd)
    assert bodies == [data[MiB:], data[MiB:]]


async def test_a_chunked_body_is_written_piece_by_piece(
    receiver: tuple[str, list[bytes]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, bodies = receiver
    window_payload.register()
    data = data_file(tmp_path / "f", 3 * MiB + 5)
    calls = sendfile_calls(monkeypatch)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        window = _FileWindow(fd, 0, len(data))
        await put_window(url, window, chunked=True)
        window.close()
    finally:
        os.close(fd)
    assert bodies == [data]
    assert calls == []  # chunked framing: the kernel cannot send the bytes as they are


async def test_a_window_the_file_no_longer_holds_is_not_sent_short(
    receiver: tuple[str, list[bytes]], tmp_path: Path
) -> None:
    url, bodies = receiver
    window_payload.register()
    data_file(tmp_path / "f", 4 * MiB)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        window = _FileWindow(fd, 0, 4 * MiB)
        os.truncate(tmp_path / "f", 3 * MiB)  # shrank after the window was cut
        with pytest.raises(aiohttp.ClientError) as caught:
            await put_window(url, window, headers={"Content-Length": str(4 * MiB)})
        window.close()
    finally:
        os.close(fd)
    assert "shrank" in f"{caught.value} {caught.value.__cause__!r}"
    await asyncio.sleep(0.2)
    assert bodies == []  # the server never saw a whole body


def test_only_file_windows_take_the_payload() -> None:
    with pytest.raises(TypeError, match="not a file window"):
        window_payload.WindowPayload(b"bytes")


async def test_a_loop_that_cannot_send_files_gets_the_body_piece_by_piece(
    receiver: tuple[str, list[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, bodies = receiver
    window_payload.register()
    data = data_file(tmp_path / "f", 2 * MiB + 3)
    refused = sendfile_calls(monkeypatch, refuse=True)
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        window = _FileWindow(fd, 0, len(data))
        await put_window(url, window, headers={"Content-Length": str(len(data))})
        window.close()
    finally:
        os.close(fd)
    assert refused == [len(data)]
    assert bodies == [data]
