"""The S3 target on a real server: clear permanent errors, integrity, memory, retries,
multipart uploads that stop half-way (failure, cancellation, ``kill -9``)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import os
import socket
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

import akoshad.targets.s3.client as s3client
import akoshad.targets.s3.parts as s3parts
import akoshad.targets.s3.target as s3mod
from akoshad.errors import PermanentError, TransientError
from akoshad.targets import make_target
from akoshad.targets.base import Compression
from akoshad.targets.s3.errors import CredentialsRejected
from akoshad.targets.s3.target import S3Target
from tests.faultproxy import FaultPlan, FaultProxy
from tests.s3server import WeedServer

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


def target(s3: WeedServer, system_id: str, **kw: Any) -> S3Target:
    args: dict[str, Any] = {
        "bucket": s3.bucket,
        "endpoint": s3.endpoint,
        "region": "us-east-1",
        "access_key_id": s3.access_key,
        "secret_access_key": s3.secret_key,
        "retry_backoff": 0.1,
        "max_retries": 1,
        "own_prefix": f"systems/{system_id}/",
    }
    args.update(kw)
    return S3Target(**args)


def key(system_id: str, name: str) -> str:
    return f"systems/{system_id}/uploads/u1/{name}"


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(left, 4 * MiB)
            fh.write(os.urandom(n))
            left -= n
    return path


async def uploads_under(t: S3Target, prefix: str) -> list[dict[str, Any]]:
    resp = await t._call(
        lambda c: c.list_multipart_uploads(Bucket=t.bucket, Prefix=prefix), what="list uploads"
    )
    return list(resp.get("Uploads") or [])


# ---- permanent errors: one clear line, no retry storm, no secret ---------------------------
async def expect_permanent(t: S3Target, secret: str | None = None) -> PermanentError:
    t0 = time.monotonic()
    try:
        with pytest.raises(PermanentError) as info:
            await t.start()
    finally:
        await t.close()
    assert time.monotonic() - t0 < 5  # no backoff waits
    assert t.requests == 1 and t.retries == 0  # one request, not max_retries of them
    msg = str(info.value)
    assert "\n" not in msg and msg
    if secret:
        for text in (msg, repr(info.value), repr(t), str(t)):
            assert secret not in text
    return info.value


async def test_wrong_secret_is_permanent_and_quiet(s3: WeedServer, system_id: str) -> None:
    secret = "wrong-secret-that-must-never-leak-42"
    t = target(s3, system_id, secret_access_key=secret, max_retries=5, retry_backoff=2.0)
    err = await expect_permanent(t, secret)
    assert "SignatureDoesNotMatch" in str(err)
    assert "check cloud_sync.access_key_id / secret_access_key" in str(err)


async def test_unknown_access_key_is_permanent(s3: WeedServer, system_id: str) -> None:
    t = target(s3, system_id, access_key_id="AKIANOSUCHKEY", max_retries=5, retry_backoff=2.0)
    err = await expect_permanent(t, s3.secret_key)
    assert "InvalidAccessKeyId" in str(err) and "access_key_id" in str(err)


async def test_missing_bucket_is_permanent(s3: WeedServer, system_id: str) -> None:
    t = target(s3, system_id, bucket="no-such-bucket-x1", max_retries=5, retry_backoff=2.0)
    err = await expect_permanent(t, s3.secret_key)
    assert str(err) == (
        "bucket 'no-such-bucket-x1' does not exist "
        "(create bucket 'no-such-bucket-x1' or fix cloud_sync.cloud_bucket)"
    )


async def test_no_credentials_anywhere_is_permanent(
    s3: WeedServer, system_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    t = target(s3, system_id, access_key_id=None, secret_access_key=None)
    t0 = time.monotonic()
    with pytest.raises(PermanentError, match="no S3 credentials found"):
        await t.start()
    await t.close()
    assert time.monotonic() - t0 < 5


def test_secret_not_in_repr_and_settings_wiring(
    s3: WeedServer, system_id: str, tmp_path: Path
) -> None:
    settings = s3.settings(system_id, home=tmp_path, cloud_sync={"chunk_size_mb": 8})
    t = make_target("cloud", settings)
    assert isinstance(t, S3Target)
    assert s3.secret_key not in repr(t) and s3.secret_key not in str(t)
    assert s3.endpoint in repr(t)
    assert t.part_size == 8 * MiB and t.own_prefix == f"systems/{system_id}/"
    assert t.verify_tls


def _client_error(code: str, status: int, headers: dict[str, str] | None = None) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": "m s3cr3t-value"},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers or {}},
        },
        "PutObject",
    )


@pytest.mark.parametrize(
    ("code", "status", "headers", "kind", "retry_after"),
    [
        ("SlowDown", 503, {"retry-after": "7"}, TransientError, 7.0),
        ("SlowDown", 503, {}, TransientError, 1.0),
        ("", 429, {"Retry-After": "3"}, TransientError, 3.0),
        ("InternalError", 500, {}, TransientError, None),
        ("RequestTimeout", 400, {}, TransientError, None),
        ("BadDigest", 400, {}, TransientError, None),
        ("Whatever", 502, {}, TransientError, None),
        ("Throttling", 400, {}, TransientError, 1.0),
        ("NoSuchUpload", 404, {}, s3mod.UploadLost, None),
        ("AccessDenied", 403, {}, PermanentError, None),
        ("InvalidAccessKeyId", 403, {}, CredentialsRejected, None),
        ("SignatureDoesNotMatch", 403, {}, CredentialsRejected, None),
        ("NoSuchBucket", 404, {}, PermanentError, None),
        ("RequestTimeTooSkewed", 403, {}, PermanentError, None),
    ],
)
def test_error_mapping(
    code: str, status: int, headers: dict[str, str], kind: type, retry_after: float | None
) -> None:
    t = S3Target(bucket="b", endpoint="http://127.0.0.1:1", secret_access_key="s3cr3t-value")
    err = t._classify(_client_error(code, status, headers), "put k")
    assert type(err) is kind
    if isinstance(err, TransientError):
        assert err.retry_after == retry_after
    else:
        assert isinstance(err, PermanentError) and err.fix
    assert "s3cr3t-value" not in str(err)


def test_network_failures_are_transient_and_say_where() -> None:
    t = S3Target(bucket="b", endpoint="http://127.0.0.1:9", timeout=30)
    refused = t._classify(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), "put k")
    assert isinstance(refused, TransientError)
    assert str(refused) == "put k: cannot reach http://127.0.0.1:9"
    slow = t._classify(ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), "put k")
    assert isinstance(slow, TransientError) and "no answer" in str(slow) and "30 s" in str(slow)
    reset = t._classify(ConnectionResetError(104, "Connection reset by peer"), "put k")
    assert isinstance(reset, TransientError)


def test_a_missing_key_is_a_key_error_only_where_asked() -> None:
    t = S3Target(bucket="b", endpoint="http://127.0.0.1:1")
    assert isinstance(t._classify(_client_error("NoSuchKey", 404), "read k", missing="k"), KeyError)
    assert isinstance(t._classify(_client_error("", 404), "head k", missing="k"), KeyError)
    assert isinstance(t._classify(_client_error("NoSuchKey", 404), "put k"), PermanentError)


async def test_endpoint_cache_leaves_keys_alone() -> None:
    """The endpoint resolver ignores ``Key`` (so it caches per bucket): keys still reach
    the request path intact."""
    t = S3Target(
        bucket="b", endpoint="http://127.0.0.1:1", access_key_id="a", secret_access_key="s"
    )
    try:
        client = await t._ensure_client()
        assert isinstance(client._ruleset_resolver._provider, s3client._KeylessEndpoints)
        for k in ("systems/x/uploads/1/a.json", "other/b c+d"):
            url = await client.generate_presigned_url(
                "get_object", Params={"Bucket": "b", "Key": k}
            )
            quoted = k.replace(" ", "%20").replace("+", "%2B")
            assert url.startswith(f"http://127.0.0.1:1/b/{quoted}?"), url
    finally:
        await t.close()


# ---- integrity ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["crc32", "md5"])
async def test_server_rejects_a_wrong_body_checksum(
    s3: WeedServer,
    system_id: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: s3mod.Checksum,
) -> None:
    """x-amz-checksum-crc32 and Content-MD5 are checks SeaweedFS really enforces: a wrong
    one is refused (the SigV4 payload hash is not checked by it, hence not sent)."""
    t = target(s3, system_id, max_retries=0, checksum=kind)
    await t.start()
    try:
        real = s3mod.body_checksum
        monkeypatch.setattr(
            s3mod, "body_checksum", lambda kind, data: real(kind, bytes(data) + b"x")
        )
        k = key(system_id, "small")
        with pytest.raises(TransientError, match="BadDigest"):
            await t.put_bytes(k, b"payload", "application/json")
        assert await t.head(k) is None
        # the multipart path, parts sent straight from the file
        monkeypatch.setattr(
            s3parts._FileWindow, "checksum", lambda self, kind, sha=None: real(kind, b"o")
        )
        big = random_file(tmp_path / "big", 11 * MiB)
        k2 = key(system_id, "big")
        with pytest.raises(TransientError, match="BadDigest"):
            await t.put_file(k2, big, "none")
        assert await t.head(k2) is None
        assert await uploads_under(t, f"systems/{system_id}/") == []
    finally:
        await t.close()


# ---- memory -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def file_200mb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = random_file(tmp_path_factory.mktemp("big") / "random.bin", 200 * MiB)
    yield path
    path.unlink()


@pytest.mark.parametrize("compression", ["none", "gzip"])
async def test_memory_stays_bounded_for_200mb(
    s3: WeedServer, system_id: str, file_200mb: Path, compression: Compression
) -> None:
    size, head_bytes = await asyncio.to_thread(_size_and_start, file_200mb)
    t = target(s3, system_id)
    await t.start()
    k = key(system_id, f"big.{compression}")
    try:
        tracemalloc.start()
        stored = await t.put_file(k, file_200mb, compression)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # plain: windows on the file; gzip: the shared budget of 32 MiB of parts
        assert peak < (16 if compression == "none" else 48) * MiB, peak / MiB
        assert await t.head(k) == stored.stored_size
        parts = -(-stored.stored_size // t.part_size)
        head = await t._call(lambda c: c.head_object(Bucket=t.bucket, Key=k), what=f"head {k}")
        assert head["ETag"].strip('"').endswith(f"-{parts}")
        if compression == "gzip":  # random bytes barely grow; the start decodes
            assert size < stored.stored_size < size * 1.01
            first = await anext(aiter(t.read(k)))
            assert gzip.GzipFile(fileobj=_Prefix(first)).read(1000) == head_bytes  # type: ignore[call-overload]
    finally:
        if tracemalloc.is_tracing():
            tracemalloc.stop()
        await t.delete_keys([k])
        await t.close()


def _size_and_start(path: Path) -> tuple[int, bytes]:
    with path.open("rb") as fh:
        return os.fstat(fh.fileno()).st_size, fh.read(1000)


class _Prefix:
    """Enough of a file object for ``GzipFile`` to decode the start of a stream."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self.data) if n < 0 else self.pos + n
        out = self.data[self.pos : end]
        self.pos += len(out)
        return out


# ---- transient failures -------------------------------------------------------------------
async def test_outage_is_retried_until_the_server_is_back(
    s3: WeedServer, system_id: str, tmp_path: Path
) -> None:
    src = random_file(tmp_path / "f", 12 * MiB)
    t = target(s3, system_id, max_retries=15, retry_backoff=0.1)
    await t.start()
    await asyncio.to_thread(s3.stop)
    restarted = threading.Timer(0.5, s3.start)
    restarted.start()
    try:
        k = key(system_id, "after-outage")
        stored = await t.put_file(k, src, "none")
        assert stored.stored_size == src.stat().st_size
        assert t.retries >= 1
        assert await t.head(k) == src.stat().st_size
    finally:
        await asyncio.to_thread(restarted.join)
        await t.close()


class ReadsThenStops:
    """An endpoint that takes a request's headers and the first MiB of its body, then never
    reads again (a server or middlebox wedged mid-upload: the client's sends stall)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
                got = 0
                while got < MiB:
                    piece = conn.recv(65536)
                    if not piece:
                        break
                    got += len(piece)

    def target(self, **kw: Any) -> S3Target:
        """An S3 target of this endpoint (``kw``: its timeout, retries...)."""
        args: dict[str, Any] = {"access_key_id": "k", "secret_access_key": "s"}
        return S3Target(bucket="b", endpoint=self.url, retry_backoff=0.05, **args, **kw)

    def close(self) -> None:
        for conn in [*self.conns, self.sock]:
            conn.close()


@pytest.mark.skipif(not hasattr(socket, "TCP_USER_TIMEOUT"), reason="Linux's TCP_USER_TIMEOUT")
async def test_a_body_the_server_stops_reading_fails_within_the_timeout(tmp_path: Path) -> None:
    """A part whose body stalls mid-way (nothing acknowledged any more) fails after the
    target's timeout and is retried, instead of holding the upload forever."""
    src = random_file(tmp_path / "f", 40 * MiB)  # far more than the socket buffers hold
    wedged = ReadsThenStops()
    t = wedged.target(timeout=2.0, max_retries=1, part_size=64 * MiB)
    started = time.monotonic()
    try:
        with pytest.raises(TransientError):
            await asyncio.wait_for(t.put_file("systems/x/f", src, "none"), 60)
        assert time.monotonic() - started < 30
        assert t.requests == 2  # the attempt and its retry, each given up
    finally:
        await t.close()
        wedged.close()


async def test_a_server_that_never_answers_is_reported_with_the_whole_wait() -> None:
    """Each request times out after ``timeout`` and is sent again: the last error says how
    often and for how long in all, not only the one request's timeout."""
    silent = ReadsThenStops()
    t = silent.target(timeout=1.0, max_retries=2)
    try:
        with pytest.raises(TransientError) as failed:
            await asyncio.wait_for(t.check(), 60)
        said = str(failed.value)
        assert said.startswith("check the bucket: no answer from") and "within 1 s" in said
        assert "(sent 3 times over " in said and t.requests == 3
        seconds = int(said.rsplit("over ", 1)[1].split(" s)")[0])
        assert 3 <= seconds < 30
    finally:
        await t.close()
        silent.close()


async def test_the_bucket_check_of_a_server_that_never_answers_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The bucket check (every command's and the daemon's first request) waits at most
    ``CHECK_ANSWER_SECONDS`` per try, not the upload timeout (300 s by default): a server
    that takes the request and never answers is reported in seconds, not after 20 min."""
    import akoshad.targets.s3.not_s3 as not_s3

    monkeypatch.setattr(not_s3, "CHECK_ANSWER_SECONDS", 1.0)
    silent = ReadsThenStops()
    t = silent.target(timeout=300.0, max_retries=1)
    started = time.monotonic()
    try:
        with pytest.raises(TransientError) as failed:
            await asyncio.wait_for(t.check(), 60)
        took = time.monotonic() - started
        said = str(failed.value)
        assert said.startswith(f"check the bucket: no answer from {silent.url} within 1 s")
        assert "(sent 2 times over " in said and t.requests == 2
        assert 2 <= took < 15, took
    finally:
        await t.close()
        silent.close()


async def test_5xx_and_slowdown_are_retried_max_retries_times(
    s3: WeedServer, system_id: str
) -> None:
    proxy = FaultProxy(s3.endpoint, FaultPlan(error=1.0, seed=2)).start()
    try:
        t = target(s3, system_id, endpoint=proxy.url, max_retries=2, retry_backoff=0.05)
        with pytest.raises(TransientError):
            await t.put_bytes(key(system_id, "x"), b"data", "application/json")
        await t.close()
        assert proxy.stats.faults["error"] == 3 and t.retries == 2
        proxy.set_plan(FaultPlan(error=0.3, reset=0.2, seed=7))
        t = target(s3, system_id, endpoint=proxy.url, max_retries=10, retry_backoff=0.05)
        for i in range(5):
            await t.put_bytes(key(system_id, f"y{i}"), b"data", "application/json")
        await t.close()
        assert t.retries > 0
    finally:
        proxy.stop()


async def test_multipart_uploads_are_declared_and_completed_with_crc32(
    s3: WeedServer, system_id: str, tmp_path: Path
) -> None:
    t = target(s3, system_id)
    await t.start()
    try:
        k = key(system_id, "crc")
        data = random_file(tmp_path / "crc", 12 * MiB).read_bytes()
        assert (await t.put_file(k, tmp_path / "crc", "none")).stored_size == len(data)
    finally:
        await t.close()
    head = s3.client().head_object(Bucket=s3.bucket, Key=k, ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"].endswith("-3")  # a composite of three part CRC32s
    assert s3.client().get_object(Bucket=s3.bucket, Key=k)["Body"].read() == data


@pytest.mark.parametrize(
    "refusal",
    [
        (501, "NotImplemented", "A header you provided implies functionality not implemented"),
        (400, "InvalidRequest", "x-amz-checksum-crc32 is not supported"),
    ],
)
async def test_a_server_refusing_crc32_gets_content_md5(
    s3: WeedServer, system_id: str, tmp_path: Path, refusal: tuple[int, str, str]
) -> None:
    """Checked bodies on a server without x-amz-checksum-*: one warning, then Content-MD5."""
    plan = FaultPlan(refuse_header="x-amz-checksum-crc32", refusal=refusal)
    proxy = FaultProxy(s3.endpoint, plan).start()
    t = target(s3, system_id, endpoint=proxy.url)
    try:
        await t.start()
        small, big = tmp_path / "small", random_file(tmp_path / "big", 11 * MiB)
        small.write_bytes(b"small")
        assert (await t.put_file(key(system_id, "small"), small, "none")).stored_size == 5
        assert t.checksum == "md5" and proxy.stats.faults["refused"] == 1
        assert (await t.put_file(key(system_id, "big"), big, "none")).stored_size == 11 * MiB
        assert await t.put_bytes(key(system_id, "m.json"), b"{}", "application/json") == 2
        assert proxy.stats.faults["refused"] == 1  # no more tries of CRC32
        fresh = target(s3, system_id, endpoint=proxy.url)  # multipart first, and put_bytes
        assert (await fresh.put_file(key(system_id, "big2"), big, "none")).stored_size > 0
        assert await fresh.put_bytes(key(system_id, "n.json"), b"{}", "application/json") == 2
        assert fresh.checksum == "md5"
        await fresh.close()
    finally:
        await t.close()
        proxy.stop()
    assert await asyncio.to_thread(s3.multipart_uploads, f"systems/{system_id}/") == []
    got = s3.client().get_object(Bucket=s3.bucket, Key=key(system_id, "big"))["Body"].read()
    assert got == big.read_bytes()


# ---- multipart uploads that stop half-way -------------------------------------------------
def slow_parts(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Each part of an uncompressed file takes ``seconds`` longer to prepare."""
    real = s3parts._FileWindow.checksum

    def slow(self: s3parts._FileWindow, kind: s3mod.Checksum, sha: Any = None) -> str:
        time.sleep(seconds)
        return real(self, kind, sha)

    monkeypatch.setattr(s3parts._FileWindow, "checksum", slow)


async def wait_for_upload(s3: WeedServer, prefix: str, within: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        uploads = await asyncio.to_thread(s3.multipart_uploads, prefix)
        if uploads:
            return uploads[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no multipart upload appeared")


async def test_a_file_shrinking_while_sent_is_not_stored(
    s3: WeedServer, system_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = random_file(tmp_path / "shrinks.bin", 16 * MiB)
    real = s3parts._FileWindow.checksum
    calls = 0

    def checksum_then_shrink(window: s3parts._FileWindow, kind: s3mod.Checksum, sha: Any) -> str:
        nonlocal calls
        calls += 1
        if calls == 2:  # the first part is out; the second has just been cut
            os.truncate(src, 6 * MiB)
        return real(window, kind, sha)

    monkeypatch.setattr(s3parts._FileWindow, "checksum", checksum_then_shrink)
    t = target(s3, system_id)
    await t.start()
    try:
        k = key(system_id, "shrinks")
        with pytest.raises(s3mod.SourceChanged):
            await t.put_file(k, src, "none")
        assert await t.head(k) is None
        assert await uploads_under(t, f"systems/{system_id}/") == []
    finally:
        await t.close()


async def test_cancelled_put_aborts_its_multipart_upload(
    s3: WeedServer, system_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow_parts(monkeypatch, 0.3)
    src = random_file(tmp_path / "f", 40 * MiB)
    t = target(s3, system_id)
    await t.start()
    try:
        k = key(system_id, "cancelled")
        put = asyncio.create_task(t.put_file(k, src, "none"))
        await wait_for_upload(s3, f"systems/{system_id}/")
        put.cancel()
        with pytest.raises(asyncio.CancelledError):
            await put
        # the abort was awaited before the cancellation came out: nothing is left
        assert s3.multipart_uploads(f"systems/{system_id}/") == []
        assert await t.head(k) is None
    finally:
        await t.close()


async def test_upload_aborted_elsewhere_fails_fast_without_retries(
    s3: WeedServer, system_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NoSuchUpload (another process's start() aborted it) is transient for the file, but
    sending the part again would fail the same way: no per-request retries, no backoff."""
    slow_parts(monkeypatch, 0.2)
    src = random_file(tmp_path / "f", 40 * MiB)
    t = target(s3, system_id, max_retries=5, retry_backoff=2.0)
    await t.start()
    try:
        k = key(system_id, "lost")
        put = asyncio.create_task(t.put_file(k, src, "none"))
        up = await wait_for_upload(s3, f"systems/{system_id}/")
        s3.client().abort_multipart_upload(Bucket=s3.bucket, Key=k, UploadId=up["UploadId"])
        t0 = time.monotonic()
        with pytest.raises(s3mod.UploadLost):
            await put
        assert time.monotonic() - t0 < 3 and t.retries == 0
        assert await t.head(k) is None
    finally:
        await t.close()


async def test_complete_whose_reply_was_lost_counts_as_done(
    s3: WeedServer, system_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The complete went through but its reply did not: the retry sees NoSuchUpload, and
    the whole object being there makes it a success."""
    real = S3Target._call

    async def lost_reply(self: S3Target, op: Any, *, what: str, **kw: Any) -> Any:
        result = await real(self, op, what=what, **kw)
        if what.startswith("complete"):
            raise s3mod.UploadLost(f"{what}: NoSuchUpload")
        return result

    monkeypatch.setattr(S3Target, "_call", lost_reply)
    src = random_file(tmp_path / "f", 11 * MiB)
    t = target(s3, system_id)
    await t.start()
    try:
        k = key(system_id, "completed")
        stored = await t.put_file(k, src, "none")
        assert stored.stored_size == 11 * MiB == await t.head(k)
    finally:
        await t.close()


async def test_leftover_abort_can_be_turned_off(s3: WeedServer, system_id: str) -> None:
    """A reader of the bucket (verify, restore) must not abort a daemon's running upload."""
    up = s3.client().create_multipart_upload(
        Bucket=s3.bucket, Key=f"systems/{system_id}/uploads/u/x"
    )
    t = target(s3, system_id)
    await t.start(clean_up=False)
    await t.close()
    assert [u["UploadId"] for u in s3.multipart_uploads(f"systems/{system_id}/")] == [
        up["UploadId"]
    ]
    t = target(s3, system_id)
    await t.start()
    assert await t.abort_leftover_uploads() == 0  # start() already took it
    await t.close()
    assert s3.multipart_uploads(f"systems/{system_id}/") == []


UPLOADER = """
import asyncio, sys, time
from pathlib import Path
import akoshad.targets.s3.parts as s3parts
import akoshad.targets.s3.client as s3client
import akoshad.targets.s3.target as s3mod
real = s3parts._FileWindow.checksum
def slow(self, kind, sha=None):
    time.sleep(0.5)
    return real(self, kind, sha)
s3parts._FileWindow.checksum = slow
endpoint, bucket, key_id, secret, key, src = sys.argv[1:]
async def main():
    t = s3mod.S3Target(bucket=bucket, endpoint=endpoint, region="us-east-1",
                       access_key_id=key_id, secret_access_key=secret)
    await t.start()
    await t.put_file(key, Path(src), "none")
asyncio.run(main())
"""


async def test_kill_9_mid_multipart_then_start_aborts_the_leftover(
    s3: WeedServer, system_id: str, tmp_path: Path
) -> None:
    src = random_file(tmp_path / "f", 40 * MiB)
    k = key(system_id, "killed")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        UPLOADER,
        s3.endpoint,
        s3.bucket,
        s3.access_key,
        s3.secret_key,
        k,
        str(src),
        cwd=REPO,
    )
    try:
        up = await wait_for_upload(s3, f"systems/{system_id}/", within=30)
        deadline = time.monotonic() + 10  # at least one part on the server
        while (
            not s3.client()
            .list_parts(Bucket=s3.bucket, Key=k, UploadId=up["UploadId"])
            .get("Parts")
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        proc.kill()
        await proc.wait()
    assert proc.returncode == -9
    assert [u["UploadId"] for u in s3.multipart_uploads(f"systems/{system_id}/")] == [
        up["UploadId"]
    ]
    t = target(s3, system_id)
    await t.start()
    await t.close()
    assert s3.multipart_uploads(f"systems/{system_id}/") == []
    assert s3.keys(f"systems/{system_id}/") == []


async def test_a_skewed_clock_is_reported_as_a_clock_problem(
    s3: WeedServer, system_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A machine whose clock is an hour off: the real server refuses the signature with
    RequestTimeTooSkewed (HTTP 403); the user is told to fix the clock, not the keys."""
    import datetime as dt

    import botocore.auth

    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(
        botocore.auth, "get_current_datetime", lambda: real() - dt.timedelta(hours=1)
    )
    t = target(s3, system_id, max_retries=5, retry_backoff=2.0)
    err = await expect_permanent(t, s3.secret_key)
    assert "clock" in str(err) and err.fix == "synchronise the clock"
    assert "access denied" not in str(err)


class ListingProxy(FaultProxy):
    """Forwards everything; adds ``extra`` keys to every ListObjectsV2 answer (a server
    that ignores ``Prefix``, or repeats a key on the next page)."""

    extra: tuple[str, ...] = ()

    async def _forward(self, request: Any) -> Any:
        resp: Any = await super()._forward(request)
        if request.method == "GET" and request.query.get("list-type") == "2" and self.extra:
            more = "".join(
                f"<Contents><Key>{k}</Key><Size>5</Size><ETag>&quot;x&quot;</ETag>"
                "<StorageClass>STANDARD</StorageClass></Contents>"
                for k in self.extra
            )
            body = bytes(resp.body).replace(
                b"</ListBucketResult>", more.encode() + b"</ListBucketResult>"
            )
            resp.body = body
        return resp


async def test_a_listing_holds_only_keys_under_its_prefix_once(
    s3: WeedServer, system_id: str
) -> None:
    """A server (or a proxy) whose listing ignores ``Prefix`` or repeats a key: the
    clean-up of a failed upload deletes what its listing names, so a foreign key there
    would delete another upload's (or another machine's) objects."""
    from akoshad.pipeline.recovery import Discarder

    upload_id = "20261201T000000000000Z-aaaaaa"
    other = f"systems/{system_id}-other/uploads/{upload_id}/keep.bin"
    mine = f"systems/{system_id}/uploads/{upload_id}/part.bin"
    for k in (other, mine):
        s3.client().put_object(Bucket=s3.bucket, Key=k, Body=b"hello")
    proxy = ListingProxy(s3.endpoint)
    proxy.extra = (other, mine)
    proxy.start()
    t = target(s3, system_id, endpoint=proxy.url)
    try:
        listed = [k async for k in t.list_keys(f"systems/{system_id}/uploads/{upload_id}/")]
        assert listed == [mine]
        await Discarder(system_id).discard(t, upload_id)
    finally:
        await t.close()
        proxy.stop()
    assert s3.keys(f"systems/{system_id}/") == []
    assert s3.keys(other) == [other]  # another system's object survives


class LoopingListProxy(FaultProxy):
    """Every ListObjectsV2 answer says the listing goes on, with the same continuation
    token: a server stuck on one page."""

    async def _forward(self, request: Any) -> Any:
        resp: Any = await super()._forward(request)
        if request.method == "GET" and request.query.get("list-type") == "2":
            body = bytes(resp.body)
            body = body.replace(
                b"<IsTruncated>false</IsTruncated>", b"<IsTruncated>true</IsTruncated>"
            )
            stuck = b"<NextContinuationToken>stuck</NextContinuationToken></ListBucketResult>"
            resp.body = body.replace(b"</ListBucketResult>", stuck)
        return resp


async def test_a_listing_stuck_on_one_page_fails_instead_of_looping(
    s3: WeedServer, system_id: str
) -> None:
    """The same continuation token again: the listing would go round forever (a prune or a
    restore hanging, the keys piling up in memory); it fails as transient instead."""
    k = key(system_id, "one.bin")
    s3.client().put_object(Bucket=s3.bucket, Key=k, Body=b"hello")
    proxy = LoopingListProxy(s3.endpoint).start()
    t = target(s3, system_id, endpoint=proxy.url)
    seen: list[str] = []

    async def listing() -> None:
        async for found in t.list_keys(f"systems/{system_id}/"):
            seen.append(found)

    try:
        with pytest.raises(TransientError, match="continuation token"):
            await asyncio.wait_for(listing(), 20)
    finally:
        await t.close()
        proxy.stop()
    assert seen == [k]


async def test_a_server_refusing_crc32_still_takes_deletes(s3: WeedServer, system_id: str) -> None:
    """DeleteObjects must carry a body checksum: on a server that refuses CRC32 (where
    uploads fall back to Content-MD5), prunes and clean-ups must still delete."""
    plan = FaultPlan(refuse_header="x-amz-checksum-crc32")
    gone = [key(system_id, f"gone{n}.bin") for n in range(3)]
    for k in gone:
        s3.client().put_object(Bucket=s3.bucket, Key=k, Body=b"hello")
    proxy = FaultProxy(s3.endpoint, plan).start()
    t = target(s3, system_id, endpoint=proxy.url)
    md5 = target(s3, system_id, endpoint=proxy.url, checksum="md5")  # request_checksum: md5
    try:
        await t.delete_keys(gone[:1])
        assert t.checksum == "md5" and proxy.stats.faults["refused"] == 1
        await t.delete_keys(gone[1:2])
        await md5.delete_keys(gone[2:])
        assert proxy.stats.faults["refused"] == 1  # MD5 from then on, and from the start
    finally:
        await t.close()
        await md5.close()
        proxy.stop()
    assert s3.keys(f"systems/{system_id}/") == []


async def test_keys_rotated_in_the_credentials_file_are_picked_up(
    s3: WeedServer, system_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No keys in the configuration: botocore's chain reads ``~/.aws/credentials`` once,
    when the client is made. Keys rotated there (the old ones revoked) must be read again
    once the server rejects the old ones, not only at the next restart."""
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    creds = tmp_path / "credentials"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    revoked = "revoked-secret-that-must-never-leak-99"

    def write(key_id: str, secret: str) -> None:
        creds.write_text(
            f"[default]\naws_access_key_id = {key_id}\naws_secret_access_key = {secret}\n"
        )

    write(s3.access_key, revoked)
    t = target(s3, system_id, access_key_id=None, secret_access_key=None)
    try:
        with pytest.raises(PermanentError, match="rejected the credentials") as info:
            await t.check()
        assert revoked not in str(info.value)
        write(s3.access_key, s3.secret_key)  # rotated: the new keys are in the file
        await t.check()
        await t.put_bytes(key(system_id, "after.json"), b"{}", "application/json")
    finally:
        await t.close()
