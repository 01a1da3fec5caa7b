"""What an S3 error means for akoshad: the codes that are worth a retry, the ones that
mean credentials or permissions, and the errors the target raises of its own."""

from __future__ import annotations

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


class SourceChanged(TransientError):
    """The file shrank while it was being sent; the next pass sends it again."""


class UploadLost(TransientError):
    """The multipart upload is gone (aborted elsewhere): retry the file, not the request."""
