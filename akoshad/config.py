"""Configuration: one frozen, validated model built once and passed down.

Sources, highest precedence first: command line overrides, ``AKOSHAD_`` environment
(``__`` nests: ``AKOSHAD_CLOUD_SYNC__CLOUD_BUCKET``), the YAML file, session-buddy's own
``cloud_sync`` settings (its ``SESSION_BUDDY_CLOUD_SYNC__*`` variables, then its
``config.yaml``; see ``config_sources``), defaults. Unknown file keys and unknown
``AKOSHAD_`` variables are errors. This is the only module that reads the process environment.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from akoshad import config_sources as src
from akoshad.errors import ConfigError
from akoshad.fastpath import resolve_config_path
from akoshad.names import SYSTEM_ID_RE
from akoshad.redaction import REDACTED, redact_url, redact_webhook_url, register_settings
from akoshad.storage.retention import Retention

ENV_PREFIX = "AKOSHAD_"
# Environment variables with our prefix that are not settings fields.
# (AKOSHAD_VENV and AKOSHAD_SKIP_LINT belong to the scripts in scripts/, which run akoshad)
_NON_FIELD_ENV = {"AKOSHAD_CONFIG", "AKOSHAD_DEBUG", "AKOSHAD_VENV", "AKOSHAD_SKIP_LINT"}
MIN_CHUNK_MB = 5  # S3's smallest multipart part


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

    @field_validator("system_id")
    @classmethod
    def _system_id_alphabet(cls, value: str) -> str:
        if not SYSTEM_ID_RE.match(value):
            raise ValueError("must match ^[A-Za-z0-9_-]{1,100}$ (no dots or spaces)")
        return value

    @field_validator("chunk_size_mb")
    @classmethod
    def _s3_part_minimum(cls, value: int) -> int:
        return max(value, MIN_CHUNK_MB)

    @field_validator("cloud_bucket", "cloud_endpoint", "access_key_id")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("cloud_endpoint")
    @classmethod
    def _endpoint_is_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _keys_in_pairs(self) -> CloudSync:
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError("access_key_id and secret_access_key must be set together")
        return self


WebhookEvent = Literal["upload", "failure", "degraded", "recovered", "drill", "prune"]
ALL_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = (
    "upload",
    "failure",
    "degraded",
    "recovered",
    "drill",
    "prune",
)


class Webhook(BaseModel):
    """One entry of ``webhooks:``: where to POST which events, signed with ``secret``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    events: list[WebhookEvent] = Field(default_factory=lambda: list(ALL_WEBHOOK_EVENTS))
    secret: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        return value


class Settings(BaseSettings):
    """akoshad's whole configuration (see CONTRACT.md)."""

    model_config = SettingsConfigDict(
        extra="forbid",
        frozen=True,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
    )

    data_dir: Path
    state_dir: Path
    socket_path: Path
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    debounce_seconds: float = Field(default=2.0, ge=0, le=3600)
    max_delay_seconds: float = Field(default=60.0, gt=0, le=86400)
    min_upload_interval_seconds: float = Field(
        default=30.0,
        ge=0,
        le=86400,
        description="a busy store makes at most one upload per this interval; 0 = no pacing",
    )
    local_target_dir: Path
    akosha_url: str | None = None
    log_level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    log_file: Path | None = None
    drain_deadline_seconds: float = Field(default=30.0, gt=0, le=3600)
    watchdog_stall_seconds: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        description="a pass without progress this long counts as wedged (systemd watchdog); "
        "default: upload_timeout_seconds + 30",
    )
    redact_secrets: bool = Field(
        default=True,
        description="replace secrets in memory text bound for Akosha with [REDACTED:<kind>]",
    )
    metrics_listen: str | None = Field(
        default=None, description="host:port serving Prometheus text at /metrics; unset = off"
    )
    drill_interval_hours: float = Field(
        default=24.0, ge=0, le=24 * 365, description="restore drills in the daemon; 0 = off"
    )
    drill_max_mbps: float = Field(
        default=20.0, gt=0, le=100000, description="download rate cap of a drill (MB/s)"
    )
    degraded_fail_after_minutes: float = Field(
        default=0, ge=0, le=525600, description="exit non-zero after this long degraded; 0 = never"
    )
    webhooks: list[Webhook] = Field(default_factory=list)
    retention: Retention = Field(default_factory=Retention)
    cloud_sync: CloudSync = Field(default_factory=CloudSync)
    _notes: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("akosha_url")
    @classmethod
    def _akosha_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:8682/mcp")
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if not value:
            return None
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464")
        return value

    @field_validator("data_dir", "state_dir", "socket_path", "local_target_dir", "log_file")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else Path(os.path.expanduser(str(value)))

    @model_validator(mode="after")
    def _sane_delays(self) -> Settings:
        if self.max_delay_seconds < self.debounce_seconds:
            raise ValueError("max_delay_seconds must not be smaller than debounce_seconds")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Only init (CLI + file + defaults, merged by load_settings) and the env mapping
        # handed in; load_settings builds the env source itself.
        return (init_settings,)

    # ---- derived -------------------------------------------------------------
    @property
    def bucket_configured(self) -> bool:
        return self.cloud_sync.cloud_bucket is not None

    @property
    def notes(self) -> tuple[str, ...]:
        """Warnings about values that were accepted but adjusted (logged at start)."""
        return self._notes

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets replaced by ``**********``."""
        data = self.model_dump(mode="json")
        cs = data["cloud_sync"]
        if cs.get("secret_access_key") is not None:
            cs["secret_access_key"] = REDACTED
        for hook in data.get("webhooks", []):
            if hook.get("secret") is not None:
                hook["secret"] = REDACTED
            hook["url"] = redact_webhook_url(hook["url"])
        for group, name in ((data, "akosha_url"), (cs, "cloud_endpoint")):
            if group.get(name):
                group[name] = redact_url(group[name])
        return data


def _defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    home = Path(environ.get("HOME") or os.path.expanduser("~"))
    state_home = Path(environ.get("XDG_STATE_HOME") or home / ".local" / "state")
    data_home = Path(environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    state_dir = state_home / "akoshad"
    runtime = environ.get("XDG_RUNTIME_DIR")
    return {
        "data_dir": home / ".claude" / "data",
        "state_dir": state_dir,
        "local_target_dir": data_home / "akoshad" / "outbox",
        "_runtime_dir": runtime,
    }


def _read_yaml(path: Path, named: bool) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if named:
            raise ConfigError(f"configuration file {path} does not exist") from None
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"configuration file {path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"configuration file {path} must be a mapping of keys to values")
    return data


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' env source over an explicit mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._mapping = {
            k: v
            for k, v in environ.items()
            if k.upper().startswith(ENV_PREFIX) and k.upper() not in _NON_FIELD_ENV
        }
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._mapping.items()}


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _known() -> dict[str, frozenset[str] | None]:
    """Settings' field names, with the names inside each group (a nested model)."""
    out: dict[str, frozenset[str] | None] = {}
    for name, info in Settings.model_fields.items():
        ann = info.annotation
        out[name] = None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out[name] = frozenset(ann.model_fields)
    return out


def _groups() -> list[str]:
    return [name for name, inner in _known().items() if inner is not None]


def _names_at(loc: tuple[int | str, ...]) -> list[str]:
    """The key names allowed where an unknown key was found (for a suggestion)."""
    path = [p for p in loc[:-1] if isinstance(p, str)]
    if not path:
        return list(Settings.model_fields)
    if path == ["webhooks"]:
        return list(Webhook.model_fields)
    return sorted(_known().get(path[0]) or ())


def _format_error(exc: ValidationError, sources: src.Sources) -> str:
    err = exc.errors()[0]
    raw_loc = tuple(p for p in err.get("loc", ()) if p != "__root__")
    loc = ".".join(str(p) for p in raw_loc) or "configuration"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        msg = "unknown key" + src.suggest(str(raw_loc[-1]), _names_at(raw_loc))
    origin = src.source_of(raw_loc, msg, sources)
    where = f" (from {origin})" if origin else ""
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return f"invalid configuration: {loc}: {msg}{where}{more}"


def debug_enabled(environ: Mapping[str, str]) -> bool:
    """``AKOSHAD_DEBUG`` set to 1/true/yes/on: show tracebacks of unexpected errors."""
    return environ.get("AKOSHAD_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def process_environ() -> dict[str, str]:
    """A copy of the process environment: read here, handed down to whoever needs it."""
    return dict(os.environ)


@dataclass(frozen=True)
class LoadedConfig:
    """The settings, where each key's value came from, and notes about adjusted values."""

    settings: Settings
    sources: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def effective_sources(self) -> dict[str, str]:
        """``{dotted key: source}`` for every key of the effective configuration."""
        return src.effective_sources(self.settings.model_dump(), self.sources, _groups())


def _env_layer(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``AKOSHAD_`` values (names checked first) and which variable set which key."""
    names = src.env_names(env, ENV_PREFIX, _NON_FIELD_ENV, _known())
    try:
        return dict(_MappingEnvSource(Settings, env)()), names
    except Exception as exc:  # pydantic-settings raises SettingsError on bad JSON
        found = re.search(r'field "([^"]+)"', str(exc))
        var = names.get(found.group(1), "") if found else ""
        what = f"{found.group(1)}: not valid JSON (from env {var})" if found else str(exc)
        raise ConfigError(f"invalid configuration: {what}") from None


def _chunk_note(merged: Mapping[str, Any], sources: src.Sources) -> tuple[str, ...]:
    group = merged.get("cloud_sync")
    raw = group.get("chunk_size_mb") if isinstance(group, Mapping) else None
    try:
        configured = int(raw) if isinstance(raw, int | str) else MIN_CHUNK_MB
    except ValueError:
        return ()
    if configured >= MIN_CHUNK_MB:
        return ()
    origin = sources.get("cloud_sync.chunk_size_mb", src.DEFAULT)
    return (
        f"cloud_sync.chunk_size_mb {configured} raised to {MIN_CHUNK_MB}: S3 multipart parts "
        f"cannot be smaller than 5 MiB (from {origin})",
    )


def load_config(
    config_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedConfig:
    """Build and validate the settings once, recording each key's source; raise
    ``ConfigError`` with one line (naming the key and where it came from) on failure."""
    env = dict(os.environ if environ is None else environ)
    path, named = resolve_config_path(config_path, env)
    file_data = _read_yaml(path, named)
    env_data, env_vars = _env_layer(env)
    sb_path = src.session_buddy_path(env)
    sb_file = src.session_buddy_file(sb_path, _read_yaml)
    sb_env, sb_vars = src.session_buddy_env(env)
    defaults = _defaults(env)
    runtime = defaults.pop("_runtime_dir")
    groups = _groups()
    sources: src.Sources = {}
    merged: dict[str, Any] = {}
    layers: list[tuple[Mapping[str, Any], Callable[[str], str]]] = [
        (defaults, lambda _key: src.DEFAULT),
        (sb_file, lambda _key: f"session-buddy file {sb_path}"),
        (sb_env, src.env_label("session-buddy env", sb_vars)),
        (file_data, lambda _key: f"file {path}"),
        (env_data, src.env_label("env", env_vars)),
        (dict(overrides or {}), lambda _key: src.COMMAND_LINE),
    ]
    for data, label in layers:
        merged = _deep_merge(merged, data)
        src.mark(sources, data, label, groups)
    if "socket_path" not in merged or merged["socket_path"] in (None, ""):
        if runtime:
            merged["socket_path"] = Path(runtime) / "akoshad.sock"
        else:
            merged["socket_path"] = Path(str(merged["state_dir"])) / "akoshad.sock"
        sources["socket_path"] = src.DEFAULT
    try:
        settings = Settings(**merged)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, sources)) from None
    register_settings(settings)  # from here on, no text this process prints shows them
    notes = _chunk_note(merged, sources)
    settings._notes = notes
    return LoadedConfig(settings, sources, notes)


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build and validate the settings once; raise ``ConfigError`` with one line on failure."""
    return load_config(config_path, overrides, environ).settings


def fallback_socket_path(
    config_path: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> Path:
    """The daemon's socket when the configuration is invalid, as best it can be read:
    ``AKOSHAD_SOCKET_PATH``, else the file's ``socket_path`` (a raw YAML read), else the
    default (``$XDG_RUNTIME_DIR/akoshad.sock``, else ``<state_dir>/akoshad.sock``)."""
    raw: dict[str, Any] = {}
    try:
        path, named = resolve_config_path(config_path, environ)
        raw = _read_yaml(path, named)
    except ConfigError:
        pass

    def pick(key: str) -> str | None:
        for value in (environ.get(f"{ENV_PREFIX}{key.upper()}"), raw.get(key)):
            if isinstance(value, str) and value.strip():
                return os.path.expanduser(value)
        return None

    sock = pick("socket_path")
    if sock:
        return Path(sock)
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "akoshad.sock"
    return Path(pick("state_dir") or _defaults(environ)["state_dir"]) / "akoshad.sock"


def client_settings(socket_path: Path, environ: Mapping[str, str]) -> Settings:
    """Settings for a client command when the configuration is invalid: the defaults,
    with the socket found by ``fallback_socket_path`` (the only field a client uses)."""
    defaults = _defaults(environ)
    defaults.pop("_runtime_dir")
    return Settings(**defaults, socket_path=socket_path)
