"""What the bucket check takes for an answer no S3 server gives (``targets/s3/not_s3``)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from akoshad.targets.s3.not_s3 import check_error, not_s3, odd_error, odd_listing


def _error(status: int, code: str = "", message: str = "") -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "ListObjectsV2")


@pytest.mark.parametrize(
    ("status", "code", "message", "odd"),
    [
        (404, "404", "Not Found", "404 Not Found with no S3 error code"),
        (400, "", "", "400 with no S3 error code"),
        (404, "NoSuchKey", "x", "NoSuchKey (an object's error, to a bucket listing)"),
        (404, "NoSuchBucket", "x", None),  # an S3 server's own answer
        (403, "AccessDenied", "x", None),
        (403, "403", "Forbidden", None),  # a gateway's refusal: the access-denied line
        (400, "InvalidArgument", "x", None),
        (503, "503", "Service Unavailable", None),  # retried, whoever sent it
        (500, "", "", None),
        (408, "408", "Request Timeout", None),
        (429, "429", "Too Many Requests", None),
    ],
)
def test_odd_error(status: int, code: str, message: str, odd: str | None) -> None:
    assert odd_error(_error(status, code, message)) == odd


def test_odd_listing() -> None:
    s3 = {"Name": "b", "IsTruncated": False, "KeyCount": 0, "ResponseMetadata": {}}
    assert odd_listing(s3) is None
    assert odd_listing({"IsTruncated": False}) is None
    page = {
        "ResponseMetadata": {"HTTPStatusCode": 200, "HTTPHeaders": {"content-type": "text/html"}}
    }
    assert odd_listing(page) == "200 (text/html) with no bucket listing in it"
    assert odd_listing({}) == "? (no content type) with no bucket listing in it"
    long = {"ResponseMetadata": {"HTTPStatusCode": 200, "HTTPHeaders": {"content-type": "x" * 500}}}
    assert odd_listing(long) == f"200 ({'x' * 77}...) with no bucket listing in it"


def test_a_foreign_message_is_kept_short_on_one_line() -> None:
    said = odd_error(_error(404, "404", "line one\n  line two " + "y" * 200))
    assert said is not None and "\n" not in said and len(said) < 120
    assert said.startswith("404 line one line two yyy") and said.endswith(
        "... with no S3 error code"
    )


def test_not_s3_names_a_path_to_take_out() -> None:
    plain = str(not_s3("http://h:9000", "b", "X"))
    assert plain == (
        "check the bucket 'b': http://h:9000 answered X, not as an S3 server does "
        "(check cloud_sync.cloud_endpoint: the S3 server's scheme://host:port)"
    )
    assert str(not_s3("http://h:9000/", "b", "X")) == plain.replace("9000", "9000/", 1)
    with_path = str(not_s3("http://h:9000/s3/", "b", "X"))
    assert with_path.endswith(
        "scheme://host:port, without the path /s3/; the bucket goes in cloud_sync.cloud_bucket)"
    )


def _no_such_bucket(named: str | None) -> ClientError:
    error: Any = {"Code": "NoSuchBucket", "Message": "The specified bucket does not exist"}
    if named is not None:
        error["BucketName"] = named
    return ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 404}}, "List")


def test_a_missing_bucket_read_from_the_endpoints_path_names_the_path() -> None:
    """Before, ``cloud_endpoint: http://h:9000/foo/bar`` (the server looks for bucket
    'foo') said "bucket 'b' does not exist (create bucket 'b' ...)" of a bucket that exists."""
    said = check_error(_no_such_bucket("foo"), "http://h:9000/foo/bar", "b", str)
    assert str(said) == (
        "check the bucket 'b': http://h:9000/foo/bar answered NoSuchBucket for 'foo', read "
        "from the endpoint's path /foo/bar (check cloud_sync.cloud_endpoint: the S3 server's "
        "scheme://host:port, without the path /foo/bar; the bucket goes in cloud_sync.cloud_bucket)"
    )
    # the bucket itself missing (behind a proxy's prefix too), or not named: the plain error
    assert check_error(_no_such_bucket("b"), "http://h:9000/s3", "b", str) is None
    assert check_error(_no_such_bucket(None), "http://h:9000/s3", "b", str) is None
    assert check_error(_no_such_bucket("foo"), "http://h:9000/", "b", str) is None
