"""The S3 target: any S3-compatible store (AWS S3, Cloudflare R2, MinIO, SeaweedFS, ...).

One long-lived aiobotocore client, opened by ``start`` and closed by ``close``. A finished
pack goes up in one streamed PUT with the CRC32 its writer computed (``put_object_file``).
Any other file streams in one pass: a worker thread reads it (and gzips it when asked) into parts of
``chunk_size_mb``; an object of less than one part goes as one PUT, a larger one as a
multipart upload with a bounded number of parts in flight, so memory does not grow with
the file. An uncompressed part is never copied into memory whole: it is a window on the
file that the HTTP client reads as it sends. Compressed parts are held in memory until
sent, within a budget shared by every file the target is uploading (``part_memory``).

Integrity: every request body carries a checksum the server checks before it stores
anything (a body altered on the way is refused with ``BadDigest``): by default
``x-amz-checksum-crc32`` (multipart uploads are created with ``ChecksumAlgorithm=CRC32``
and completed with every part's CRC32), computed with ISA-L at about 10 GB/s; or
``Content-MD5`` (about 0.7 GB/s) with ``request_checksum: md5``, and automatically when a
server refuses the CRC32 header (``calls.checked``). Both headers are signed. The SigV4
payload hash is not computed (``UNSIGNED-PAYLOAD``): the checksum header protects the
body, and hashing every byte once more costs client CPU. End to end, the manifest's
SHA-256 is what ``verify`` and ``restore`` check.

botocore's own retries are off: akoshad's policy (``akoshad.backoff``: ``max_retries``,
exponential backoff with full jitter, ``Retry-After`` honoured) retries transient failures,
request by request (``calls.call``). A failed multipart upload is aborted, also when the
put is cancelled; ``start`` aborts those a crash left under this system's own prefix
(``systems/{system_id}/``), never anyone else's.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from akoshad.events import RequestCounter
from akoshad.redaction import redact_url
from akoshad.targets.base import Compression, Created, StoredObject
from akoshad.targets.s3.calls import call, checked
from akoshad.targets.s3.client import open_client, required_checksum_as_md5
from akoshad.targets.s3.errors import (
    ChecksumRefused,
    SourceChanged,
    UploadLost,
    classify,
)
from akoshad.targets.s3.exclusive import create_exclusive
from akoshad.targets.s3.growing import GrowingSource, send_growing
from akoshad.targets.s3.multipart import (
    abort,
    abort_leftover_uploads,
    put_multipart,
    send_file,
    send_whole,
)
from akoshad.targets.s3.not_s3 import check_bucket
from akoshad.targets.s3.objects import (
    bucket_versioning,
    delete_keys,
    head_object,
    list_keys,
    list_stored,
    list_system_ids,
    read_object,
)
from akoshad.targets.s3.part_memory import budgeted
from akoshad.targets.s3.parts import (
    _CHECKSUM_PARAM,
    MAX_PARTS,
    Checksum,
    _Part,
    _PartSource,
    body_checksum,
    part_size_for,
)
from akoshad.targets.s3.ranges import read_range, stream_range
from akoshad.targets.s3.slow import SlowAnswers

if TYPE_CHECKING:
    from akoshad.config import Settings

T = TypeVar("T")
MiB = 1024 * 1024
PARTS_IN_FLIGHT = 4

__all__ = [
    "MAX_PARTS",
    "Checksum",
    "ChecksumRefused",
    "S3Target",
    "SourceChanged",
    "UploadLost",
    "body_checksum",
    "part_size_for",
]


class S3Target:
    """Stores objects in ``bucket``; keys are the layout's keys unchanged."""

    name = "cloud"

    def __init__(
        self,
        *,
        bucket: str,
        endpoint: str | None = None,
        region: str | None = "auto",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        part_size: int = 5 * MiB,
        timeout: float = 300.0,
        max_retries: int = 3,
        retry_backoff: float = 2.0,
        own_prefix: str = "systems/",
        parts_in_flight: int = PARTS_IN_FLIGHT,
        checksum: Checksum = "crc32",
        counter: RequestCounter | None = None,
    ) -> None:
        if part_size < 5 * MiB:
            raise ValueError("part_size must be at least 5 MiB (the S3 minimum)")
        self.bucket = bucket
        self.endpoint = endpoint
        self.region = region
        self._access_key_id = access_key_id
        self._secret = secret_access_key
        self.part_size = part_size
        self.timeout = timeout
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.own_prefix = own_prefix
        self.parts_in_flight = max(1, parts_in_flight)
        self.checksum: Checksum = checksum  # becomes "md5" if the server refuses CRC32
        self.verify_tls = True  # certificates are always checked for https endpoints
        self.requests = 0  # requests sent (attempts), for tests and benchmarks
        # whether the server honours If-None-Match (None until ``create_exclusive`` learns it)
        self.conditional_writes: bool | None = None
        self.retries = 0
        # counts every request sent (metrics), by S3 operation name, as ``name``
        self.counter = counter
        # called after each request the server answered (``base.Answers``)
        self.on_answer: Callable[[], None] | None = None
        self.slow = SlowAnswers()  # logs requests that wait long for their answer
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._opening: asyncio.Lock | None = None
        self._memory: asyncio.Semaphore | None = None
        # the server rejected keys of botocore's chain: read it again before the next call
        self._reread_credentials = False

    @classmethod
    def from_settings(cls, settings: Settings, counter: RequestCounter | None = None) -> S3Target:
        """Build from ``settings.cloud_sync`` (which must name a bucket)."""
        cs = settings.cloud_sync
        if cs.cloud_bucket is None:
            raise ValueError("cloud_sync.cloud_bucket is not set")
        return cls(
            bucket=cs.cloud_bucket,
            endpoint=cs.cloud_endpoint,
            region=cs.cloud_region,
            access_key_id=cs.access_key_id,
            secret_access_key=(
                cs.secret_access_key.get_secret_value() if cs.secret_access_key else None
            ),
            part_size=cs.chunk_size_mb * MiB,
            timeout=float(cs.upload_timeout_seconds),
            max_retries=cs.max_retries,
            retry_backoff=cs.retry_backoff_seconds,
            own_prefix=f"systems/{cs.system_id}/",
            checksum=cs.request_checksum,
            counter=counter,
        )

    def __repr__(self) -> str:
        endpoint = redact_url(self.endpoint) if self.endpoint else "aws"
        return f"S3Target(bucket={self.bucket!r}, endpoint={endpoint!r})"

    __str__ = __repr__

    # ---- lifecycle -------------------------------------------------------------------------
    async def _ensure_client(self) -> Any:
        """The long-lived client and part-preparation pool, opened on first use."""
        if self._client is not None:
            return self._client
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._client is None:
                await self._open()
        return self._client

    async def _open(self) -> None:
        stack, client, pool = await open_client(self)
        client.meta.events.register("before-call.s3", self._before_call)
        self._stack, self._client, self._pool = stack, client, pool

    def _before_call(self, model: Any, params: Any = None, **_kwargs: Any) -> None:
        """botocore's ``before-call`` event: one request (an attempt) is about to go out
        (a checksum it must carry is Content-MD5 when the target uses MD5)."""
        if self.counter is not None:
            self.counter.count(self.name, model.name)
        if self.checksum == "md5" and isinstance(params, dict):
            required_checksum_as_md5(params)

    async def start(self, *, clean_up: bool = True) -> None:
        """Open the client, check bucket and credentials (``check``); with ``clean_up``,
        abort the multipart uploads a crash left under ``own_prefix``."""
        await self.check()
        if clean_up:
            await self.abort_leftover_uploads()

    async def check(self) -> None:
        """A read-only check of bucket and credentials: a one-key listing, whose error
        replies carry a code (a HEAD's do not), so bad credentials and a missing bucket are
        told apart; an answer no S3 server gives is an error of its own (``not_s3``). It
        never creates anything: some servers (SeaweedFS) create a missing bucket on the
        first write, so writers call this first (see ``ReadCheck``)."""

        await check_bucket(self)

    async def close(self) -> None:
        stack, self._stack, self._client, self._pool = self._stack, None, None, None
        if stack is not None:
            await stack.aclose()

    async def abort_leftover_uploads(self) -> int:
        """Abort every multipart upload under ``own_prefix``; returns how many."""
        return await abort_leftover_uploads(self)

    # ---- requests ----------------------------------------------------------------------------
    async def _call(
        self,
        op: Callable[[Any], Awaitable[T]],
        *,
        what: str,
        missing: str | None = None,
        answer_within: float | None = None,
    ) -> T:
        """Send one request with akoshad's retry policy, errors classified (``calls.call``);
        ``missing``: the key whose absence (404) is a ``KeyError``, not an error;
        ``answer_within``: the most seconds each try may take."""
        return await call(self, op, what=what, missing=missing, answer_within=answer_within)

    async def _op(self, method: str, what: str, **kwargs: Any) -> Any:
        """``_call`` for one client method with keyword arguments."""
        return await self._call(lambda c: getattr(c, method)(**kwargs), what=what)

    @property
    def _configured_keys(self) -> bool:
        """Keys given in the configuration (else botocore's credential chain finds them)."""
        return bool(self._access_key_id or self._secret)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _classify(self, exc: Exception, what: str, *, missing: str | None = None) -> Exception:
        """Map a botocore/aiohttp failure to a transient or permanent error (no secrets)."""
        return classify(
            exc,
            what,
            bucket=self.bucket,
            endpoint=self.endpoint,
            timeout=self.timeout,
            redact=self._redact,
            missing=missing,
        )

    async def _prepare(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking part preparation (read, SHA-256, gzip, checksum) in the target's pool."""
        await self._ensure_client()
        return await asyncio.get_running_loop().run_in_executor(
            self._pool, functools.partial(fn, *args)
        )

    async def _next_part(self, parts: _PartSource) -> _Part | None:
        """The next part of an open source (see ``_budgeted``)."""
        _, part = await self._budgeted(parts.in_memory, lambda: (parts, parts.next_part()))
        return part

    async def _budgeted(
        self, in_memory: bool, cut: Callable[[], tuple[_PartSource, _Part | None]]
    ) -> tuple[_PartSource, _Part | None]:
        """Run ``cut`` in the pool, within the parts' memory budget (``part_memory``)."""
        return await budgeted(self, in_memory, cut)

    # ---- the protocol ------------------------------------------------------------------------
    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        return await self._checked(lambda kind: self._put_file(key, source, compression, kind))

    async def _checked(self, put: Callable[[Checksum], Awaitable[T]]) -> T:
        """Run ``put`` with the target's body checksum, with Content-MD5 once the server
        refused CRC32 (``calls.checked``)."""
        return await checked(self, put)

    async def _put_file(
        self, key: str, source: Path, compression: Compression, kind: Checksum
    ) -> StoredObject:
        return await send_file(self, key, source, compression, kind)

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        return await self._checked(lambda kind: send_whole(self, key, source, size, crc32, kind))

    async def put_growing(
        self,
        key: str,
        source: Path,
        writer: asyncio.Future[Any],
        restarted: threading.Event,
        before_send: Callable[[], Awaitable[None]],
    ) -> int:
        """Store ``source`` as ``key`` while ``writer`` appends to it (``growing``): parts
        go up as the file grows, the object appears whole once the writer is done, or not
        at all; ``before_send`` is awaited before the first request. Bytes sent."""

        async def put(kind: Checksum) -> int:
            parts = await self._prepare(
                GrowingSource, source, self.part_size, kind, writer, restarted
            )
            return await send_growing(self, key, parts, kind, before_send)

        return await self._checked(put)

    async def _put_multipart(
        self, key: str, parts: _PartSource, first: _Part, kind: Checksum
    ) -> int:
        return await put_multipart(self, key, parts, first, kind)

    async def _abort(self, key: str, upload_id: str, attempts: int = 0) -> bool:
        """Abort a multipart upload; a failure is logged (``start`` cleans up later)."""
        return await abort(self, key, upload_id, attempts)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        await self._checked(lambda kind: self._put_bytes(key, data, content_type, kind))
        return len(data)

    async def _put_bytes(self, key: str, data: bytes, content_type: str, kind: Checksum) -> None:
        if len(data) < MiB:
            checksum = body_checksum(kind, data)
        else:
            checksum = await asyncio.to_thread(body_checksum, kind, data)
        await self._call(
            lambda c: c.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                **{_CHECKSUM_PARAM[kind]: checksum},
            ),
            what=f"put {key}",
        )

    async def create_exclusive(self, key: str, data: bytes, content_type: str) -> Created:
        """``put_bytes`` only when ``key`` is free (``exclusive.create_exclusive``)."""
        return await create_exclusive(self, key, data, content_type)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        async for chunk in read_object(self, key):
            yield chunk

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        return await read_range(self, key, offset, length)

    async def stream_range(self, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        """``read_range`` in the pieces the body arrives in (``ranges.stream_range``)."""
        async for piece in stream_range(self, key, offset, length):
            yield piece

    async def head(self, key: str) -> int | None:
        return await head_object(self, key)

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:
        async for key in list_keys(self, prefix):
            yield key

    async def system_ids(self, limit: int) -> list[str]:
        return await list_system_ids(self, limit)

    async def list_stored(self, prefix: str) -> AsyncIterator[tuple[str, int, float]]:
        """Keys under ``prefix`` with their stored sizes and times (one listing)."""
        async for item in list_stored(self, prefix):
            yield item

    async def delete_keys(self, keys: list[str]) -> None:
        await delete_keys(self, keys)

    async def bucket_versioning(self) -> str | None:
        """``Enabled``/``Suspended`` when the bucket keeps deleted objects as versions."""
        return await bucket_versioning(self)
