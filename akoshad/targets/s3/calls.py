"""How the S3 target sends a request: one call under akoshad's retry policy
(``akoshad.backoff``; botocore's own retries are off), its failure classified, keys of
botocore's credential chain read again after the server rejected them; and a put run
again with Content-MD5 when the server refuses the CRC32 checksum header."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from loguru import logger

from akoshad.backoff import with_retries
from akoshad.errors import TransientError
from akoshad.redaction import redact_url
from akoshad.targets.s3.client import reload_credentials
from akoshad.targets.s3.errors import (
    ChecksumRefused,
    CredentialsRejected,
    UploadLost,
    no_answer,
)

if TYPE_CHECKING:
    from akoshad.targets.s3.parts import Checksum
    from akoshad.targets.s3.target import S3Target

T = TypeVar("T")


async def call(
    target: S3Target,
    op: Callable[[Any], Awaitable[T]],
    *,
    what: str,
    missing: str | None = None,
    answer_within: float | None = None,
) -> T:
    """Send one request with akoshad's retry policy; errors come out classified.

    ``missing``: the key whose absence (404) is a ``KeyError``, not an error.
    ``answer_within``: the most seconds each try may take in all (else only the client's
    connect and read timeouts bound it), a transient error past it.
    """
    client = await target._ensure_client()
    if target._reread_credentials:
        target._reread_credentials = False
        await reload_credentials(target, client)

    async def once() -> T:
        target.requests += 1
        bound = asyncio.timeout(answer_within)  # None: no bound
        limit = target.timeout if answer_within is None else answer_within
        try:
            async with bound:
                with target.slow.watch(what, shown_endpoint(target.endpoint), limit):
                    answer = await op(client)
        except Exception as exc:
            if answer_within is not None and bound.expired():
                raise no_answer(what, target.endpoint, answer_within) from None
            err = target._classify(exc, what, missing=missing)
            if isinstance(err, CredentialsRejected) and not target._configured_keys:
                target._reread_credentials = True  # rotated? the next call reads them
            raise err from None
        if target.on_answer is not None:
            target.on_answer()
        return answer

    def counted(_exc: TransientError, _attempt: int, _delay: float) -> None:
        target.retries += 1

    return await with_retries(
        once,
        max_retries=target.max_retries,
        base=target.retry_backoff,
        on_retry=counted,
        retryable=lambda exc: not isinstance(exc, UploadLost),
    )


def shown_endpoint(endpoint: str | None) -> str:
    """The endpoint as a log line may name it (no credentials)."""
    return redact_url(endpoint) if endpoint else "AWS S3"


async def checked(target: S3Target, put: Callable[[Checksum], Awaitable[T]]) -> T:
    """Run ``put`` with the target's body checksum; when the server refuses CRC32, warn
    once and run it again with Content-MD5, which is used from then on."""
    kind = target.checksum
    try:
        return await put(kind)
    except ChecksumRefused as refused:
        if kind == "md5":
            raise
        if target.checksum != "md5":
            target.checksum = "md5"
            logger.warning(
                "{}: the S3 server does not take x-amz-checksum-crc32; bodies are checked "
                "with Content-MD5 from now on (set cloud_sync.request_checksum: md5 to "
                "start with it)",
                refused,
            )
        return await put("md5")
