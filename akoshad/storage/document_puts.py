"""Sending the shared documents of a format-2 upload (index parts, chunk lists) to a
target before its manifest: the ones a writer without ``known_documents`` must still send
(:func:`missing_documents`), a batch PUT a few at once (:func:`put_documents`), or PUT one
by one as :func:`~akoshad.storage.format2.build_manifest2` makes them
(:func:`build_and_put`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence

from akoshad.storage.documents import DOCUMENT_CONTENT_TYPE
from akoshad.storage.format2 import DocumentSink, Format2Manifest
from akoshad.targets.base import Target

DOCUMENTS_IN_FLIGHT = 8  # index parts and chunk lists PUT at once


async def missing_documents(
    target: Target, documents: Sequence[tuple[str, bytes]], max_in_flight: int = 8
) -> list[tuple[str, bytes]]:
    """The documents not in ``target`` yet (a ``head`` each, ``max_in_flight`` at once):
    for a writer that has no ``known_documents`` (its state was lost)."""
    gate = asyncio.Semaphore(max_in_flight)

    async def present(key: str) -> bool:
        async with gate:
            return await target.head(key) is not None

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(present(key)) for key, _ in documents]
    return [doc for doc, task in zip(documents, tasks, strict=True) if not task.result()]


async def put_documents(target: Target, documents: list[tuple[str, bytes]]) -> int:
    """PUT the shared documents (a few at once, each awaited); the bytes sent."""
    gate = asyncio.Semaphore(DOCUMENTS_IN_FLIGHT)

    async def one(key: str, data: bytes) -> int:
        async with gate:
            return await target.put_bytes(key, data, DOCUMENT_CONTENT_TYPE)

    results = await asyncio.gather(*(one(k, d) for k, d in documents), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return sum(r for r in results if isinstance(r, int))


class _Stopped(Exception):
    """A document PUT failed: the build stops at its next document."""


async def build_and_put(
    target: Target, build: Callable[[DocumentSink], Format2Manifest]
) -> tuple[Format2Manifest, int]:
    """Run ``build`` (a :func:`build_manifest2` given its ``sink``) in a thread and PUT
    each document it makes as soon as it is made, :data:`DOCUMENTS_IN_FLIGHT` at once, so
    the first parts go up while the last are made: (what it built, the bytes sent). Every
    PUT and the build are awaited; the first failure is raised (a failed PUT ends the
    build at its next document, and no further document is sent)."""
    loop = asyncio.get_running_loop()
    made: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()
    stop = threading.Event()

    def sink(key: str, data: bytes) -> None:
        if stop.is_set():
            raise _Stopped
        loop.call_soon_threadsafe(made.put_nowait, (key, data))

    def run() -> Format2Manifest:
        try:
            return build(sink)
        finally:
            loop.call_soon_threadsafe(made.put_nowait, None)

    builder = asyncio.ensure_future(asyncio.to_thread(run))
    gate = asyncio.Semaphore(DOCUMENTS_IN_FLIGHT)
    puts: list[asyncio.Task[int]] = []
    failed: list[BaseException] = []

    async def one(key: str, data: bytes) -> int:
        try:
            return await target.put_bytes(key, data, DOCUMENT_CONTENT_TYPE)
        except Exception as exc:
            failed.append(exc)
            stop.set()
            return 0
        finally:
            gate.release()

    try:
        while (doc := await made.get()) is not None:
            await gate.acquire()
            if failed:
                gate.release()
                continue
            puts.append(asyncio.create_task(one(*doc)))
    except BaseException:
        stop.set()
        for task in puts:
            task.cancel()
        raise
    finally:
        await asyncio.gather(*puts, return_exceptions=True)
        await asyncio.gather(builder, return_exceptions=True)
    if failed:
        raise failed[0]
    return builder.result(), sum(t.result() for t in puts)
