"""The configuration's model: ``Settings`` (frozen, validated once), its defaults and
field checks; its groups live in ``groups`` (``CloudSync``, ``Webhook``), ``encryption``
and ``storage.retention``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from akoshad.config.checks import (
    check_absolute,
    check_directory,
    check_listen,
    check_log_file,
    check_utf8_name,
    exposed_listen,
    identity_inside,
    log_inside,
    memories_left_out,
    nesting_problem,
    unmatchable_glob,
)
from akoshad.config.encryption import Encryption
from akoshad.config.groups import CloudSync, ReprArgs, Webhook, check_url, shown
from akoshad.config.mounts import mounted_inside
from akoshad.names import socket_path_problem
from akoshad.redaction import REDACTED, redact_url, redact_webhook_url
from akoshad.storage.retention import Retention

ENV_PREFIX = "AKOSHAD_"
PATH_FIELDS = ("data_dir", "state_dir", "socket_path", "local_target_dir", "log_file")
# Environment variables with our prefix that are not settings fields.
# (AKOSHAD_VENV and AKOSHAD_SKIP_LINT belong to the scripts in scripts/, which run akoshad)
_NON_FIELD_ENV = {"AKOSHAD_CONFIG", "AKOSHAD_DEBUG", "AKOSHAD_VENV", "AKOSHAD_SKIP_LINT"}


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
    encryption: Encryption = Field(default_factory=Encryption)
    cloud_sync: CloudSync = Field(default_factory=CloudSync)
    _notes: tuple[str, ...] = PrivateAttr(default=())
    _file_warnings: tuple[str, ...] = PrivateAttr(default=())  # of the file read (its mode)
    # False for a client's stand-in when the configuration did not load (its defaults and
    # the socket found): where it would upload is not known
    _place_known: bool = PrivateAttr(default=True)

    @property
    def place_known(self) -> bool:
        """Whether these settings say where uploads go (not a stand-in of defaults)."""
        return self._place_known

    def __repr_args__(self) -> ReprArgs:
        return shown(super().__repr_args__(), {"akosha_url": redact_url})

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("akosha_url")
    @classmethod
    def _akosha_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        return check_url(value, ", e.g. http://127.0.0.1:8682/mcp")

    @field_validator("metrics_listen", mode="before")
    @classmethod
    def _listen(cls, value: Any) -> Any:
        """host:port; a bare port (a YAML number) is told what is missing, as in quotes."""
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            return check_listen(value) if value else None
        return value

    @field_validator(*PATH_FIELDS, mode="before")
    @classmethod
    def _a_path(cls, value: Any) -> Any:
        """An empty path would be the working directory (``$HOME`` under a service: the
        whole home backed up); a NUL cannot be in a path. Both are refused (exit 78)."""
        if isinstance(value, str | Path):
            text = str(value) if isinstance(value, Path) else value
            if not text.strip():
                raise ValueError("is empty: give a path (unset it for the default)")
            if "\0" in text:
                raise ValueError("holds a NUL character")
        return value

    @field_validator(*PATH_FIELDS)
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return None if value is None else check_absolute(Path(os.path.expanduser(str(value))))

    @field_validator("data_dir", "state_dir")
    @classmethod
    def _utf8_name(cls, value: Path) -> Path:
        return check_utf8_name(value)

    @field_validator("state_dir", "local_target_dir")
    @classmethod
    def _a_directory(cls, value: Path) -> Path:
        """A file where the directory is to be made fails here, not at run time."""
        return check_directory(value)

    @field_validator("log_file")
    @classmethod
    def _a_log_file(cls, value: Path | None) -> Path | None:
        """A directory where the log file is to be, or a file among its parents, fails
        here (exit 78), not when the daemon opens it."""
        return None if value is None else check_log_file(value)

    @field_validator("socket_path")
    @classmethod
    def _bindable(cls, value: Path) -> Path:
        problem = socket_path_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _sane_delays(self) -> Settings:
        if self.max_delay_seconds < self.debounce_seconds:
            raise ValueError("max_delay_seconds must not be smaller than debounce_seconds")
        return self

    @model_validator(mode="after")
    def _http_has_akosha(self) -> Settings:
        if self.cloud_sync.force_method == "http" and self.akosha_url is None:
            raise ValueError(
                "cloud_sync.force_method: http needs akosha_url (HTTP is forced, but there "
                "is no Akosha to send to)"
            )
        return self

    @model_validator(mode="after")
    def _own_dirs_apart(self) -> Settings:
        """The state and the local target must not be backed up, nor hold the store."""
        own = {"state_dir": self.state_dir, "local_target_dir": self.local_target_dir}
        problem = (
            nesting_problem(self.data_dir, own)
            or log_inside(self.data_dir, self.log_file)
            or mounted_inside(self.data_dir, {**own, "log_file": self.log_file})
        )
        if problem is not None:
            raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _globs_can_match(self) -> Settings:
        """An include/exclude glob that no store path can match is refused (exit 78)."""
        for name in ("include", "exclude"):
            problem = unmatchable_glob(name, getattr(self, name), self.data_dir)
            if problem is not None:
                raise ValueError(problem)
        return self

    @model_validator(mode="after")
    def _one_entry_per_webhook_url(self) -> Settings:
        """A webhook's outbox is keyed by its URL: two entries of one URL would share it
        (events sent twice, or to the entry that did not ask for them)."""
        seen: dict[str, int] = {}
        for i, hook in enumerate(self.webhooks):
            if hook.url in seen:
                raise ValueError(
                    f"webhooks[{i}] has the URL of webhooks[{seen[hook.url]}]: give each URL "
                    "once, with every event it wants in its events list"
                )
            seen[hook.url] = i
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
    def primary_target(self) -> Literal["cloud", "local"]:
        """The target uploads' files go to, and that verify, restore, drill and uploads
        read: ``cloud`` with a bucket (unless ``force_method`` is http), else ``local``."""
        http = self.cloud_sync.force_method == "http"
        return "cloud" if self.bucket_configured and not http else "local"

    @property
    def warnings(self) -> tuple[str, ...]:
        """Values accepted but likely not what was meant (``config check`` shows them)."""
        unused = self.cloud_sync.without_bucket()
        found = (
            []
            if not unused
            else [
                f"{', '.join(unused)} set but no cloud_sync.cloud_bucket: uploads go to the "
                f"local target {self.local_target_dir}, not to S3"
            ]
        )
        if self.akosha_url and self.cloud_sync.force_method != "cloud":
            found.append(memories_left_out(self.include, self.exclude) or "")
        found.append(exposed_listen(self.metrics_listen) or "")
        identity = self.encryption.identity_file
        found.append(identity_inside(self.data_dir, identity, self.include, self.exclude) or "")
        return (*self._file_warnings, *[w for w in found if w], *self.encryption.warnings)

    @property
    def notes(self) -> tuple[str, ...]:
        """Values accepted but adjusted, then :attr:`warnings` (logged at start)."""
        return self._notes + self.warnings

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
