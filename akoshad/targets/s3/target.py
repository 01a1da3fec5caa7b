"""The S3 target: any S3-compatible store (AWS S3, Cloudflare R2, MinIO, SeaweedFS, ...).

One long-lived aioboto3 client, opened by ``start`` and closed by ``close``. A file streams
in one pass: a worker thread reads it (and gzips it when asked) into parts of
``chunk_size_mb``; an object of less than one part goes as one PUT, a larger one as a
multipart upload with a bounded number of parts in flight, so memory does not grow with
the file. An uncompressed part is never copied into memory whole: it is a window on the
file that the HTTP client reads as it sends. Compressed parts are held in memory until
sent, within a budget shared by every file the target is uploading.

Integrity: every request body carries a checksum the server checks before it stores
anything (a body altered on the way is refused with ``BadDigest``): by default
``x-amz-checksum-crc32`` (multipart uploads are created with ``ChecksumAlgorithm=CRC32``
and completed with every part's CRC32), computed with ISA-L at about 10 GB/s; or
``Content-MD5`` (about 0.7 GB/s) with ``request_checksum: md5``, and automatically when a
server refuses the CRC32 header. Both headers are signed. The SigV4 payload hash is not
computed (``UNSIGNED-PAYLOAD``): the checksum header protects the body, and hashing every
byte once more costs client CPU. End to end, the manifest's SHA-256 is what ``verify`` and
``restore`` check.

botocore's own retries are off: akoshad's policy (``akoshad.backoff``: ``max_retries``,
exponential backoff with full jitter, ``Retry-After`` honoured) retries transient failures,
request by request. A failed multipart upload is aborted, also when the put is cancelled;
``start`` aborts those a crash left under this system's own prefix
(``systems/{system_id}/``), never anyone else's.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aioboto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    SSLError,
)
from loguru import logger

from akoshad import __version__
from akoshad.backoff import parse_retry_after, with_retries
from akoshad.errors import PermanentError, TransientError
from akoshad.fileio import CHUNK
from akoshad.redaction import redact_url
from akoshad.targets.base import Compression, StoredObject
from akoshad.targets.s3.errors import (
    _CREDENTIAL_CODES,
    _DENIED_CODES,
    _MISSING_CODES,
    _THROTTLING_CODES,
    _TRANSIENT_CODES,
    ChecksumRefused,
    SourceChanged,
    UploadLost,
)
from akoshad.targets.s3.parts import (
    _CHECKSUM_PARAM,
    MAX_PARTS,
    Checksum,
    _Part,
    _PartSource,
    body_checksum,
    part_size_for,
)

if TYPE_CHECKING:
    from akoshad.config import Settings

T = TypeVar("T")
MiB = 1024 * 1024
PARTS_IN_FLIGHT = 4
# Compressed parts wait in memory until sent: at most this many bytes of them, over all the
# files being uploaded at once (never fewer than two parts).
PART_MEMORY_BUDGET = 32 * MiB
DELETE_BATCH = 1000
ABORT_TIMEOUT = 15.0

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


class _KeylessEndpoints:
    """botocore's S3 endpoint rules never read the ``Key`` parameter, yet it is part of the
    resolver's cache key, so every new object name ran the whole rule set again (0.5 ms of
    CPU, a third of a small PUT's). This resolves without it; the result is the same."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    def resolve_endpoint(self, **params: Any) -> Any:
        params.pop("Key", None)
        return self._provider.resolve_endpoint(**params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)


def _cache_endpoints_per_bucket(client: Any) -> None:
    """Install ``_KeylessEndpoints`` when this botocore's rules indeed ignore ``Key``."""
    try:
        resolver = client._ruleset_resolver
        rules = client._loader.load_service_model("s3", "endpoint-rule-set-1")
        if '"Key"' in json.dumps(rules["rules"]) or resolver is None:
            return
        resolver._provider = _KeylessEndpoints(resolver._provider)
    except Exception as exc:  # internals moved: keep botocore's own behaviour
        logger.debug("S3 endpoint cache left as it is: {}", exc)


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
        self.retries = 0
        # called with the S3 operation name of every request sent (metrics)
        self.on_request: Callable[[str], None] | None = None
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._pool: ThreadPoolExecutor | None = None
        self._opening: asyncio.Lock | None = None
        self._memory: asyncio.Semaphore | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Target:
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
        )

    def __repr__(self) -> str:
        endpoint = redact_url(self.endpoint) if self.endpoint else "aws"
        return f"S3Target(bucket={self.bucket!r}, endpoint={endpoint!r})"

    __str__ = __repr__

    # ---- lifecycle -------------------------------------------------------------------------
    def _region_name(self) -> str | None:
        """A custom endpoint gets the configured name as is (R2 wants ``auto``); AWS itself
        needs a real region, so there ``auto`` means the default chain's."""
        if not self.region or (self.region == "auto" and self.endpoint is None):
            return None
        return self.region

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
        session = aioboto3.Session(
            aws_access_key_id=self._access_key_id,
            aws_secret_access_key=self._secret,
            region_name=self._region_name(),
        )
        # no region anywhere: us-east-1, from which botocore follows a bucket's redirect
        region = session.region_name or "us-east-1"
        config = Config(
            s3={
                "addressing_style": "path" if self.endpoint else "auto",
                # the body checksum header (signed, checked by the server) protects every
                # body; hashing each body again for SigV4 costs client CPU for no extra check
                "payload_signing_enabled": False,
            },
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=min(30.0, self.timeout),
            read_timeout=self.timeout,
            max_pool_connections=max(10, self.parts_in_flight * 4),
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            signature_version="s3v4",
            tcp_keepalive=True,
            # a fixed User-Agent: botocore otherwise rebuilds its own from some 30 parts on
            # every request (a tenth of the client CPU of a small PUT)
            user_agent=f"akoshad/{__version__}",
        )
        stack = AsyncExitStack()
        try:
            pool = ThreadPoolExecutor(
                max_workers=self.parts_in_flight, thread_name_prefix="akoshad-s3"
            )
            stack.callback(pool.shutdown, wait=False, cancel_futures=True)
            client = await stack.enter_async_context(
                session.client(
                    "s3",
                    endpoint_url=self.endpoint,
                    region_name=region,
                    config=config,
                    verify=self.verify_tls,
                )
            )
        except BaseException as exc:
            await stack.aclose()
            if isinstance(exc, Exception):
                raise self._classify(exc, "open the S3 client") from None
            raise
        _cache_endpoints_per_bucket(client)
        client.meta.events.register("before-call.s3", self._before_call)
        self._stack, self._client, self._pool = stack, client, pool

    def _before_call(self, model: Any, **_kwargs: Any) -> None:
        """botocore's ``before-call`` event: one request (an attempt) is about to go out."""
        if self.on_request is not None:
            self.on_request(model.name)

    async def start(self, *, clean_up: bool = True) -> None:
        """Open the client, check bucket and credentials (``check``); with ``clean_up``,
        abort the multipart uploads a crash left under ``own_prefix``."""
        await self.check()
        if clean_up:
            await self.abort_leftover_uploads()

    async def check(self) -> None:
        """A read-only check of bucket and credentials: a one-key listing, whose error
        replies carry a code (a HEAD's do not), so bad credentials and a missing bucket are
        told apart. It never creates anything: some servers (SeaweedFS) create a missing
        bucket on the first write, so writers call this first (see ``ReadCheck``)."""
        await self._call(
            lambda c: c.list_objects_v2(Bucket=self.bucket, Prefix=self.own_prefix, MaxKeys=1),
            what="check the bucket",
        )

    async def close(self) -> None:
        stack, self._stack, self._client, self._pool = self._stack, None, None, None
        if stack is not None:
            await stack.aclose()

    async def abort_leftover_uploads(self) -> int:
        """Abort every multipart upload under ``own_prefix``; returns how many."""
        aborted = 0
        markers: dict[str, str] = {}
        while True:
            try:
                page = await self._op(
                    "list_multipart_uploads",
                    "list multipart uploads",
                    Bucket=self.bucket,
                    Prefix=self.own_prefix,
                    **markers,
                )
            except PermanentError as exc:  # a policy may lack this one permission
                logger.warning("cannot look for abandoned multipart uploads: {}", exc)
                return aborted
            for up in page.get("Uploads") or []:
                if not up["Key"].startswith(self.own_prefix):
                    continue
                if await self._abort(up["Key"], up["UploadId"], attempts=self.max_retries):
                    logger.info("aborted a multipart upload left by a crash: {}", up["Key"])
                    aborted += 1
            following = {
                "KeyMarker": page.get("NextKeyMarker") or "",
                "UploadIdMarker": page.get("NextUploadIdMarker") or "",
            }
            if not page.get("IsTruncated") or following == markers:
                return aborted
            markers = following

    # ---- requests ----------------------------------------------------------------------------
    async def _call(
        self, op: Callable[[Any], Awaitable[T]], *, what: str, missing: str | None = None
    ) -> T:
        """Send one request with akoshad's retry policy; errors come out classified.

        ``missing``: the key whose absence (404) is a ``KeyError``, not an error.
        """
        client = await self._ensure_client()

        async def once() -> T:
            self.requests += 1
            try:
                return await op(client)
            except Exception as exc:
                raise self._classify(exc, what, missing=missing) from None

        def counted(_exc: TransientError, _attempt: int, _delay: float) -> None:
            self.retries += 1

        return await with_retries(
            once,
            max_retries=self.max_retries,
            base=self.retry_backoff,
            on_retry=counted,
            retryable=lambda exc: not isinstance(exc, UploadLost),
        )

    async def _op(self, method: str, what: str, **kwargs: Any) -> Any:
        """``_call`` for one client method with keyword arguments."""
        return await self._call(lambda c: getattr(c, method)(**kwargs), what=what)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _classify(self, exc: Exception, what: str, *, missing: str | None = None) -> Exception:
        """Map a botocore/aiohttp failure to a transient or permanent error (no secrets)."""
        if isinstance(exc, ClientError):
            return self._classify_reply(exc, what, missing)
        if isinstance(exc, ParamValidationError):
            return PermanentError(self._redact(f"{what}: invalid request: {exc}"))
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return PermanentError(
                "no S3 credentials found",
                fix="set cloud_sync.access_key_id / secret_access_key or the AWS credential chain",
            )
        if isinstance(exc, SSLError):
            return PermanentError(
                f"{what}: TLS handshake with {self.endpoint or 'S3'} failed",
                fix="check cloud_endpoint and its certificate",
            )
        if isinstance(exc, TransientError):  # SourceChanged from a window being sent
            return exc
        where = self.endpoint or "S3"
        if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ConnectTimeoutError):
            return TransientError(f"{what}: cannot reach {where}")
        if isinstance(exc, ReadTimeoutError):
            return TransientError(f"{what}: no answer from {where} within {self.timeout:.0f} s")
        if isinstance(exc, BotoCoreError | OSError | TimeoutError):
            return TransientError(f"{what}: {type(exc).__name__} ({where})")
        if type(exc).__module__.startswith("aiohttp"):
            return TransientError(f"{what}: {type(exc).__name__}")
        return exc

    def _classify_reply(self, exc: ClientError, what: str, missing: str | None) -> Exception:
        err = exc.response.get("Error", {}) or {}
        meta = exc.response.get("ResponseMetadata", {}) or {}
        code = str(err.get("Code", "") or "")
        status = int(meta.get("HTTPStatusCode", 0) or 0)
        if missing is not None and (code in _MISSING_CODES or (status == 404 and not code)):
            return KeyError(missing)
        if code == "NoSuchBucket":
            return PermanentError(
                f"bucket {self.bucket!r} does not exist",
                fix=f"create bucket {self.bucket!r} or fix cloud_sync.cloud_bucket",
            )
        if code in _CREDENTIAL_CODES:
            return PermanentError(
                f"the S3 server rejected the credentials ({code})",
                fix="check cloud_sync.access_key_id / secret_access_key",
            )
        if code in _DENIED_CODES or status == 403:
            return PermanentError(
                f"access denied to bucket {self.bucket!r} ({code or status})",
                fix="check cloud_sync.access_key_id / secret_access_key and the bucket's policy",
            )
        if code == "RequestTimeTooSkewed":
            return PermanentError(
                "the S3 server says this machine's clock is wrong", fix="synchronise the clock"
            )
        message = self._redact(str(err.get("Message", "") or ""))
        if code != "BadDigest" and (
            code == "NotImplemented"
            or (status in (400, 501) and "checksum" in f"{code} {message}".lower())
        ):
            return ChecksumRefused(f"{what}: {code or status} {message}".strip())
        if code == "NoSuchUpload":
            return UploadLost(f"{what}: NoSuchUpload")
        if code in _TRANSIENT_CODES or status >= 500 or status in (408, 429):
            headers = meta.get("HTTPHeaders", {}) or {}
            retry_after = parse_retry_after(
                headers.get("retry-after") or headers.get("Retry-After")
            )
            if retry_after is None and (code in _THROTTLING_CODES or status in (429, 503)):
                retry_after = 1.0
            return TransientError(f"{what}: {code or status}", retry_after=retry_after)
        return PermanentError(f"{what}: {code or status} {message}".strip())

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
        """Run ``cut`` in the pool. A part held in memory takes a slot of the target-wide
        budget until it is closed; a file waits for a slot holding no unsent part, so
        uploads cannot deadlock one another."""
        if not in_memory:
            return await self._prepare(cut)
        if self._memory is None:
            self._memory = asyncio.Semaphore(max(2, PART_MEMORY_BUDGET // self.part_size))
        memory = self._memory
        await memory.acquire()
        try:
            parts, part = await self._prepare(cut)
        except BaseException:
            memory.release()
            raise
        if part is None:
            memory.release()
        else:
            part.on_close = memory.release
        return parts, part

    # ---- the protocol ------------------------------------------------------------------------
    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        return await self._checked(lambda kind: self._put_file(key, source, compression, kind))

    async def _checked(self, put: Callable[[Checksum], Awaitable[T]]) -> T:
        """Run ``put`` with the target's body checksum; when the server refuses CRC32, warn
        once and run it again with Content-MD5, which is used from then on."""
        kind = self.checksum
        try:
            return await put(kind)
        except ChecksumRefused as refused:
            if kind == "md5":
                raise
            if self.checksum != "md5":
                self.checksum = "md5"
                logger.warning(
                    "{}: the S3 server does not take x-amz-checksum-crc32; bodies are checked "
                    "with Content-MD5 from now on (set cloud_sync.request_checksum: md5 to "
                    "start with it)",
                    refused,
                )
            return await put("md5")

    async def _put_file(
        self, key: str, source: Path, compression: Compression, kind: Checksum
    ) -> StoredObject:
        # one trip to the pool for a small file: open, read (and gzip), checksum, close
        parts, first = await self._budgeted(
            compression == "gzip",
            functools.partial(_PartSource.open, source, compression, self.part_size, kind),
        )
        try:
            if first is None or first.size < parts.part_size:
                part = first or _Part(b"", 0, body_checksum(kind, b""))
                try:
                    await self._call(
                        lambda c: c.put_object(
                            Bucket=self.bucket,
                            Key=key,
                            Body=part.rewound(),
                            **{_CHECKSUM_PARAM[kind]: part.checksum},
                        ),
                        what=f"put {key}",
                    )
                finally:
                    part.close()
                return StoredObject(key, part.size, compression, part.size, parts.sha256)
            # a full first part: multipart (of one part, if the file ends exactly there)
            total = await self._put_multipart(key, parts, first, kind)
            return StoredObject(key, total, compression, total, parts.sha256)
        finally:
            if not parts.closed:
                await self._prepare(parts.close)

    async def _put_multipart(
        self, key: str, parts: _PartSource, first: _Part, kind: Checksum
    ) -> int:
        # with CRC32, the upload is declared as such and each part's CRC32 is sent again at
        # completion (AWS S3 refuses part checksums an upload was not created for)
        declared = {"ChecksumAlgorithm": "CRC32"} if kind == "crc32" else {}
        try:
            created = await self._call(
                lambda c: c.create_multipart_upload(Bucket=self.bucket, Key=key, **declared),
                what=f"start {key}",
            )
        except BaseException:
            first.close()
            raise
        upload_id: str = created["UploadId"]
        slots = asyncio.Semaphore(self.parts_in_flight)
        done: dict[int, dict[str, Any]] = {}
        failure: list[BaseException] = []
        tasks: list[asyncio.Task[None]] = []
        pending = deque([first])
        total = 0

        async def send(number: int, part: _Part) -> None:
            try:
                resp = await self._call(
                    lambda c: c.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=part.rewound(),
                        **{_CHECKSUM_PARAM[kind]: part.checksum},
                    ),
                    what=f"part {number} of {key}",
                )
                done[number] = {"PartNumber": number, "ETag": resp["ETag"]}
                if kind == "crc32":
                    done[number]["ChecksumCRC32"] = part.checksum
            except BaseException as exc:
                failure.append(exc)
                raise
            finally:
                part.close()
                slots.release()

        try:
            number = 0
            while True:
                await slots.acquire()
                part = pending.popleft() if pending else None
                if not failure and part is None:
                    part = await self._next_part(parts)
                if failure or part is None:
                    slots.release()
                    if part is not None:
                        part.close()
                    break
                number += 1
                total += part.size
                tasks.append(asyncio.create_task(send(number, part)))
            await asyncio.gather(*tasks)
            finished = [done[n] for n in sorted(done)]
            try:
                await self._call(
                    lambda c: c.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": finished},
                    ),
                    what=f"complete {key}",
                )
            except UploadLost:
                # a retried complete whose first reply was lost: the object may be whole
                if await self.head(key) != total:
                    raise
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for part in pending:
                part.close()
            # also when cancelled: the abort is awaited (bounded), never left running
            await self._abort(key, upload_id)
            raise
        return total

    async def _abort(self, key: str, upload_id: str, attempts: int = 0) -> bool:
        """Abort a multipart upload; a failure is logged (``start`` cleans up later)."""
        try:
            async with asyncio.timeout(ABORT_TIMEOUT * (attempts + 1)):
                client = await self._ensure_client()
                await with_retries(
                    lambda: self._abort_once(client, key, upload_id),
                    max_retries=attempts,
                    base=self.retry_backoff,
                )
        except (TransientError, PermanentError, TimeoutError) as exc:
            logger.warning("could not abort the multipart upload of {}: {}", key, exc)
            return False
        return True

    async def _abort_once(self, client: Any, key: str, upload_id: str) -> None:
        self.requests += 1
        try:
            await client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as exc:
            error = self._classify(exc, f"abort {key}")
            if isinstance(error, UploadLost):
                return  # already gone
            raise error from None

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

    async def read(self, key: str) -> AsyncIterator[bytes]:
        resp = await self._call(
            lambda c: c.get_object(Bucket=self.bucket, Key=key), what=f"read {key}", missing=key
        )
        body = resp["Body"]
        try:
            while True:
                try:
                    chunk = await body.read(CHUNK)
                except Exception as exc:
                    raise self._classify(exc, f"read {key}") from None
                if not chunk:
                    break
                yield chunk
        finally:
            body.close()

    async def head(self, key: str) -> int | None:
        try:
            resp = await self._call(
                lambda c: c.head_object(Bucket=self.bucket, Key=key),
                what=f"head {key}",
                missing=key,
            )
        except KeyError:
            return None
        return int(resp["ContentLength"])

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:
        token: str | None = None
        while True:
            page = await self._list_page(prefix, token)
            for obj in page.get("Contents") or []:
                yield obj["Key"]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def _list_page(self, prefix: str, token: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page: dict[str, Any] = await self._call(
            lambda c: c.list_objects_v2(**kwargs), what=f"list {prefix}"
        )
        return page

    async def delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), DELETE_BATCH):
            delete = {"Objects": [{"Key": k} for k in keys[i : i + DELETE_BATCH]], "Quiet": True}
            resp = await self._op("delete_objects", "delete", Bucket=self.bucket, Delete=delete)
            errors = [e for e in resp.get("Errors") or [] if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                raise TransientError(
                    f"delete {first.get('Key')}: {first.get('Code')} "
                    f"({len(errors)} key(s) not deleted)"
                )
