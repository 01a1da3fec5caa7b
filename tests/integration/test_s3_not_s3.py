"""An endpoint that answers, but not as an S3 server does (``targets/s3/not_s3``): a web
server's page, a bare 404, an S3 server reached through an endpoint with a path. The
bucket check says so in one line, at once, instead of "no uploads" or a retry."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from akoshad.errors import PermanentError, TransientError
from akoshad.targets.s3.target import S3Target
from tests.integration.test_pipeline_s3 import S3Setup
from tests.s3server import WeedServer


class OneAnswer:
    """A real HTTP server on 127.0.0.1 giving every request the same answer."""

    def __init__(self, status: int, body: bytes = b"", content_type: str = "text/html") -> None:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def answering(status: int, body: bytes = b"") -> Iterator[OneAnswer]:
    server = OneAnswer(status, body)
    try:
        yield server
    finally:
        server.close()


def _target(endpoint: str, max_retries: int = 3) -> S3Target:
    return S3Target(
        bucket="b",
        endpoint=endpoint,
        access_key_id="k",
        secret_access_key="a-secret-the-page-never-holds",
        retry_backoff=0.05,
        max_retries=max_retries,
    )


async def _check_fails(t: S3Target, kind: type[Exception]) -> str:
    """What the bucket check of ``t`` raised (of ``kind``); ``t`` closed after."""
    try:
        with pytest.raises(kind) as failed:
            await t.check()
    finally:
        await t.close()
    return str(failed.value)


@pytest.mark.parametrize(
    ("status", "body", "answered"),
    [
        (
            200,
            b"<html><body>It works!</body></html>",
            "200 (text/html) with no bucket listing in it",
        ),
        (404, b"", "404 Not Found with no S3 error code"),
        (400, b"<html>bad request</html>", "400 with no S3 error code"),
    ],
    ids=["page", "bare-404", "html-400"],
)
async def test_an_endpoint_that_is_no_s3_server_is_one_permanent_error(
    status: int, body: bytes, answered: str
) -> None:
    with answering(status, body) as web:
        t = _target(web.url)
        said = await _check_fails(t, PermanentError)
    assert said == (
        f"check the bucket 'b': {web.url} answered {answered}, not as an S3 server does "
        "(check cloud_sync.cloud_endpoint: the S3 server's scheme://host:port)"
    )
    assert t.requests == 1 and t.retries == 0


async def test_a_bare_5xx_is_still_worth_retrying() -> None:
    """A proxy's 503 is a moment's trouble whoever sends it: retried, then transient."""
    with answering(503) as web:
        t = _target(web.url, max_retries=2)
        await _check_fails(t, TransientError)
    assert t.requests == 3


async def test_a_wrong_region_is_told_as_such_not_as_bad_keys() -> None:
    """Before, the reply of AWS or MinIO to a request signed for another region (a typo in
    cloud_region) said "the S3 server rejected the credentials (AuthorizationHeaderMalformed)
    (check cloud_sync.access_key_id / secret_access_key)", of keys that were right."""
    body = (
        b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AuthorizationHeaderMalformed'
        b"</Code><Message>The authorization header is malformed; the region 'us-east1' is "
        b"wrong; expecting 'eu-west-1'</Message><Region>eu-west-1</Region></Error>"
    )
    with answering(400, body) as web:
        said = await _check_fails(_target(web.url), PermanentError)
    assert said == (
        "the S3 server says the requests are signed for the wrong region "
        "(AuthorizationHeaderMalformed) (set cloud_sync.cloud_region to the bucket's region, "
        "'eu-west-1')"
    )


@pytest.mark.s3
async def test_an_endpoint_with_a_path_names_the_path(s3: WeedServer, system_id: str) -> None:
    """SeaweedFS reads ``/akoshad`` as the bucket and the bucket as a key: NoSuchKey to a
    listing, which the check names, with the path to take out."""
    t = S3Target(
        bucket=s3.bucket,
        endpoint=f"{s3.endpoint}/{s3.bucket}",
        region="us-east-1",
        access_key_id=s3.access_key,
        secret_access_key=s3.secret_key,
        own_prefix=f"systems/{system_id}/",
        max_retries=3,
        retry_backoff=0.05,
    )
    said = await _check_fails(t, PermanentError)
    assert "answered NoSuchKey (an object's error, to a bucket listing)" in said
    assert f"without the path /{s3.bucket}; the bucket goes in cloud_sync.cloud_bucket" in said
    assert t.requests == 1


@pytest.mark.s3
def test_an_endpoint_path_read_as_a_missing_bucket_names_the_path(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """Before, ``cloud_endpoint`` with the path ``/backups/s3`` (SeaweedFS looks for bucket
    'backups') said "bucket 'akoshad' does not exist (create bucket 'akoshad' ...)", of a
    bucket that exists."""
    endpoint = f"{s3.endpoint}/backups/s3"
    res = S3Setup(tmp_path, s3, system_id, cloud_endpoint=endpoint).cli("uploads")
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert res.stderr.splitlines() == [
        f"akoshad: check the bucket '{s3.bucket}': {endpoint} answered NoSuchBucket for "
        "'backups', read from the endpoint's path /backups/s3 (check cloud_sync.cloud_endpoint: "
        "the S3 server's scheme://host:port, without the path /backups/s3; the bucket goes in "
        "cloud_sync.cloud_bucket)"
    ]


@pytest.mark.s3
def test_uploads_on_a_web_server_is_an_error_not_an_empty_list(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """Before, ``akoshad uploads`` on an endpoint that answers every request with a page
    said "no uploads for system ..." and exited 0."""
    with answering(200, b"<html>hello</html>") as web:
        s = S3Setup(tmp_path, s3, system_id, cloud_endpoint=web.url)
        res = s.cli("uploads")
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert "no uploads" not in res.stdout
    assert res.stderr.splitlines() == [
        f"akoshad: check the bucket '{s3.bucket}': {web.url} answered 200 (text/html) with no "
        "bucket listing in it, not as an S3 server does (check cloud_sync.cloud_endpoint: the "
        "S3 server's scheme://host:port)"
    ], res.stderr
