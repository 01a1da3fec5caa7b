"""The configuration's groups ``cloud_sync:`` (``CloudSync``) and ``webhooks:``
(``Webhook``), with the URL checks they share with ``Settings``."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterable
from typing import Any, Literal
from urllib.parse import SplitResult, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from akoshad.config.checks import check_bucket
from akoshad.events import EVENT_NAMES, EventName
from akoshad.names import SYSTEM_ID_RE
from akoshad.redaction import redact_url, redact_webhook_url

MIN_CHUNK_MB = 5  # S3's smallest multipart part


ReprArgs = Iterable[tuple[str | None, Any]]
# botocore's check of a region name (botocore.utils.validate_region_name): a host label
_REGION = re.compile(r"^(?![0-9]+$)(?!-)[a-zA-Z0-9-]{,63}(?<!-)$")


def shown(args: ReprArgs, how: dict[str, Callable[[str], str]]) -> ReprArgs:
    """A model's repr arguments with the URL fields in ``how`` shown redacted (a repr
    or str of the configuration must not show the credentials a URL may hold)."""
    for name, value in args:
        show = how.get(name or "")
        yield name, show(value) if show is not None and isinstance(value, str) else value


def check_url(value: str, example: str = "") -> str:
    """``value`` when it is an http(s) URL whose host part parses (:func:`parsed_url`),
    its scheme in lower case (``HTTPS://`` is ``https://``: schemes have no case)."""
    parsed_url(value, example)
    return lower_scheme(value)


def lower_scheme(url: str) -> str:
    """``url`` with its scheme (``http``/``https``, any case) in lower case."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.lower()}{sep}{rest}" if sep else url


def parsed_url(value: str, example: str = "") -> SplitResult:
    """The parts of ``value`` when it is an http(s) URL whose host part parses;
    ``ValueError`` (never echoing the value) otherwise. A password holding an unencoded
    ``/``, ``?`` or ``#`` ends the host part there (``http://user:pa/ss@host`` is host
    ``user``, port ``pa``): no redaction could then tell the password, so such a URL is
    refused."""
    if not re.match(r"^https?://[^/\s]+", value, re.IGNORECASE):
        raise ValueError(f"must be an http:// or https:// URL{example}")
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("holds a space or a control character: percent-encode it (%20)")
    try:
        parts = urlsplit(value)
        _port = parts.port  # raises for a host part that does not parse
    except ValueError as exc:
        if "IPv6" in str(exc):
            raise ValueError("its host part does not parse: a [ is not closed by ]") from None
        credentials = (  # only where a user name or password may be the cause
            ": percent-encode a / ? # in its user name or password (%2F %3F %23)"
            if "@" in value
            else ""
        )
        raise ValueError(
            f"its host part does not parse (the port is not a number from 0 to 65535){credentials}"
        ) from None
    if not parts.hostname:
        raise ValueError("has no host name")
    return parts


def slug_system_id(hostname: str) -> str:
    """Slug a host name to Akosha's ``system_id`` alphabet ``[A-Za-z0-9_-]``."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", hostname).strip("-")[:100]
    return slug or "akoshad"


class CloudSync(BaseModel):
    """The ``cloud_sync:`` group, with session-buddy's own names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cloud_bucket: str | None = None
    cloud_endpoint: str | None = None
    cloud_region: str = "auto"
    system_id: str = Field(default_factory=lambda: slug_system_id(socket.gethostname()))
    upload_on_session_end: bool = Field(
        default=True,
        description="accepted for session-buddy's sake: the watcher uploads when a session "
        "ends (its store files change then) whatever this says",
    )
    enable_fallback: bool = True
    force_method: Literal["auto", "cloud", "http"] = "auto"
    upload_timeout_seconds: int = Field(default=300, ge=30, le=3600)
    max_retries: int = Field(default=3, ge=0, le=10)
    retry_backoff_seconds: float = Field(default=2.0, ge=0.1, le=60)
    enable_compression: bool = True
    enable_deduplication: bool = True
    chunk_size_mb: int = Field(
        default=5,
        ge=1,
        le=100,
        description="multipart part size (1-100 as in session-buddy); S3 needs at least "
        "5 MiB, so a smaller value is raised to 5 (with a note)",
    )
    request_checksum: Literal["crc32", "md5"] = Field(
        default="crc32",
        description="per-request body check the S3 server verifies: x-amz-checksum-crc32 "
        "(fast; falls back to md5 by itself if the server refuses it) or Content-MD5",
    )
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None

    def __repr_args__(self) -> ReprArgs:
        return shown(super().__repr_args__(), {"cloud_endpoint": redact_url})

    @field_validator("system_id")
    @classmethod
    def _system_id_alphabet(cls, value: str) -> str:
        if not SYSTEM_ID_RE.match(value):
            raise ValueError("must match ^[A-Za-z0-9_-]{1,100}$ (no dots or spaces)")
        return value

    @field_validator("cloud_region")
    @classmethod
    def _region_name(cls, value: str) -> str:
        """A name botocore takes (a host label): one it refuses failed each start with
        'open the S3 client: InvalidRegionError', exit 1, while config check said ok."""
        if value and not _REGION.match(value):
            raise ValueError(
                "is not a region name: up to 63 letters, digits and '-', not all digits, "
                "without spaces (e.g. us-east-1, or auto)"
            )
        return value

    @field_validator("chunk_size_mb")
    @classmethod
    def _s3_part_minimum(cls, value: int) -> int:
        return max(value, MIN_CHUNK_MB)

    @field_validator(
        "cloud_bucket", "cloud_endpoint", "access_key_id", "secret_access_key", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty value (``AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET=``) counts as unset."""
        return None if value == "" else value

    @field_validator("cloud_bucket")
    @classmethod
    def _bucket_name(cls, value: str | None) -> str | None:
        return None if value is None else check_bucket(value)

    @field_validator("cloud_endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "@" in parsed_url(value).netloc:  # botocore would fail each request, unclearly
            raise ValueError(
                "holds a user name or password: S3 requests are signed with access_key_id "
                "and secret_access_key, never with credentials in the URL; take them out"
            )
        if "?" in value or "#" in value:  # botocore refuses each request, unclearly
            raise ValueError(
                "holds a query (?...) or a fragment (#...): an S3 endpoint is "
                "http(s)://host[:port] alone, each request adds its own; take them out"
            )
        return lower_scheme(value)

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> CloudSync:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key must be set together")
        if self.force_method == "cloud" and self.cloud_bucket is None:
            raise ValueError("force_method: cloud needs cloud_sync.cloud_bucket")
        return self

    def without_bucket(self) -> list[str]:
        """The S3 settings given that no upload uses, for want of a bucket."""
        if self.cloud_bucket is not None:
            return []
        given = ("cloud_endpoint", "access_key_id", "secret_access_key")
        return [f"cloud_sync.{name}" for name in given if getattr(self, name) is not None]


WebhookEvent = EventName  # a webhook subscribes to the bus's events, named in one place
ALL_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = EVENT_NAMES


class Webhook(BaseModel):
    """One entry of ``webhooks:``: where to POST which events, signed with ``secret``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    events: list[WebhookEvent] = Field(default_factory=lambda: list(ALL_WEBHOOK_EVENTS))
    secret: SecretStr | None = None

    def __repr_args__(self) -> ReprArgs:
        return shown(super().__repr_args__(), {"url": redact_webhook_url})

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return check_url(value)

    @field_validator("events", mode="before")
    @classmethod
    def _left_empty(cls, value: object) -> object:
        """``events:`` with every entry commented out (YAML's null) sets nothing: the
        default, every event."""
        return list(ALL_WEBHOOK_EVENTS) if value is None else value
