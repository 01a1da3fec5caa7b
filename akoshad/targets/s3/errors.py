"""What an S3 error means for akoshad: the codes that are worth a retry, the ones that
mean credentials or permissions, the errors the target raises of its own, and ``classify``,
which maps a botocore/aiohttp failure to one of akoshad's errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

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

from akoshad.backoff import parse_retry_after
from akoshad.errors import PermanentError, TransientError

_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "ServiceUnavailable",
        "RequestLimitExceeded",
        "BadDigest",
        "IncompleteBody",
        "OperationAborted",
    }
)
_THROTTLING_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "RequestLimitExceeded"}
)
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "InvalidToken",
        "ExpiredToken",
        "TokenRefreshRequired",
        "AuthorizationHeaderMalformed",
        "InvalidSecurity",
    }
)
_DENIED_CODES = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled"})
_MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


class ChecksumRefused(PermanentError):
    """The server refuses the ``x-amz-checksum-crc32`` header (it does not implement it)."""


class CredentialsRejected(PermanentError):
    """The server refused the keys (unknown, wrong, expired): they may have been rotated."""


class SourceChanged(TransientError):
    """The file shrank while it was being sent; the next pass sends it again."""


class UploadLost(TransientError):
    """The multipart upload is gone (aborted elsewhere): retry the file, not the request."""


class Reply(NamedTuple):
    """What an S3 error reply says: its code ("" when none), HTTP status (0 when
    unknown) and message."""

    code: str
    status: int
    message: str


def reply_of(exc: ClientError) -> Reply:
    """The code, status and message of a botocore ``ClientError``."""
    err = exc.response.get("Error", {}) or {}
    meta = exc.response.get("ResponseMetadata", {}) or {}
    return Reply(
        str(err.get("Code", "") or ""),
        int(meta.get("HTTPStatusCode", 0) or 0),
        str(err.get("Message", "") or ""),
    )


def status_worth_a_retry(status: int) -> bool:
    """A reply status that is a moment's trouble, whoever sent it."""
    return status >= 500 or status in (408, 429)


def no_answer(what: str, endpoint: str | None, seconds: float) -> TransientError:
    """A request that got no answer from ``endpoint`` within ``seconds``."""
    return TransientError(f"{what}: no answer from {endpoint or 'S3'} within {seconds:.0f} s")


def classify(
    exc: Exception,
    what: str,
    *,
    bucket: str,
    endpoint: str | None,
    timeout: float,
    redact: Callable[[str], str],
    missing: str | None = None,
) -> Exception:
    """Map a botocore/aiohttp failure to a transient or permanent error (no secrets)."""
    if isinstance(exc, ClientError):
        return _classify_reply(exc, what, missing, bucket=bucket, redact=redact)
    if isinstance(exc, ParamValidationError):
        return PermanentError(redact(f"{what}: invalid request: {exc}"))
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PermanentError(
            "no S3 credentials found",
            fix="set cloud_sync.access_key_id / secret_access_key or the AWS credential chain",
        )
    if isinstance(exc, SSLError):
        said = re.search(r"\[SSL: \w+\] ([^()\[\]]+)", str(exc))  # never the URL
        return PermanentError(
            f"{what}: TLS handshake with {endpoint or 'S3'} failed"
            + (f": {said.group(1).strip()}" if said else ""),
            fix="check cloud_endpoint and its certificate; a private CA's certificate goes "
            "in the environment variable AWS_CA_BUNDLE",
        )
    if isinstance(exc, TransientError):  # SourceChanged from a window being sent
        return exc
    where = endpoint or "S3"
    if isinstance(exc, EndpointConnectionError | ConnectionClosedError | ConnectTimeoutError):
        return TransientError(f"{what}: cannot reach {where}")
    if isinstance(exc, ReadTimeoutError):
        return no_answer(what, endpoint, timeout)
    if isinstance(exc, BotoCoreError | OSError | TimeoutError):
        return TransientError(f"{what}: {type(exc).__name__} ({where})")
    if type(exc).__module__.startswith("aiohttp"):
        return TransientError(f"{what}: {type(exc).__name__}")
    return exc


def _classify_reply(
    exc: ClientError,
    what: str,
    missing: str | None,
    *,
    bucket: str,
    redact: Callable[[str], str],
) -> Exception:
    code, status, message = reply_of(exc)
    meta = exc.response.get("ResponseMetadata", {}) or {}
    if missing is not None and (code in _MISSING_CODES or (status == 404 and not code)):
        return KeyError(missing)
    if code == "NoSuchBucket":
        return PermanentError(
            f"bucket {bucket!r} does not exist",
            fix=f"create bucket {bucket!r} or fix cloud_sync.cloud_bucket",
        )
    if code == "RequestTimeTooSkewed":  # before the 403s: AWS and SeaweedFS send it as one
        return PermanentError(
            "the S3 server says this machine's clock is wrong", fix="synchronise the clock"
        )
    if code == "AuthorizationHeaderMalformed" and "region" in message.lower():
        return _wrong_region(exc, message)
    if code in _CREDENTIAL_CODES:
        return CredentialsRejected(
            f"the S3 server rejected the credentials ({code})",
            fix="check cloud_sync.access_key_id / secret_access_key",
        )
    if code in _DENIED_CODES or status == 403:
        return PermanentError(
            f"access denied to bucket {bucket!r} ({code or status})",
            fix="check cloud_sync.access_key_id / secret_access_key and the bucket's policy",
        )
    message = redact(message)
    if code != "BadDigest" and (
        code == "NotImplemented"
        or (status in (400, 501) and "checksum" in f"{code} {message}".lower())
    ):
        return ChecksumRefused(f"{what}: {code or status} {message}".strip())
    if code == "NoSuchUpload":
        return UploadLost(f"{what}: NoSuchUpload")
    if code in _TRANSIENT_CODES or status_worth_a_retry(status):
        headers = meta.get("HTTPHeaders", {}) or {}
        retry_after = parse_retry_after(headers.get("retry-after") or headers.get("Retry-After"))
        if retry_after is None and (code in _THROTTLING_CODES or status in (429, 503)):
            retry_after = 1.0
        return TransientError(f"{what}: {code or status}", retry_after=retry_after)
    return PermanentError(f"{what}: {code or status} {message}".strip())


def _wrong_region(exc: ClientError, message: str) -> PermanentError:
    """The server's answer to a request signed for another region than the bucket's
    (AWS, MinIO: ``AuthorizationHeaderMalformed``, naming the region it expects)."""
    expected = str((exc.response.get("Error", {}) or {}).get("Region", "") or "")
    if not expected:
        named = re.search(r"expecting '([A-Za-z0-9-]{1,40})'", message)
        expected = named.group(1) if named else ""
    return PermanentError(
        "the S3 server says the requests are signed for the wrong region "
        "(AuthorizationHeaderMalformed)",
        fix="set cloud_sync.cloud_region to the bucket's region"
        + (f", {expected!r}" if re.fullmatch(r"[A-Za-z0-9-]{1,40}", expected) else ""),
    )
