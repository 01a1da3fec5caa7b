"""An https endpoint: the server's certificate is checked, its name included."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from akoshad.errors import PermanentError
from akoshad.targets.s3.target import S3Target
from tests.stalled_s3 import EMPTY_LISTING


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for the IP address 127.0.0.1 alone (not for "localhost"), and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class _Listing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # http.server's name
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(EMPTY_LISTING)))
        self.end_headers()
        self.wfile.write(EMPTY_LISTING)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tls_bucket(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An https server that answers every listing with an empty one: its port and its
    certificate (for 127.0.0.1 only)."""
    cert_file, key_file = _self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Listing)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], cert_file
    finally:
        server.shutdown()
        server.server_close()


def _target(endpoint: str) -> S3Target:
    return S3Target(
        bucket="b",
        endpoint=endpoint,
        region="us-east-1",
        access_key_id="k",
        secret_access_key="s",
        own_prefix="systems/x/",
        max_retries=0,
    )


async def test_a_private_ca_in_aws_ca_bundle_is_trusted(
    tls_bucket: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, AWS_CA_BUNDLE (as the AWS CLI and boto3 take it) was ignored: an endpoint
    with a certificate of a private CA failed every request with 'TLS handshake ... failed',
    with no way to trust it; now it is taken, and the failure says why."""
    port, cert_file = tls_bucket
    endpoint = f"https://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert_file))
    trusted = _target(endpoint)
    try:
        await trusted.check()
    finally:
        await trusted.close()
    monkeypatch.delenv("AWS_CA_BUNDLE")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    unknown = _target(endpoint)
    try:
        with pytest.raises(PermanentError) as refused:
            await unknown.check()
    finally:
        await unknown.close()
    assert str(refused.value) == (
        f"check the bucket: TLS handshake with {endpoint} failed: certificate verify failed: "
        "self-signed certificate (check cloud_endpoint and its certificate; a private CA's "
        "certificate goes in the environment variable AWS_CA_BUNDLE)"
    )


async def test_a_certificate_for_another_name_is_refused(
    tls_bucket: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, the S3 client checked that a trusted CA signed the server's certificate but
    not that it was made for the endpoint's host (aiohttp leaves the name to the TLS
    context, which botocore makes without the check): any site's valid certificate was
    taken, so whoever could answer for the endpoint's address got the signed requests and
    the backups."""
    port, cert_file = tls_bucket
    monkeypatch.setenv("AWS_CA_BUNDLE", str(cert_file))
    wrong = _target(f"https://localhost:{port}")  # the certificate is for 127.0.0.1 only
    try:
        with pytest.raises(PermanentError) as refused:
            await wrong.check()
    finally:
        await wrong.close()
    assert f"TLS handshake with https://localhost:{port} failed: " in str(refused.value)
    assert "localhost" in str(refused.value).split("failed: ", 1)[1]
