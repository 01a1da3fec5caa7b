"""Reading a target at a bounded rate, and never writing to it (what a restore drill sees).

``TokenBucket`` spends bytes against a rate (``drill_max_mbps``) so a drill's downloads
never starve the uploads beside it; ``DrillReader`` wraps a started target, passes reads
and listings through, and refuses every write or delete.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from akoshad.errors import PermanentError
from akoshad.targets.base import Compression, StoredObject, Target


class TokenBucket:
    """At most ``rate`` bytes per second on average, bursts of up to ``burst`` bytes."""

    def __init__(
        self,
        rate: float,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.burst = rate if burst is None else burst
        self.tokens = self.burst
        self._clock = clock
        self._sleep = sleep
        self._stamp = clock()

    async def take(self, n: int) -> None:
        """Spend ``n`` bytes; sleeps off any debt (a chunk larger than the burst is fine)."""
        now = self._clock()
        self.tokens = min(self.burst, self.tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        self.tokens -= n
        if self.tokens < 0:
            await self._sleep(-self.tokens / self.rate)


class DrillReader:
    """A target seen by a drill: reads through a token bucket, never writes or deletes."""

    def __init__(self, target: Target, bucket: TokenBucket) -> None:
        self.inner = target
        self.bucket = bucket
        self.name = target.name
        self.bytes_read = 0

    async def start(self, *, clean_up: bool = True) -> None:
        return None  # the inner target is started (and closed) by its owner

    async def close(self) -> None:
        return None

    async def read(self, key: str) -> AsyncIterator[bytes]:
        async for chunk in self.inner.read(key):
            self.bytes_read += len(chunk)
            await self.bucket.take(len(chunk))
            yield chunk

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        """A ranged read (chunks of a pack), paid for before it goes out."""
        await self.bucket.take(length)
        data = await self.inner.read_range(key, offset, length)
        self.bytes_read += len(data)
        return data

    async def head(self, key: str) -> int | None:
        return await self.inner.head(key)

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:
        async for key in self.inner.list_keys(prefix):
            yield key

    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        raise PermanentError("a drill only reads from the target")

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        raise PermanentError("a drill only reads from the target")

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        raise PermanentError("a drill only reads from the target")

    async def delete_keys(self, keys: list[str]) -> None:
        raise PermanentError("a drill only reads from the target")
