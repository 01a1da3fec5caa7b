"""The S3 target's client: how it is opened (with the pool that prepares parts), its
botocore settings (one attempt per request, timeouts, a fixed User-Agent, no payload
signing) and an endpoint cache that does not run the rules again for every object name.

The client is aiobotocore's, made from a session of its own: boto3's layer (aioboto3's
``Session``, resources, transfer methods) is not needed for a client and not imported. Once
the client is made, the tables only its making needed are let go (see ``_release_tables``).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import inspect
import json
import socket
import ssl
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.httpsession import AIOHTTPSession
from aiobotocore.session import AioSession
from loguru import logger

from akoshad import __version__
from akoshad.targets.s3 import window_payload

if TYPE_CHECKING:
    from akoshad.targets.s3.target import S3Target


def _stall_bound_socket(timeout: float, addr_info: Any) -> socket.socket:
    """A connection's socket on which data the peer leaves unacknowledged for ``timeout``
    seconds (a wedged server, a connection dropped on the way) ends the connection
    (Linux's TCP_USER_TIMEOUT): aiohttp's read timeout starts only once the body is sent,
    so a body the server stopped reading would otherwise hold its request forever."""
    family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family, kind, proto)
    user_timeout = getattr(socket, "TCP_USER_TIMEOUT", None)
    if user_timeout is not None and family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # a kernel without it: as before
            sock.setsockopt(socket.IPPROTO_TCP, user_timeout, max(1, int(timeout * 1000)))
    return sock


# aiohttp 3.12 and later (an older one keeps its own sockets: stalls are bounded as before)
_CONNECTOR_TAKES_SOCKET_FACTORY = (
    "socket_factory" in inspect.signature(aiohttp.TCPConnector.__init__).parameters
)


class StallBoundSession(AIOHTTPSession):  # type: ignore[misc]  # aiobotocore is untyped
    """aiobotocore's HTTP session whose connections end when sending stalls past the read
    timeout (:func:`_stall_bound_socket`) and whose TLS checks the server's name."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        read_timeout = self._timeout.sock_read
        if read_timeout and _CONNECTOR_TAKES_SOCKET_FACTORY:
            factory = functools.partial(_stall_bound_socket, float(read_timeout))
            connector: dict[str, Any] = dict(getattr(self, "_connector_args", None) or {})
            connector["socket_factory"] = factory
            self._connector_args = connector

    def _get_ssl_context(self) -> ssl.SSLContext:
        """botocore's TLS context, which leaves the host name to urllib3: aiohttp does not
        check it, so the context must (else any trusted certificate would do)."""
        context: ssl.SSLContext = super()._get_ssl_context()
        context.check_hostname = True
        return context


def _no_expect(params: dict[str, Any], **_kwargs: Any) -> None:
    """botocore's ``before-call`` event, after its own handler: no ``Expect: 100-continue``.
    aiohttp waits for the ``100 Continue`` without any timeout (its read timeout starts once
    the body is sent), so a server that never said it held a request forever; the body
    goes at once instead, bounded like any other (:func:`_stall_bound_socket`)."""
    headers = params.get("headers")
    if headers is not None:
        headers.pop("Expect", None)


def required_checksum_as_md5(params: dict[str, Any]) -> None:
    """For a request that must carry a body checksum (``DeleteObjects``), Content-MD5
    instead of botocore's default ``x-amz-checksum-crc32``: called from the target's
    ``before-call`` handler (after botocore's own, which may rewrite the body) once the
    server refused CRC32 (or with ``request_checksum: md5``)."""
    checksum = (params.get("context") or {}).get("checksum")
    body = params.get("body")
    if not isinstance(checksum, dict) or not checksum.get("request_algorithm"):
        return
    if not isinstance(body, bytes | bytearray):  # a streamed body: left to botocore
        return
    checksum.pop("request_algorithm")  # botocore adds no CRC32 ...
    checksum.pop("request_algorithm_header", None)  # ... nor x-amz-sdk-checksum-algorithm
    params["headers"]["Content-MD5"] = base64.b64encode(hashlib.md5(body).digest()).decode()


def client_config(endpoint: str | None, timeout: float, parts_in_flight: int) -> AioConfig:
    """The botocore settings of the target's one client (retries are akoshad's own)."""
    return AioConfig(
        http_session_cls=StallBoundSession,
        s3={
            "addressing_style": "path" if endpoint else "auto",
            # the body checksum header (signed, checked by the server) protects every
            # body; hashing each body again for SigV4 costs client CPU for no extra check
            "payload_signing_enabled": False,
        },
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=min(30.0, timeout),
        read_timeout=timeout,
        max_pool_connections=max(10, parts_in_flight * 4),
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        signature_version="s3v4",
        tcp_keepalive=True,
        # a fixed User-Agent: botocore otherwise rebuilds its own from some 30 parts on
        # every request (a tenth of the client CPU of a small PUT)
        user_agent=f"akoshad/{__version__}",
    )


class _KeylessEndpoints:
    """botocore's S3 endpoint rules never read the ``Key`` parameter, yet it is part of the
    resolver's cache key, so every new object name ran the whole rule set again (0.5 ms of
    CPU, a third of a small PUT's). This resolves without it; the result is the same."""

    def __init__(self, provider: Any) -> None:
        self._provider = provider

    def resolve_endpoint(self, **params: Any) -> Any:
        params.pop("Key", None)
        return self._provider.resolve_endpoint(**params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._provider, name)


def _cache_endpoints_per_bucket(client: Any) -> None:
    """Install ``_KeylessEndpoints`` when this botocore's rules indeed ignore ``Key``."""
    try:
        resolver = client._ruleset_resolver
        rules = client._loader.load_service_model("s3", "endpoint-rule-set-1")
        if '"Key"' in json.dumps(rules["rules"]) or resolver is None:
            return
        resolver._provider = _KeylessEndpoints(resolver._provider)
    except Exception as exc:  # internals moved: keep botocore's own behaviour
        logger.debug("S3 endpoint cache left as it is: {}", exc)


def region_name(region: str | None, endpoint: str | None) -> str | None:
    """A custom endpoint gets the configured name as is (R2 wants ``auto``); AWS itself
    needs a real region, so there ``auto`` means the default chain's."""
    if not region or (region == "auto" and endpoint is None):
        return None
    return region


def _release_tables(session: AioSession, client: Any) -> None:
    """Let go of what only the client's making needed: botocore's ``endpoints.json`` table
    (the session's resolver holds it, and stays alive through the client creator that two
    of the client's event handlers are bound to) and the loader's cache of the raw JSON it
    read (the service model keeps what it uses; anything else is read again if asked for).
    About 2 MiB of the idle daemon's resident memory (the first pass reuses the heap)."""
    try:
        session._get_internal_component("endpoint_resolver")._endpoint_data = {"partitions": []}
        client._loader._cache.clear()
    except Exception as exc:  # internals moved: the tables stay, nothing else changes
        logger.debug("S3 client tables kept: {}", exc)


def _session(target: S3Target) -> AioSession:
    """A session with the target's keys, if it has any (else botocore's credential chain)
    and its region, if it names one (else the environment's or the profile's)."""
    session = AioSession()
    if target._access_key_id or target._secret:
        session.set_credentials(target._access_key_id, target._secret)
    region = region_name(target.region, target.endpoint)
    if region is not None:
        session.set_config_variable("region", region)
    return session


async def reload_credentials(target: S3Target, client: Any) -> None:
    """The credential chain read again for the client's next requests: keys that come
    from it (``~/.aws/credentials``, a profile...) are read once, when the client is made,
    so keys rotated there would otherwise wait for a restart. Best effort: logged."""
    try:
        credentials = await _session(target).get_credentials()
        if credentials is not None:
            client._request_signer._credentials = credentials
    except Exception as exc:  # the chain unreadable now, or internals moved: as before
        logger.debug("S3 credentials not read again: {}", type(exc).__name__)


async def open_client(target: S3Target) -> tuple[AsyncExitStack, Any, ThreadPoolExecutor]:
    """The target's client and its part-preparation pool, with the stack that closes both;
    a failure to open comes out classified."""
    window_payload.register()  # file windows go out with sendfile
    session = _session(target)
    # no region anywhere: us-east-1, from which botocore follows a bucket's redirect
    region = session.get_config_variable("region") or "us-east-1"
    config = client_config(target.endpoint, target.timeout, target.parts_in_flight)
    stack = AsyncExitStack()
    try:
        pool = ThreadPoolExecutor(
            max_workers=target.parts_in_flight, thread_name_prefix="akoshad-s3"
        )
        stack.callback(pool.shutdown, wait=False, cancel_futures=True)
        client = await stack.enter_async_context(
            session.create_client(
                "s3",
                endpoint_url=target.endpoint,
                region_name=region,
                config=config,
                # None is botocore's default, still checked: against AWS_CA_BUNDLE when it
                # is set (a private CA), else its own CAs; True ignored AWS_CA_BUNDLE
                verify=None if target.verify_tls else False,
            )
        )
    except BaseException as exc:
        await stack.aclose()
        if isinstance(exc, Exception):
            raise target._classify(exc, "open the S3 client") from None
        raise
    client.meta.events.register("before-call.s3", _no_expect)
    _cache_endpoints_per_bucket(client)
    _release_tables(session, client)
    return stack, client, pool
