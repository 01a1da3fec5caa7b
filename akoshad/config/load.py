"""Loading the configuration: the sources merged in order of precedence (defaults,
session-buddy's settings, the YAML file, the ``AKOSHAD_`` environment, the command line),
each key marked with where it came from, and a validation error told in one line that
names its source. This is the only module that reads the process environment."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
)

from akoshad.config import sources as src
from akoshad.config.groups import MIN_CHUNK_MB, Webhook
from akoshad.config.model import (
    _NON_FIELD_ENV,
    ENV_PREFIX,
    PATH_FIELDS,
    Settings,
)
from akoshad.config.yamlfile import names_only, one_line, read_config_text, read_yaml
from akoshad.errors import ConfigError
from akoshad.fastpath import resolve_config_path
from akoshad.redaction import register_settings


def _xdg(environ: Mapping[str, str], name: str) -> str | None:
    """``$name`` when absolute: the XDG spec says to ignore a relative one."""
    value = environ.get(name)
    return value if value and os.path.isabs(value) else None


def _defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    home = Path(environ.get("HOME") or os.path.expanduser("~"))
    state_home = Path(_xdg(environ, "XDG_STATE_HOME") or home / ".local" / "state")
    data_home = Path(_xdg(environ, "XDG_DATA_HOME") or home / ".local" / "share")
    state_dir = state_home / "akoshad"
    runtime = _xdg(environ, "XDG_RUNTIME_DIR")
    return {
        "data_dir": home / ".claude" / "data",
        "state_dir": state_dir,
        "local_target_dir": data_home / "akoshad" / "outbox",
        "_runtime_dir": runtime,
    }


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


def _absolute(value: Any) -> Any:
    """A path given on the command line, made absolute from the current directory (the
    configuration refuses relative paths; one typed in a shell means the directory there)."""
    if isinstance(value, str | Path) and str(value).strip() and "\0" not in str(value):
        return Path(os.path.abspath(os.path.expanduser(str(value))))
    return value


def _cli_paths(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` with its paths (``--data-dir``, ``--identity``) made absolute."""
    out = {k: _absolute(v) if k in PATH_FIELDS else v for k, v in overrides.items()}
    enc = out.get("encryption")
    if isinstance(enc, Mapping) and "identity_file" in enc:
        out["encryption"] = {**enc, "identity_file": _absolute(enc["identity_file"])}
    return out


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


def _elsewhere(loc: tuple[int | str, ...]) -> str:
    """Where the unknown key at ``loc`` belongs when it is a key of another place (a
    group's key at the top level, ``system_id:`` for ``cloud_sync.system_id``), else ""."""
    name, path = str(loc[-1]), [p for p in loc[:-1] if isinstance(p, str)]
    if path and path != ["webhooks"] and name in Settings.model_fields:
        return f" here (it is a top-level key, not one of `{path[0]}:`)"
    groups = [g for g, inner in _known().items() if inner and name in inner and [g] != path]
    return f" here (it goes in the `{groups[0]}:` group)" if len(groups) == 1 else ""


def _format_error(exc: ValidationError, sources: src.Sources) -> str:
    err = exc.errors()[0]
    raw_loc = tuple(p for p in err.get("loc", ()) if p != "__root__")
    loc = ".".join(str(p) for p in raw_loc) or "configuration"
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        name = str(raw_loc[-1])
        msg = "unknown key" + (_elsewhere(raw_loc) or src.suggest(name, _names_at(raw_loc)))
    elif err.get("type") == "list_type" and isinstance(err.get("input"), str):
        key = str(raw_loc[-1])  # one value where a list goes: the YAML of a list of it
        msg = f"give a list, even of one item: {key}: [...] or one '- item' line per item"
    origin = src.source_of(raw_loc, msg, sources)
    where = f" (from {origin})" if origin else ""
    more = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return one_line(f"invalid configuration: {loc}: {msg}{where}{more}")


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
        key = found.group(1) if found else ""
        # pydantic-settings names the group of a nested variable: name the variable's key
        inner = [k for k in names if k.startswith(f"{key}.")]
        key = inner[0] if key not in names and len(inner) == 1 else key
        var = names.get(key) or ", ".join(names[k] for k in inner)
        hint = '; lists are JSON, e.g. ["a", "b"]'
        what = f"{key}: not valid JSON (from env {var}){hint}" if found else str(exc)
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
    file_data = read_yaml(path, named)
    tampered = src.tampered_file(path)
    if tampered is not None:
        raise ConfigError(tampered)
    names_only(file_data, path)
    file_data = src.without_null_groups(file_data, [*_groups(), "webhooks", "include", "exclude"])
    env_data, env_vars = _env_layer(env)
    sb_path = src.session_buddy_path(env)
    sb_file = src.session_buddy_file(sb_path, read_yaml)
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
        (_cli_paths(overrides or {}), lambda _key: src.COMMAND_LINE),
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
    settings._file_warnings = (
        *src.near_prefix(env, ENV_PREFIX, _NON_FIELD_ENV, _known()),
        *src.exposed_secrets(path, file_data),
        *src.session_buddy_store(sb_path, read_yaml, env, settings.data_dir),
    )
    return LoadedConfig(settings, sources, notes)


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build and validate the settings once; raise ``ConfigError`` with one line on failure."""
    return load_config(config_path, overrides, environ).settings


# a top-level line of a file that is not YAML, read alone: where the daemon listens
_TOP_LINE = re.compile(r"^(socket_path|state_dir)[ \t]*:(?:[ \t]|$)")
_UNREADABLE = object()  # such a line whose value does not read as YAML either


def _top_lines(text: str) -> dict[str, Any]:
    """The top-level ``socket_path:`` and ``state_dir:`` lines of a file that is not
    YAML, each read alone as YAML (the last wins); ``_UNREADABLE`` for one that does not
    read."""
    found: dict[str, Any] = {}
    for line in text.splitlines():
        match = _TOP_LINE.match(line)
        if match is None:
            continue
        try:
            value = yaml.safe_load(line)
        except yaml.YAMLError:
            value = {match.group(1): _UNREADABLE}
        found.update(value)
    return found


def _plain_yaml(config_path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> Any:
    """The configuration file read as plain YAML (a key given twice: the last wins); when
    it is not YAML, its ``_top_lines``; ``{}`` when the default file is missing.
    ``ConfigError`` when a named file (``--config``, ``AKOSHAD_CONFIG``) is missing or
    the file cannot be read: the default socket may be another daemon's."""
    path, named = resolve_config_path(config_path, environ)
    text = read_config_text(path, named)
    if text is None:
        return {}
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return _top_lines(text)


def fallback_socket_path(
    config_path: str | os.PathLike[str] | None, environ: Mapping[str, str]
) -> Path:
    """The daemon's socket when the configuration is invalid, as best it can be read:
    ``AKOSHAD_SOCKET_PATH``, else the file's ``socket_path`` (a plain YAML read; in a file
    that is not YAML, its top-level ``socket_path:`` line), else the default
    (``$XDG_RUNTIME_DIR/akoshad.sock``, else ``<state_dir>/akoshad.sock``).
    ``ConfigError`` when the file sets a socket that cannot be read from it, or a named
    file is missing."""
    env_sock = environ.get(f"{ENV_PREFIX}SOCKET_PATH")
    raw: Any = {} if env_sock and env_sock.strip() else _plain_yaml(config_path, environ)
    raw = raw if isinstance(raw, dict) else {}
    if raw.get("socket_path") is _UNREADABLE:
        raise ConfigError("the file's socket_path line cannot be read")

    def pick(key: str) -> str | None:
        for value in (environ.get(f"{ENV_PREFIX}{key.upper()}"), raw.get(key)):
            if isinstance(value, str) and value.strip():
                return os.path.expanduser(value)
        return None

    sock = pick("socket_path")
    if sock:
        return Path(sock)
    runtime = _xdg(environ, "XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "akoshad.sock"
    return Path(pick("state_dir") or _defaults(environ)["state_dir"]) / "akoshad.sock"


def client_settings(socket_path: Path, environ: Mapping[str, str]) -> Settings:
    """Settings for a client command when the configuration is invalid: the defaults,
    with the socket found by ``fallback_socket_path`` (the only field a client uses)."""
    defaults = _defaults(environ)
    defaults.pop("_runtime_dir")
    # not validated: a socket path too long to bind is the client's "no daemon" (exit 3),
    # and the defaults may be what is wrong (a state_dir that is a file)
    settings = Settings.model_construct(**defaults, socket_path=socket_path)
    settings._place_known = False  # the defaults: not where this configuration uploads
    return settings
