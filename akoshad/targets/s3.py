"""The S3 target: any S3-compatible store (AWS S3, Cloudflare R2, MinIO, SeaweedFS, ...).

One long-lived aioboto3 client. Files stream in one pass (read -> gzip -> parts of
``chunk_size_mb``) with a bounded number of parts in flight, so memory does not grow with
the file. Every request body carries ``Content-MD5``, which the server checks. botocore's own
retries are off; akoshad's policy (``akoshad.retry``) retries transient failures only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aioboto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from loguru import logger

from akoshad.compress import READ_CHUNK, gzip_compressor
from akoshad.errors import PermanentError, TransientError
from akoshad.fileio import read_chunks
from akoshad.retry import with_retries
from akoshad.targets.base import Compression, StoredObject

if TYPE_CHECKING:
    from akoshad.config import Settings

T = TypeVar("T")
MiB = 1024 * 1024
PARTS_IN_FLIGHT = 4
DELETE_BATCH = 1000
_TRANSIENT_CODES = {
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "InternalError",
    "ServiceUnavailable",
    "RequestLimitExceeded",
    "BadDigest",
    "IncompleteBody",
    "OperationAborted",
}
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
}


def content_md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


class _PartReader:
    """Reads (and gzips) a file into parts of ``size`` bytes; blocking, one thread."""

    def __init__(self, path: Path, compression: Compression, size: int) -> None:
        self._fh = path.open("rb")
        self._chunks: Iterator[bytes] = read_chunks(self._fh, READ_CHUNK)
        self._comp = gzip_compressor() if compression == "gzip" else None
        self._size = size
        self._buf = bytearray()
        self._done = False

    def next_part(self) -> bytes | None:
        while len(self._buf) < self._size and not self._done:
            chunk = next(self._chunks, None)
            if chunk is None:
                self._done = True
                if self._comp is not None:
                    self._buf += self._comp.flush()
                break
            self._buf += self._comp.compress(chunk) if self._comp is not None else chunk
        if not self._buf:
            return None
        if len(self._buf) <= self._size:
            part = bytes(self._buf)
            self._buf = bytearray()
            return part
        with memoryview(self._buf) as view:
            part = bytes(view[: self._size])
        del self._buf[: self._size]
        return part

    def close(self) -> None:
        self._fh.close()


class _FileWindow(io.RawIOBase):
    """A read-only, seekable view of ``length`` bytes of a file from ``offset``: an upload
    part sent straight from the (private, stable) staged file, never held in memory."""

    def __init__(self, path: Path, offset: int, length: int) -> None:
        super().__init__()
        self._fd = os.open(path, os.O_RDONLY)
        self._offset = offset
        self._length = length
        self._pos = 0

    def __len__(self) -> int:
        return self._length

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, min(self._length, base + pos))
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        left = self._length - self._pos
        n = left if size is None or size < 0 else min(size, left)
        if n <= 0:
            return b""
        data = os.pread(self._fd, n, self._offset + self._pos)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()

    def md5(self) -> str:
        digest = hashlib.md5()
        pos = 0
        while pos < self._length:
            chunk = os.pread(self._fd, min(READ_CHUNK, self._length - pos), self._offset + pos)
            if not chunk:
                break
            digest.update(chunk)
            pos += len(chunk)
        return base64.b64encode(digest.digest()).decode()


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
    ) -> None:
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
        self.verify_tls = True  # certificates are always checked for https endpoints
        self.requests = 0
        self.retries = 0
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Target:
        cs = settings.cloud_sync
        assert cs.cloud_bucket is not None
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
        )

    def __repr__(self) -> str:
        where = self.endpoint or "aws"
        return f"S3Target(bucket={self.bucket!r}, endpoint={where!r})"

    __str__ = __repr__

    # ---- lifecycle -------------------------------------------------------------------------
    async def _ensure_client(self) -> Any:
        """The long-lived client, created on first use (also after a failed start)."""
        if self._client is None:
            region = self.region
            if region == "auto" and self.endpoint is None:
                region = "us-east-1"  # "auto" is R2's region name; AWS needs a real one
            session = aioboto3.Session(
                aws_access_key_id=self._access_key_id,
                aws_secret_access_key=self._secret,
                region_name=region,
            )
            config = Config(
                s3={
                    "addressing_style": "path" if self.endpoint else "auto",
                    # Content-MD5 (signed, checked by the server) protects every body; hashing
                    # each body again for SigV4 costs a quarter of the client CPU
                    "payload_signing_enabled": False,
                },
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=min(30.0, self.timeout),
                read_timeout=self.timeout,
                max_pool_connections=PARTS_IN_FLIGHT * 2,
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                signature_version="s3v4",
            )
            stack = AsyncExitStack()
            try:
                self._client = await stack.enter_async_context(
                    session.client(
                        "s3", endpoint_url=self.endpoint, config=config, verify=self.verify_tls
                    )
                )
            except BaseException:
                await stack.aclose()
                raise
            self._stack = stack
        return self._client

    async def start(self) -> None:
        """Open the client, check the bucket, abort multipart uploads a crash left behind."""
        await self._call(lambda c: c.head_bucket(Bucket=self.bucket), what="check bucket")
        await self._abort_leftovers()

    async def close(self) -> None:
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    async def _abort_leftovers(self) -> None:
        uploads = await self._call(
            lambda c: c.list_multipart_uploads(Bucket=self.bucket, Prefix=self.own_prefix),
            what="list multipart uploads",
        )
        for up in uploads.get("Uploads", []) or []:
            key, upload_id = up["Key"], up["UploadId"]
            if not key.startswith(self.own_prefix):
                continue
            await self._abort(key, upload_id)
            logger.info("aborted a multipart upload left by a crash: {}", key)

    # ---- requests ----------------------------------------------------------------------------
    async def _call(self, op: Callable[[Any], Awaitable[T]], *, what: str) -> T:
        try:
            client = await self._ensure_client()
        except Exception as exc:
            raise self._classify(exc, what) from None

        async def once() -> T:
            self.requests += 1
            try:
                return await op(client)
            except Exception as exc:
                raise self._classify(exc, what) from None

        def counted(_exc: TransientError, _attempt: int, _delay: float) -> None:
            self.retries += 1

        return await with_retries(
            once, max_retries=self.max_retries, base=self.retry_backoff, on_retry=counted
        )

    def _classify(self, exc: Exception, what: str) -> Exception:
        """Map a botocore/aiohttp failure to a transient or permanent error (no secrets)."""
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}) or {}
            if code in ("NoSuchKey", "404", "NotFound") and what.startswith(("read", "head")):
                return KeyError(what)
            if code in ("NoSuchBucket",) or (code == "404" and what == "check bucket"):
                return PermanentError(
                    f"bucket {self.bucket!r} does not exist",
                    fix=f"create the bucket {self.bucket!r} or fix cloud_sync.cloud_bucket",
                )
            if code in _CREDENTIAL_CODES:
                return PermanentError(
                    f"the S3 server rejected the credentials ({code})",
                    fix="check cloud_sync.access_key_id / secret_access_key",
                )
            if code in ("AccessDenied", "403", "Forbidden", "AllAccessDisabled"):
                return PermanentError(
                    f"access denied to bucket {self.bucket!r} (credentials rejected or "
                    "lacking permission)",
                    fix="check cloud_sync.access_key_id / secret_access_key and the bucket policy",
                )
            if code in _TRANSIENT_CODES or status >= 500 or status in (408, 429):
                retry_after = _retry_after(headers)
                if code == "SlowDown" and retry_after is None:
                    retry_after = 1.0
                return TransientError(f"{what}: {code or status}", retry_after=retry_after)
            return PermanentError(f"{what}: {code or status}: {err.get('Message', '')}".strip())
        if isinstance(exc, ParamValidationError):
            return PermanentError(f"{what}: invalid request: {exc}")
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return PermanentError(
                "no S3 credentials found",
                fix="set cloud_sync.access_key_id / secret_access_key or the AWS credential chain",
            )
        if isinstance(exc, EndpointConnectionError | ConnectionClosedError):
            return TransientError(f"{what}: cannot reach {self.endpoint or 'S3'}")
        if isinstance(exc, BotoCoreError | OSError | TimeoutError | asyncio.TimeoutError):
            return TransientError(f"{what}: {type(exc).__name__}")
        name = type(exc).__module__
        if name.startswith("aiohttp"):
            return TransientError(f"{what}: {type(exc).__name__}")
        return exc

    # ---- the protocol ------------------------------------------------------------------------
    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        if compression == "none":
            size = (await asyncio.to_thread(os.stat, source)).st_size
            if size > self.part_size:
                return await self._put_windows(key, source, size)
        reader = await asyncio.to_thread(_PartReader, source, compression, self.part_size)
        try:
            first = await asyncio.to_thread(reader.next_part)
            second = await asyncio.to_thread(reader.next_part) if first is not None else None
            if second is None:
                body = first or b""
                await self._put_small(key, body)
                return StoredObject(key, len(body), compression, len(body))
            return await self._put_multipart(key, reader, [first, second], compression)  # type: ignore[list-item]
        finally:
            await asyncio.to_thread(reader.close)

    async def _put_small(self, key: str, body: bytes) -> None:
        md5 = await asyncio.to_thread(content_md5, body)
        await self._call(
            lambda c: c.put_object(Bucket=self.bucket, Key=key, Body=body, ContentMD5=md5),
            what=f"put {key}",
        )

    async def _put_multipart(
        self, key: str, reader: _PartReader, first: list[bytes], compression: Compression
    ) -> StoredObject:
        created = await self._call(
            lambda c: c.create_multipart_upload(Bucket=self.bucket, Key=key),
            what=f"start {key}",
        )
        upload_id = created["UploadId"]
        etags: dict[int, str] = {}
        sizes: dict[int, int] = {}
        sem = asyncio.Semaphore(PARTS_IN_FLIGHT)
        tasks: list[asyncio.Task[None]] = []

        async def send(number: int, body: bytes) -> None:
            try:
                md5 = await asyncio.to_thread(content_md5, body)
                resp = await self._call(
                    lambda c: c.upload_part(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=body,
                        ContentMD5=md5,
                    ),
                    what=f"part {number} of {key}",
                )
                etags[number] = resp["ETag"]
                sizes[number] = len(body)
            finally:
                sem.release()

        try:
            number = 0
            pending = list(first)
            while True:
                body = pending.pop(0) if pending else await asyncio.to_thread(reader.next_part)
                if body is None:
                    break
                number += 1
                await sem.acquire()
                if any(t.done() and t.exception() for t in tasks):
                    sem.release()
                    break
                tasks.append(asyncio.create_task(send(number, body)))
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            parts = [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]
            await self._call(
                lambda c: c.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                ),
                what=f"complete {key}",
            )
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.shield(self._abort(key, upload_id))
            raise
        total = sum(sizes.values())
        return StoredObject(key, total, compression, total)

    async def _put_windows(self, key: str, source: Path, size: int) -> StoredObject:
        """Multipart straight from the file: each part a window read when it is sent."""
        created = await self._call(
            lambda c: c.create_multipart_upload(Bucket=self.bucket, Key=key),
            what=f"start {key}",
        )
        upload_id = created["UploadId"]
        sem = asyncio.Semaphore(PARTS_IN_FLIGHT)
        offsets = list(range(0, size, self.part_size))

        async def send(number: int, offset: int) -> dict[str, Any]:
            async with sem:
                length = min(self.part_size, size - offset)
                window = await asyncio.to_thread(_FileWindow, source, offset, length)
                try:
                    md5 = await asyncio.to_thread(window.md5)

                    def upload(c: Any) -> Awaitable[Any]:
                        window.seek(0)
                        return c.upload_part(  # type: ignore[no-any-return]
                            Bucket=self.bucket,
                            Key=key,
                            UploadId=upload_id,
                            PartNumber=number,
                            Body=window,
                            ContentMD5=md5,
                        )

                    resp = await self._call(upload, what=f"part {number} of {key}")
                finally:
                    window.close()
                return {"PartNumber": number, "ETag": resp["ETag"]}

        tasks = [asyncio.create_task(send(i + 1, off)) for i, off in enumerate(offsets)]
        try:
            parts = await asyncio.gather(*tasks)
            await self._call(
                lambda c: c.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": list(parts)},
                ),
                what=f"complete {key}",
            )
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.shield(self._abort(key, upload_id))
            raise
        return StoredObject(key, size, "none", size)

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self._call(
                lambda c: c.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id),
                what=f"abort {key}",
            )
        except (TransientError, PermanentError) as exc:
            logger.warning("could not abort the multipart upload of {}: {}", key, exc)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        md5 = content_md5(data)
        await self._call(
            lambda c: c.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentMD5=md5, ContentType=content_type
            ),
            what=f"put {key}",
        )
        return len(data)

    async def read(self, key: str) -> AsyncIterator[bytes]:  # type: ignore[override]
        resp = await self._call(
            lambda c: c.get_object(Bucket=self.bucket, Key=key), what=f"read {key}"
        )
        body = resp["Body"]
        try:
            while True:
                try:
                    chunk = await body.read(READ_CHUNK)
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
                lambda c: c.head_object(Bucket=self.bucket, Key=key), what=f"head {key}"
            )
        except KeyError:
            return None
        return int(resp["ContentLength"])

    async def list_keys(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        token: str | None = None
        while True:
            page = await self._list_page(prefix, token)
            for obj in page.get("Contents", []) or []:
                yield obj["Key"]
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")

    async def _list_page(self, prefix: str, token: str | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page: dict[str, Any] = await self._call(lambda c: c.list_objects_v2(**kwargs), what="list")
        return page

    async def delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), DELETE_BATCH):
            await self._delete_batch([{"Key": k} for k in keys[i : i + DELETE_BATCH]])

    async def _delete_batch(self, batch: list[dict[str, str]]) -> None:
        await self._call(
            lambda c: c.delete_objects(
                Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            ),
            what="delete",
        )


def _retry_after(headers: dict[str, Any]) -> float | None:
    raw = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None
