"""How the S3 target sends a file: one PUT when it is less than a part, else a multipart
upload with a bounded number of parts in flight, completed with every part's checksum and
aborted on any failure (also when the put is cancelled); a finished file whose CRC32 is
known (a pack) in one streamed PUT (:func:`send_whole`); and the clean-up of the
multipart uploads a crash left under the system's own prefix."""

from __future__ import annotations

import asyncio
import base64
import functools
import os
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from akoshad.backoff import with_retries
from akoshad.errors import PermanentError, TransientError
from akoshad.targets.base import Compression, StoredObject
from akoshad.targets.s3.errors import SourceChanged, UploadLost
from akoshad.targets.s3.parts import (
    _CHECKSUM_PARAM,
    Checksum,
    _FileWindow,
    _Part,
    _PartSource,
    body_checksum,
)

if TYPE_CHECKING:
    from akoshad.targets.s3.target import S3Target

ABORT_TIMEOUT = 15.0


async def send_file(
    target: S3Target, key: str, source: Path, compression: Compression, kind: Checksum
) -> StoredObject:
    """Send ``source`` as ``key``: one PUT when it is less than a part, else a multipart
    upload; the source is closed in every case."""
    # one trip to the pool for a small file: open, read (and gzip), checksum, close
    parts, first = await target._budgeted(
        compression == "gzip",
        functools.partial(_PartSource.open, source, compression, target.part_size, kind),
    )
    try:
        if first is None or first.size < parts.part_size:
            part = first or _Part(b"", 0, body_checksum(kind, b""))
            try:
                await target._call(
                    lambda c: c.put_object(
                        Bucket=target.bucket,
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
        total = await put_multipart(target, key, parts, first, kind)
        return StoredObject(key, total, compression, total, parts.sha256)
    finally:
        if not parts.closed:
            await target._prepare(parts.close)


def _open_whole(source: Path, size: int, crc32: int, kind: Checksum) -> tuple[_FileWindow, str]:
    """A window on all of ``source`` (a symlink refused) and its body checksum: the known
    CRC32, or Content-MD5 read from the file (blocking: run in the pool)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(source, flags)
    try:
        if os.fstat(fd).st_size != size:
            raise SourceChanged(f"{source.name} is not the {size} bytes it was written with")
        window = _FileWindow(fd, 0, size)
    finally:
        os.close(fd)
    if kind == "crc32":
        return window, base64.b64encode(crc32.to_bytes(4, "big")).decode()
    try:
        return window, window.checksum(kind)
    except BaseException:
        window.close()
        raise


async def send_whole(
    target: S3Target, key: str, source: Path, size: int, crc32: int, kind: Checksum
) -> int:
    """Send the finished file ``source`` (``size`` bytes, CRC32 ``crc32``) as ``key`` in one
    PUT, streamed from the file (read once, never whole in memory); the bytes sent."""
    window, checksum = await target._prepare(_open_whole, source, size, crc32, kind)

    def put(c: Any) -> Any:
        window.seek(0)
        return c.put_object(
            Bucket=target.bucket, Key=key, Body=window, **{_CHECKSUM_PARAM[kind]: checksum}
        )

    try:
        await target._call(put, what=f"put {key}")
    finally:
        window.close()
    return size


async def put_multipart(
    target: S3Target, key: str, parts: _PartSource, first: _Part, kind: Checksum
) -> int:
    """Send ``parts`` (``first`` already cut) as one multipart upload; its size in bytes.
    Any failure, a cancellation too, aborts the upload before it propagates."""
    # with CRC32, the upload is declared as such and each part's CRC32 is sent again at
    # completion (AWS S3 refuses part checksums an upload was not created for)
    declared = {"ChecksumAlgorithm": "CRC32"} if kind == "crc32" else {}
    try:
        created = await target._call(
            lambda c: c.create_multipart_upload(Bucket=target.bucket, Key=key, **declared),
            what=f"start {key}",
        )
    except BaseException:
        first.close()
        raise
    upload_id: str = created["UploadId"]
    slots = asyncio.Semaphore(target.parts_in_flight)
    done: dict[int, dict[str, Any]] = {}
    failure: list[BaseException] = []
    tasks: list[asyncio.Task[None]] = []
    pending = deque([first])
    total = 0

    async def send(number: int, part: _Part) -> None:
        try:
            resp = await target._call(
                lambda c: c.upload_part(
                    Bucket=target.bucket,
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
                await parts.ready()
                part = await target._next_part(parts)
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
            await target._call(
                lambda c: c.complete_multipart_upload(
                    Bucket=target.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": finished},
                ),
                what=f"complete {key}",
            )
        except UploadLost:
            # a retried complete whose first reply was lost: the object may be whole
            if await target.head(key) != total:
                raise
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for part in pending:
            part.close()
        # also when cancelled: the abort is awaited (bounded), never left running
        await abort(target, key, upload_id)
        raise
    return total


async def abort(target: S3Target, key: str, upload_id: str, attempts: int = 0) -> bool:
    """Abort a multipart upload; a failure is logged (``start`` cleans up later)."""
    try:
        async with asyncio.timeout(ABORT_TIMEOUT * (attempts + 1)):
            client = await target._ensure_client()
            await with_retries(
                lambda: _abort_once(target, client, key, upload_id),
                max_retries=attempts,
                base=target.retry_backoff,
            )
    except (TransientError, PermanentError, TimeoutError) as exc:
        logger.warning("could not abort the multipart upload of {}: {}", key, exc)
        return False
    return True


async def _abort_once(target: S3Target, client: Any, key: str, upload_id: str) -> None:
    target.requests += 1
    try:
        await client.abort_multipart_upload(Bucket=target.bucket, Key=key, UploadId=upload_id)
    except Exception as exc:
        error = target._classify(exc, f"abort {key}")
        if isinstance(error, UploadLost):
            return  # already gone
        raise error from None


async def abort_leftover_uploads(target: S3Target) -> int:
    """Abort every multipart upload under ``own_prefix``; returns how many."""
    aborted = 0
    markers: dict[str, str] = {}
    while True:
        try:
            page = await target._op(
                "list_multipart_uploads",
                "list multipart uploads",
                Bucket=target.bucket,
                Prefix=target.own_prefix,
                **markers,
            )
        except PermanentError as exc:  # a policy may lack this one permission
            logger.warning("cannot look for abandoned multipart uploads: {}", exc)
            return aborted
        for up in page.get("Uploads") or []:
            if not up["Key"].startswith(target.own_prefix):
                continue
            if await abort(target, up["Key"], up["UploadId"], attempts=target.max_retries):
                logger.info("aborted a multipart upload left by a crash: {}", up["Key"])
                aborted += 1
        following = {
            "KeyMarker": page.get("NextKeyMarker") or "",
            "UploadIdMarker": page.get("NextUploadIdMarker") or "",
        }
        if not page.get("IsTruncated") or following == markers:
            return aborted
        markers = following
