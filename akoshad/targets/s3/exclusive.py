"""Storing an object only when its key is free, on S3: ``PutObject`` with
``If-None-Match: *`` (AWS S3 since 2024, SeaweedFS, MinIO, R2 and others).

A server that does not know the header may ignore it and store the object anyway (rclone's
``serve s3`` does), so a first conditional write that succeeds is sent once more: a server
that honours the condition refuses the second one (412), which proves the first was a real
create; one that stores it again ignores conditions, and the answer is ``"unchecked"``
(the caller then waits and reads back, as it would without the condition). A server that
refuses the header itself (400 or 501) is treated the same way: the claim then is what it
was without the condition. What was learnt is kept on the
target (``S3Target.conditional_writes``): the check costs one small request, once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from akoshad.errors import TransientError
from akoshad.targets.base import Created
from akoshad.targets.s3.errors import reply_of
from akoshad.targets.s3.parts import _CHECKSUM_PARAM, Checksum, body_checksum

if TYPE_CHECKING:
    from akoshad.targets.s3.target import S3Target

Answer = Literal["stored", "exists", "unsupported"]


async def _put_if_absent(
    target: S3Target, key: str, data: bytes, content_type: str, kind: Checksum
) -> Answer:
    checksum = body_checksum(kind, data)

    async def put(client: Any) -> Answer:
        try:
            await client.put_object(
                Bucket=target.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                IfNoneMatch="*",
                **{_CHECKSUM_PARAM[kind]: checksum},
            )
        except ClientError as exc:
            code, status, _ = reply_of(exc)
            if status == 412 or code == "PreconditionFailed":
                return "exists"
            if status == 409 or code == "ConditionalRequestConflict":
                # another conditional write to the key at the same moment: ask again
                raise TransientError(f"put {key}: a concurrent write to it (409)") from None
            if status in (400, 501) or code in ("NotImplemented", "InvalidArgument"):
                return "unsupported"  # the header refused: never worse than the old way
            raise
        return "stored"

    answer: Answer = await target._call(put, what=f"put {key} (if absent)")
    return answer


async def create_exclusive(target: S3Target, key: str, data: bytes, content_type: str) -> Created:
    """``data`` stored under ``key`` only when no object is there (see the module)."""
    if target.conditional_writes is False:
        await target.put_bytes(key, data, content_type)
        return "unchecked"

    async def once() -> Answer:
        return await target._checked(
            lambda kind: _put_if_absent(target, key, data, content_type, kind)
        )

    first = await once()
    if first == "exists":
        return "exists"
    if first == "stored" and target.conditional_writes:
        return "created"
    again = "unsupported" if first == "unsupported" else await once()
    if again == "exists":  # the server refused what it had just stored: it honours the header
        target.conditional_writes = True
        return "created"
    target.conditional_writes = False
    if first == "unsupported":
        await target.put_bytes(key, data, content_type)
    return "unchecked"
