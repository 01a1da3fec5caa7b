"""URL credentials: one redaction for what is printed, logged, stored or returned."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from loguru import logger

from akoshad.config import load_settings
from akoshad.errors import AkoshadError, ConfigError, PermanentError, TransientError
from akoshad.redaction import REDACTED, redact, redact_url, register_url
from akoshad.runtime.logs import setup_logging
from akoshad.store.db import StateDB

R = REDACTED


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://user:pw@host/mcp", f"http://user:{R}@host/mcp"),
        ("https://TOKENVALUE@git.example/x", f"https://{R}@git.example/x"),
        ("http://u:p%40ss@h:8682/mcp", f"http://u:{R}@h:8682/mcp"),
        ("http://u:p@ss@h/", f"http://u:{R}@h/"),  # an unencoded @ in the password
        ("http://h/mcp?token=T1&v=2", f"http://h/mcp?token={R}&v=2"),
        ("http://h/?TOKEN=a&Key=b&api_key=c", f"http://h/?TOKEN={R}&Key={R}&api_key={R}"),
        ("http://h/?client_secret=s&password=p", f"http://h/?client_secret={R}&password={R}"),
        (
            "https://b.s3/o?X-Amz-Signature=abc&X-Amz-Credential=AK%2F1&x-amz-security-token=t",
            f"https://b.s3/o?X-Amz-Signature={R}&X-Amz-Credential={R}&x-amz-security-token={R}",
        ),
        (
            "http://h/?sig=s&signature=z#access_token=f",
            f"http://h/?sig={R}&signature={R}#access_token={R}",
        ),
        ("http://a:b@h/?token=t", f"http://a:{R}@h/?token={R}"),
        # an Azure Functions key, an OAuth code, a session: no secret word in their names
        (
            "https://f.azurewebsites.net/api/mcp?code=AbC123xyz-_==&v=2",
            f"https://f.azurewebsites.net/api/mcp?code={R}&v=2",
        ),
        ("http://h/cb?code=4/0AbCd&state=x", f"http://h/cb?code={R}&state=x"),
        ("http://h/?jwt=e.y.z&session=s1&ticket=t2", f"http://h/?jwt={R}&session={R}&ticket={R}"),
    ],
)
def test_redact_url_hides_credentials(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert redact_url(expected) == expected  # idempotent


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8682/mcp",
        "https://s3.example.com:9000",
        "http://h/mcp?v=1&page=2",
        "http://h/path?token=",  # nothing to hide
    ],
)
def test_plain_urls_are_left_alone(url: str) -> None:
    assert redact_url(url) == url


def test_registered_credentials_are_hidden_in_any_form() -> None:
    register_url("http://someone:S%2Fcr3t-Pw-91@h.example/mcp?token=Tk-Q81-abc&x=1")
    for text in (
        "auth failed for S/cr3t-Pw-91",  # decoded
        "auth failed for S%2Fcr3t-Pw-91",  # as written
        "auth failed for S%2fcr3t-Pw-91".replace("%2f", "%2F"),
        "bad token Tk-Q81-abc in reply",  # the value without its name
        json.dumps({"error": "S/cr3t-Pw-91"}),  # escaped in JSON text
        "Cannot connect to host h.example:80 URL('http://someone:S%2Fcr3t-Pw-91@h.example/mcp')",
    ):
        out = redact(text)
        assert "cr3t-Pw-91" not in out and "Tk-Q81-abc" not in out, out


def test_short_credentials_are_hidden_in_context_only() -> None:
    register_url("http://me:pw@short.example/?key=k1")
    assert redact("GET http://me:pw@short.example/?key=k1") == (
        f"GET http://me:{R}@short.example/?key={R}"
    )
    assert redact("me:pw@short.example and key=k1") == f"me:{R}@short.example and key={R}"
    assert redact("pw and k1 are common letters") == "pw and k1 are common letters"


def test_config_show_and_registration(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"HOME": str(tmp_path)},
        overrides={
            "akosha_url": "http://ak:Conf-Pass-1x@127.0.0.1:8682/mcp?token=Conf-Tok-2y",
            "webhooks": [
                {
                    "url": "https://u:Hook-Pw-3z@hooks.example/x?sig=Hook-Sig-4w",
                    "secret": "Hk-Sec-5v",
                }
            ],
            "cloud_sync": {"cloud_bucket": "b", "cloud_endpoint": "http://s3.local"},
        },
    )
    shown = json.dumps(settings.redacted())
    for secret in (
        "Conf-Pass-1x",
        "Conf-Tok-2y",
        "Hook-Pw-3z",
        "Hook-Sig-4w",
        "Hk-Sec-5v",
    ):
        assert secret not in shown
        assert redact(f"free text with {secret} in it") == f"free text with {R} in it"
    data = settings.redacted()
    assert data["akosha_url"] == f"http://ak:{R}@127.0.0.1:8682/mcp?token={R}"
    # webhook URLs are redacted more strictly: no user info at all
    assert data["webhooks"][0]["url"] == f"https://hooks.example/x?sig={R}"
    assert data["webhooks"][0]["secret"] == R
    assert settings.akosha_url is not None and "Conf-Pass-1x" in settings.akosha_url  # still usable


def test_reprs_show_endpoints_redacted(tmp_path: Path) -> None:
    from akoshad.targets.s3.target import S3Target

    target = S3Target(bucket="b", endpoint="http://e:Repr-Pw-9@s3")
    assert "Repr-Pw-9" not in repr(target) and f"e:{R}@s3" in repr(target)


def test_error_texts_are_redacted() -> None:
    register_url("http://x:Err-Pass-77@host/mcp")
    url = "http://x:Err-Pass-77@host/mcp?token=Err-Tok-88"
    for exc in (
        AkoshadError(f"cannot reach {url}"),
        TransientError(f"cannot reach {url}: reset"),
        PermanentError(f"no MCP endpoint at {url}", fix="set akosha_url"),
    ):
        assert "Err-Pass-77" not in str(exc) and "Err-Tok-88" not in str(exc)
        assert "host/mcp" in str(exc)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    yield io.StringIO()
    logger.remove()
    logger.add(io.StringIO())


def test_log_lines_hide_url_credentials(tmp_path: Path, captured: io.StringIO) -> None:
    url = "http://logger:Log-Pass-12@127.0.0.1:9/mcp?token=Log-Tok-34"
    settings = load_settings(environ={"HOME": str(tmp_path)}, overrides={"akosha_url": url})
    setup_logging(settings, environ={}, stream=captured)
    logger.error("cannot reach {}: connection refused", url)
    logger.warning("Akosha said: bad password Log-Pass-12")
    try:
        raise ConnectionError(f"reset by {url}")
    except ConnectionError:
        logger.exception("delivery failed")
    text = captured.getvalue()
    assert "127.0.0.1:9/mcp" in text
    assert "Log-Pass-12" not in text and "Log-Tok-34" not in text


async def test_stored_errors_are_redacted(tmp_path: Path) -> None:
    """Errors from libraries (aiohttp, botocore) are stored as text: never with a credential."""
    register_url("http://st:State-Pass-56@h/mcp")
    state = StateDB(tmp_path / "state.db")
    await state.open()
    try:
        await state.requeue(
            "a.json", 0.0, "ClientError: http://st:State-Pass-56@h/mcp?key=K-789xyz"
        )
        (item,) = await state.queue_items()
        assert item.last_error == f"ClientError: http://st:{R}@h/mcp?key={R}"
    finally:
        await state.close()


def test_settings_reprs_hide_url_credentials(tmp_path: Path) -> None:
    settings = load_settings(
        environ={"HOME": str(tmp_path)},
        overrides={
            "akosha_url": "http://ak:Repr-Ak-Pw-1@127.0.0.1:8682/mcp?token=Repr-Ak-Tok-2",
            "webhooks": [{"url": "https://hooks.example/services/T0/B0/Repr0Hook0Tok3n42"}],
        },
    )
    texts = [repr(settings), str(settings), repr(settings.cloud_sync), repr(settings.webhooks)]
    texts += [str(settings.cloud_sync), str(settings.webhooks[0]), f"{settings!r}"]
    for text in texts:
        for secret in ("Repr-Ak-Pw-1", "Repr-Ak-Tok-2", "Repr0Hook0Tok3n42"):
            assert secret not in text, text
    assert f"ak:{R}@127.0.0.1:8682" in repr(settings)
    assert "hooks.example/services/T0/B0/" in repr(settings.webhooks[0])
    assert settings.akosha_url is not None and "Repr-Ak-Pw-1" in settings.akosha_url


@pytest.mark.parametrize("delimiter", ["/", "?", "#"])
@pytest.mark.parametrize(
    ("field", "overrides"),
    [
        ("akosha_url", lambda url: {"akosha_url": url}),
        ("cloud_sync.cloud_endpoint", lambda url: {"cloud_sync": {"cloud_endpoint": url}}),
        ("webhooks.0.url", lambda url: {"webhooks": [{"url": url}]}),
    ],
)
def test_url_whose_password_ends_its_host_part_is_refused(
    tmp_path: Path, field: str, overrides: Any, delimiter: str
) -> None:
    # an unencoded / ? or # in a password ends the host part: the URL parses as host
    # "ak" with port "Pw...", so no redaction can find the password, which would then
    # show in `config show`, in every error about the URL, in status and in the log
    url = f"http://ak:Pw{delimiter}Hid-Den-77@127.0.0.1:8682/mcp"
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"HOME": str(tmp_path)}, overrides=overrides(url))
    message = str(info.value)
    assert message.startswith(f"invalid configuration: {field}: ") and "\n" not in message
    assert "Hid-Den-77" not in message and "percent-encode" in message
    encoded = url.replace(f"Pw{delimiter}", f"Pw{quote(delimiter, safe='')}")
    if field == "cloud_sync.cloud_endpoint":  # S3 never takes credentials in its URL
        with pytest.raises(ConfigError, match="holds a user name or password") as info:
            load_settings(environ={"HOME": str(tmp_path)}, overrides=overrides(encoded))
        assert "Hid-Den-77" not in str(info.value)
        return
    settings = load_settings(environ={"HOME": str(tmp_path)}, overrides=overrides(encoded))
    assert "Hid-Den-77" not in json.dumps(settings.redacted())


@pytest.mark.parametrize(
    ("url", "said"),
    [
        *[(f"http://{u}127.0.0.1:9000", "holds a user") for u in ("e:Hid-9z@", "e@", ":Hid-9z@")],
        *[
            (f"http://127.0.0.1:9000{tail}", "holds a query")
            for tail in ("/?token=Hid-9z", "?token=Hid-9z", "/#Hid-9z", "/?", "/p?x-token=Hid-9z")
        ],
    ],
)
def test_an_s3_endpoint_with_credentials_a_query_or_a_fragment_is_refused(
    tmp_path: Path, url: str, said: str
) -> None:
    """botocore signs each request itself and fails every one sent to a URL holding a
    user name or password (an unclear HTTPClientError), and cannot resolve one with a query
    or fragment (EndpointResolutionError, retried): refused at load, one line, unechoed."""
    with pytest.raises(ConfigError) as info:
        load_settings(
            environ={"HOME": str(tmp_path)},
            overrides={"cloud_sync": {"cloud_bucket": "b", "cloud_endpoint": url}},
        )
    message = str(info.value)
    assert message.startswith(f"invalid configuration: cloud_sync.cloud_endpoint: {said}")
    assert "Hid-9z" not in message and "\n" not in message and info.value.exit_code == 78


def test_a_bad_port_without_credentials_is_not_told_to_encode_them(tmp_path: Path) -> None:
    """Before, ``cloud_endpoint: http://127.0.0.1:99999`` was told to "percent-encode a / ?
    # in its user name or password", of a URL with neither."""
    with pytest.raises(ConfigError) as info:
        load_settings(
            environ={"HOME": str(tmp_path)},
            overrides={"cloud_sync": {"cloud_bucket": "b", "cloud_endpoint": "http://h:99999"}},
        )
    assert str(info.value) == (
        "invalid configuration: cloud_sync.cloud_endpoint: its host part does not parse "
        "(the port is not a number from 0 to 65535) (from command line)"
    )
