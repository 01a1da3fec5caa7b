"""An endpoint that answers, but not as an S3 server does: told at the bucket check.

The check every start makes is a one-key bucket listing (``S3Target.check``). An S3 server
answers it with a listing (``Name``, ``IsTruncated``, ``KeyCount``...) or with an error
whose XML body carries a code (``NoSuchBucket``, ``AccessDenied``...). Anything else comes
from something that is not the S3 server the user meant: a web server or proxy on that
port answering 404 with no body, or 200 with a page (which botocore parses as an empty
listing: ``uploads`` would say "no uploads"), or an S3 server reached through a
``cloud_endpoint`` with a path, which reads the path as the bucket and the bucket as a key
(``NoSuchKey``: an object's error, to a listing). Each is one permanent error naming the
endpoint and what it answered, with the fix; never "no uploads" nor a retry. A path of two
parts or more, or of a bucket that does not exist, gets ``NoSuchBucket`` naming the path's
first part: that is said, rather than that the configured bucket does not exist.

Errors worth another try whoever sends them (5xx, 408, 429) and a bare 403 (a gateway's
refusal: the access-denied line says the right thing) are left to ``errors.classify``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError

from akoshad.errors import PermanentError
from akoshad.targets.s3.errors import reply_of, status_worth_a_retry

if TYPE_CHECKING:
    from akoshad.targets.s3.target import S3Target

LISTING_FIELDS = ("Name", "IsTruncated", "KeyCount", "MaxKeys", "Contents")


def _short(text: str, limit: int = 80) -> str:
    """What a foreign server sent, in one short piece for a log line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def odd_error(exc: ClientError) -> str | None:
    """What an error reply to the bucket listing shows when no S3 server sent it (None
    when one may have)."""
    code, status, message = reply_of(exc)
    if status_worth_a_retry(status) or status == 403:
        return None
    if code == "NoSuchKey":
        return "NoSuchKey (an object's error, to a bucket listing)"
    if not code or code == str(status):  # botocore's code when the body held none
        return f"{status} {_short(message)}".strip() + " with no S3 error code"
    return None


def odd_listing(reply: Mapping[str, Any]) -> str | None:
    """What a successful answer to the bucket listing was when it holds no listing (None
    when it does)."""
    if any(field in reply for field in LISTING_FIELDS):
        return None
    meta = reply.get("ResponseMetadata", {}) or {}
    headers = meta.get("HTTPHeaders", {}) or {}
    kind = _short(str(headers.get("content-type") or "")) or "no content type"
    return f"{meta.get('HTTPStatusCode', '?')} ({kind}) with no bucket listing in it"


def not_s3(endpoint: str | None, bucket: str, answered: str) -> PermanentError:
    """The one-line error for an endpoint that ``answered`` the listing as no S3 server
    does."""
    fix = "check cloud_sync.cloud_endpoint: the S3 server's scheme://host:port"
    path = urlsplit(endpoint).path if endpoint else ""
    if path.strip("/"):
        fix += f", without the path {path}; the bucket goes in cloud_sync.cloud_bucket"
    return PermanentError(
        f"check the bucket {bucket!r}: {endpoint or 'S3'} answered {answered}, "
        "not as an S3 server does",
        fix=fix,
    )


def check_error(
    exc: ClientError, endpoint: str | None, bucket: str, redact: Callable[[str], str]
) -> PermanentError | None:
    """The bucket check's error for a reply that is not what it seems (None: classify it
    as any other): an answer no S3 server gives, or a missing bucket that is not
    ``bucket`` but the first part of the endpoint's path."""
    odd = odd_error(exc)
    if odd is not None:
        return not_s3(endpoint, bucket, redact(odd))
    return _path_read_as_bucket(exc, endpoint, bucket, redact)


def _path_read_as_bucket(
    exc: ClientError, endpoint: str | None, bucket: str, redact: Callable[[str], str]
) -> PermanentError | None:
    path = urlsplit(endpoint).path if endpoint else ""
    if reply_of(exc).code != "NoSuchBucket" or not path.strip("/"):
        return None
    named = str((exc.response.get("Error", {}) or {}).get("BucketName", "") or "")
    if not named or named == bucket:
        return None  # a proxy's prefix, with the bucket missing behind it, or not known
    named = _short(redact(named))
    return PermanentError(
        f"check the bucket {bucket!r}: {endpoint} answered NoSuchBucket for {named!r}, "
        f"read from the endpoint's path {path}",
        fix=(
            "check cloud_sync.cloud_endpoint: the S3 server's scheme://host:port, without "
            f"the path {path}; the bucket goes in cloud_sync.cloud_bucket"
        ),
    )


# the most one try of the bucket check (a one-key listing) waits for its answer
CHECK_ANSWER_SECONDS = 30.0


async def check_bucket(target: S3Target) -> None:
    """``S3Target.check``: a one-key listing of the target's own prefix, its error replies
    and odd answers told as above."""

    async def list_one(client: Any) -> Any:
        try:
            return await client.list_objects_v2(
                Bucket=target.bucket, Prefix=target.own_prefix, MaxKeys=1
            )
        except ClientError as exc:
            err = check_error(exc, target.endpoint, target.bucket, target._redact)
            if err is not None:
                raise err from None
            raise

    # every command and the daemon's start make this request first: a server that
    # takes it and never answers is reported in seconds, not upload_timeout_seconds
    reply = await target._call(
        list_one,
        what="check the bucket",
        answer_within=min(target.timeout, CHECK_ANSWER_SECONDS),
    )
    odd = odd_listing(reply)
    if odd is not None:
        raise not_s3(target.endpoint, target.bucket, target._redact(odd))
