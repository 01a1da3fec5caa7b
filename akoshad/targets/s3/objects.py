"""Whole-object reads, stat, listing and deletes of the S3 target: ``GetObject`` streamed,
``HeadObject``, ``ListObjectsV2`` page by page, ``DeleteObjects`` in batches of 1,000 (a
key already gone is fine; any other refusal fails the delete), and the bucket's versioning
status (a versioned bucket keeps what a delete removes)."""

from __future__ import annotations

import functools
import math
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from akoshad.errors import TransientError
from akoshad.fileio import CHUNK
from akoshad.names import SYSTEM_ID_RE

if TYPE_CHECKING:
    from akoshad.targets.s3.parts import Checksum
    from akoshad.targets.s3.target import S3Target

DELETE_BATCH = 1000


async def read_object(target: S3Target, key: str) -> AsyncIterator[bytes]:
    """The stored bytes of ``key`` in pieces; ``KeyError`` when it is missing."""
    resp = await target._call(
        lambda c: c.get_object(Bucket=target.bucket, Key=key), what=f"read {key}", missing=key
    )
    body = resp["Body"]
    try:
        while True:
            try:
                chunk = await body.read(CHUNK)
            except Exception as exc:
                raise target._classify(exc, f"read {key}") from None
            if not chunk:
                break
            yield chunk
    finally:
        body.close()


async def head_object(target: S3Target, key: str) -> int | None:
    """The stored size of ``key``, None when it does not exist."""
    try:
        resp = await target._call(
            lambda c: c.head_object(Bucket=target.bucket, Key=key),
            what=f"head {key}",
            missing=key,
        )
    except KeyError:
        return None
    return int(resp["ContentLength"])


async def list_keys(target: S3Target, prefix: str) -> AsyncIterator[str]:
    """Every key under ``prefix``, once, in the server's (lexical) order (``list_stored``)."""
    async for key, _, _ in list_stored(target, prefix):
        yield key


async def list_stored(target: S3Target, prefix: str) -> AsyncIterator[tuple[str, int, float]]:
    """Every key under ``prefix`` with its stored size and time (``LastModified``, seconds
    since the epoch), once, in the server's (lexical) order. A key the server lists outside
    ``prefix`` (one that ignores it) is left out, and so is a key repeated (on the next
    page): callers delete what a listing names."""
    token: str | None = None
    last: str | None = None
    tokens: set[str] = set()  # one per page of 1,000 keys
    while True:
        kwargs: dict[str, Any] = {"Bucket": target.bucket, "Prefix": prefix}
        if token:
            kwargs["ContinuationToken"] = token
        page: dict[str, Any] = await target._op("list_objects_v2", f"list {prefix}", **kwargs)
        for obj in page.get("Contents") or []:
            key = obj["Key"]
            if key.startswith(prefix) and key != last:
                last = key
                yield key, int(obj.get("Size") or 0), _seconds(obj.get("LastModified"))
        token = page.get("NextContinuationToken")
        if not page.get("IsTruncated"):
            return
        if not token:  # a listing known to be incomplete must not pass for the whole one
            raise TransientError(
                f"list {prefix}: the server says the listing goes on but gives no "
                "continuation token"
            )
        if token in tokens:  # pages already listed, again and again: it would never end
            raise TransientError(
                f"list {prefix}: the server gives the same continuation token again"
            )
        tokens.add(token)


def _seconds(when: Any) -> float:
    """A listing's ``LastModified`` (a datetime) in seconds since the epoch; NaN when the
    server leaves it out (a prune's fence then keeps the object, ``prune_plan``)."""
    try:
        return float(when.timestamp())
    except (AttributeError, TypeError, ValueError, OverflowError):
        return math.nan


async def bucket_versioning(target: S3Target) -> str | None:
    """The bucket's versioning status (``Enabled``, ``Suspended``); None when it never had
    any (a delete then frees what it deletes)."""
    resp = await target._op(
        "get_bucket_versioning", "read the bucket's versioning", Bucket=target.bucket
    )
    status = resp.get("Status")
    return str(status) if status else None


async def _delete(target: S3Target, delete: dict[str, Any], _kind: Checksum) -> dict[str, Any]:
    """One ``DeleteObjects``; its body must carry a checksum: CRC32, or Content-MD5 once
    the server refused CRC32 (``_checked``, ``client.required_checksum_as_md5``)."""
    resp: dict[str, Any] = await target._op(
        "delete_objects", "delete", Bucket=target.bucket, Delete=delete
    )
    return resp


async def delete_keys(target: S3Target, keys: list[str]) -> None:
    """Delete ``keys`` (missing ones are fine); TransientError naming the first refusal."""
    for i in range(0, len(keys), DELETE_BATCH):
        delete = {"Objects": [{"Key": k} for k in keys[i : i + DELETE_BATCH]], "Quiet": True}
        resp = await target._checked(functools.partial(_delete, target, delete))
        errors = [e for e in resp.get("Errors") or [] if e.get("Code") != "NoSuchKey"]
        if errors:
            first = errors[0]
            raise TransientError(
                f"delete {first.get('Key')}: {first.get('Code')} ({len(errors)} key(s) not deleted)"
            )


async def list_system_ids(target: S3Target, limit: int) -> list[str]:
    """Up to ``limit`` system ids under ``systems/`` (one ListObjectsV2 with a delimiter:
    the common prefixes of its first page), sorted; names outside the system id alphabet
    are left out."""
    page: dict[str, Any] = await target._op(
        "list_objects_v2",
        "list systems/",
        Bucket=target.bucket,
        Prefix="systems/",
        Delimiter="/",
        MaxKeys=1000,  # a page: names that are no system id are left out
    )
    found = (
        str(p.get("Prefix", ""))[len("systems/") :].rstrip("/")
        for p in page.get("CommonPrefixes") or []
    )
    return sorted(i for i in found if SYSTEM_ID_RE.match(i))[:limit]
