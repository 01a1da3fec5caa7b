"""What a target that can store a file while it is being written offers
(``S3Target.put_growing``), without importing the S3 client."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class WriterFailed(Exception):
    """The file's writer failed (its error is the cause): the upload was aborted."""


class Restarted(Exception):
    """The writer started the file over: what was sent of it is aborted."""


@runtime_checkable
class GrowingTarget(Protocol):
    """A target that stores a file while its writer appends to it."""

    async def put_growing(
        self,
        key: str,
        source: Path,
        writer: asyncio.Future[Any],
        restarted: threading.Event,
        before_send: Callable[[], Awaitable[None]],
    ) -> int:
        """Store ``source`` as ``key`` while ``writer`` appends to it; the object appears
        whole once the writer is done, or not at all (:class:`WriterFailed`,
        :class:`Restarted` when ``restarted`` was set); ``before_send`` is awaited before
        the first request. Bytes sent."""
        ...

    async def delete_keys(self, keys: list[str]) -> None:
        """Delete ``keys``."""
        ...
