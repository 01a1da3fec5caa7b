"""Where each configuration value comes from.

- The names of ``AKOSHAD_*`` variables are checked like file keys: an unknown one is an
  error that names it and suggests the nearest known name.
- session-buddy's own ``cloud_sync`` settings (its ``SESSION_BUDDY_CLOUD_SYNC__*``
  variables and the ``cloud_sync:`` group of ``$XDG_CONFIG_HOME/session-buddy/config.yaml``)
  fill the ``cloud_sync`` fields that akoshad's own configuration leaves unset. Only
  session-buddy's own field names are taken; other keys there are not ours and are ignored.
- Every key is marked with its source (``default``, ``file PATH``, ``env VAR``,
  ``session-buddy file PATH``, ``session-buddy env VAR``, ``command line``), so that an
  error names the variable or file it came from and ``config show`` can say it.

Pure functions over mappings handed in: the process environment is read in ``config``.
"""

from __future__ import annotations

import difflib
import grp
import os
import pwd
import stat
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from akoshad.errors import ConfigError
from akoshad.fastpath import config_home
from akoshad.private import user_name
from akoshad.redaction import redact_url, redact_webhook_url

DEFAULT = "default"
COMMAND_LINE = "command line"
SB_ENV_PREFIX = "SESSION_BUDDY_CLOUD_SYNC__"
SB_DATA_DIR_ENV = "SESSION_BUDDY_PATHS__DATA_DIR"  # where session-buddy keeps its store
# session-buddy's own cloud_sync names (INTEROP.md); akoshad-only fields are not taken.
SB_CLOUD_SYNC_FIELDS = frozenset(
    {
        "cloud_bucket",
        "cloud_endpoint",
        "cloud_region",
        "system_id",
        "upload_on_session_end",
        "enable_fallback",
        "force_method",
        "upload_timeout_seconds",
        "max_retries",
        "retry_backoff_seconds",
        "enable_compression",
        "enable_deduplication",
        "chunk_size_mb",
    }
)

# top-level name -> the names inside it when it is a group (None: a plain field)
Known = Mapping[str, frozenset[str] | None]
Sources = dict[str, str]  # dotted key ("cloud_sync.cloud_bucket") -> its source


def suggest(name: str, candidates: Iterable[str]) -> str:
    """`` (did you mean `x`?)`` for the nearest candidate, or "" when none is near."""
    match = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean `{match[0]}`?)" if match else ""


def _env_suffixes(known: Known) -> list[str]:
    out: list[str] = []
    for name, group in known.items():
        out.append(name)
        out.extend(f"{name}__{sub}" for sub in group or ())
    return out


def _is_known(parts: list[str], known: Known) -> bool:
    if parts[0] not in known:
        return False
    group = known[parts[0]]
    return len(parts) == 1 or (len(parts) == 2 and group is not None and parts[1] in group)


def env_names(
    environ: Mapping[str, str], prefix: str, allowed: Iterable[str], known: Known
) -> dict[str, str]:
    """Map the dotted key each ``prefix`` variable sets to the variable's name.

    Raise ``ConfigError`` naming the first unknown variable (``allowed`` names are not
    settings and pass), with the nearest known name suggested."""
    allowed_upper = {a.upper() for a in allowed}
    out: dict[str, str] = {}
    for var in sorted(environ):
        upper = var.upper()
        if not upper.startswith(prefix) or upper in allowed_upper:
            continue
        parts = upper[len(prefix) :].lower().split("__")
        if not _is_known(parts, known):
            # the same name in another place first (PRUNE_INTERVAL_HOURS is RETENTION__'s,
            # not DRILL_INTERVAL_HOURS, the nearest spelling)
            same = [k for k in _env_suffixes(known) if k.split("__")[-1] == parts[-1]]
            near = same[:1] if len(same) == 1 else []
            near = near or difflib.get_close_matches("__".join(parts), _env_suffixes(known), 1, 0.6)
            hint = f" (did you mean `{prefix}{near[0].upper()}`?)" if near else ""
            raise ConfigError(f"invalid configuration: unknown environment variable {var}{hint}")
        out[".".join(parts)] = var
    return out


# Akosha's own variables: a name of theirs is not a misspelt one of ours
FOREIGN_PREFIXES = ("AKOSHA_",)


def near_prefix(
    environ: Mapping[str, str], prefix: str, allowed: Iterable[str], known: Known
) -> tuple[str, ...]:
    """A warning for each variable that names a setting (or ``allowed``) behind a prefix
    spelt almost as ``prefix`` (``AKOSAHD_DATA_DIR``, ``AKOSHADDATA_DIR``): it is not read,
    and a typo must not look like a setting that works. Names only, never values."""
    names = sorted(
        {n.upper() for n in _env_suffixes(known)}
        | {a.upper()[len(prefix) :] for a in allowed if a.upper().startswith(prefix)},
        key=len,
        reverse=True,
    )
    found: list[str] = []
    for var in sorted(environ):
        upper = var.upper()
        if upper.startswith((prefix, *FOREIGN_PREFIXES)):
            continue
        for name in names:
            head = upper[: -len(name)] if upper.endswith(name) else ""
            if head and difflib.SequenceMatcher(None, head, prefix).ratio() >= 0.8:
                found.append(
                    f"environment variable {var} is not read: akoshad's variables begin "
                    f"with {prefix} (did you mean `{prefix}{name}`?)"
                )
                break
    return tuple(found)


def session_buddy_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/session-buddy/config.yaml`` (default ``~/.config``; a relative
    one is ignored)."""
    return config_home(environ) / "session-buddy" / "config.yaml"


def session_buddy_file(
    path: Path, read_yaml: Callable[[Path, bool], dict[str, Any]]
) -> dict[str, Any]:
    """The ``cloud_sync`` values of session-buddy's file that akoshad knows, as
    ``{"cloud_sync": {...}}`` (empty when the file or the group is missing)."""
    group = read_yaml(path, False).get("cloud_sync")
    if group is None:
        return {}
    tampered = tampered_file(path)  # it may name the bucket, its endpoint and keys
    if tampered is not None:
        raise ConfigError(tampered.replace("configuration file", "session-buddy file", 1))
    if not isinstance(group, dict):
        raise ConfigError(
            f"invalid configuration: cloud_sync: must be a mapping (from session-buddy file {path})"
        )
    taken = {k: v for k, v in group.items() if k in SB_CLOUD_SYNC_FIELDS and v is not None}
    return {"cloud_sync": taken} if taken else {}


def session_buddy_store(
    path: Path,
    read_yaml: Callable[[Path, bool], dict[str, Any]],
    environ: Mapping[str, str],
    data_dir: Path,
) -> tuple[str, ...]:
    """A warning when session-buddy is set to keep its store (``paths.data_dir`` of its
    file, ``SESSION_BUDDY_PATHS__DATA_DIR``) elsewhere than ``data_dir``: akoshad does not
    take that setting, and would back up another directory (or wait for one)."""
    value: Any = environ.get(SB_DATA_DIR_ENV)
    where = f"env {SB_DATA_DIR_ENV}"
    if not value:
        paths = read_yaml(path, False).get("paths")
        value = paths.get("data_dir") if isinstance(paths, dict) else None
        where = f"paths.data_dir in {path}"
    if not isinstance(value, str) or not value.strip():
        return ()
    theirs = Path(os.path.expanduser(value))  # as akoshad's own paths are
    if not theirs.is_absolute() or os.path.normpath(theirs) == os.path.normpath(data_dir):
        return ()  # relative: session-buddy's own directory decides; the same: fine
    return (
        f"session-buddy keeps its store in {theirs} ({where}), but data_dir is {data_dir}: "
        f"akoshad backs up {data_dir} (set data_dir: {theirs} to back up session-buddy's)",
    )


def session_buddy_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """(``{"cloud_sync": {...}}``, dotted key -> variable) from ``SESSION_BUDDY_CLOUD_SYNC__*``."""
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    for var in sorted(environ):
        upper = var.upper()
        field = upper[len(SB_ENV_PREFIX) :].lower()
        if upper.startswith(SB_ENV_PREFIX) and field in SB_CLOUD_SYNC_FIELDS and environ[var]:
            values[field] = environ[var]
            names[f"cloud_sync.{field}"] = var
    return ({"cloud_sync": values} if values else {}), names


def mark(
    sources: Sources, data: Mapping[str, Any], label: Callable[[str], str], groups: Iterable[str]
) -> None:
    """Record ``label(key)`` as the source of every key ``data`` sets (merged over the
    earlier layers: a group's mapping sets only the keys it holds)."""
    group_names = set(groups)
    for key, value in data.items():
        if key in group_names and isinstance(value, Mapping):
            for sub in value:
                sources[f"{key}.{sub}"] = label(f"{key}.{sub}")
        else:
            for old in [k for k in sources if k.startswith(f"{key}.")]:
                del sources[old]
            sources[key] = label(key)


def env_label(kind: str, names: Mapping[str, str]) -> Callable[[str], str]:
    """``kind VAR`` for a dotted key set by variable VAR (or by its group's JSON variable)."""

    def label(key: str) -> str:
        var = names.get(key) or names.get(key.split(".", 1)[0]) or "?"
        return f"{kind} {var}"

    return label


def source_of(loc: tuple[int | str, ...], message: str, sources: Sources) -> str | None:
    """The source of the value an error at ``loc`` is about (None: a default)."""
    parts = [str(p) for p in loc]
    for n in range(len(parts), 0, -1):
        found = sources.get(".".join(parts[:n]))
        if found is not None:
            return None if found == DEFAULT else found
    # a check across keys (a group's, or the whole model's): the keys the message names
    prefix = ".".join(parts) + "." if parts else ""
    labels = sorted(
        {
            label
            for key, label in sources.items()
            if label != DEFAULT and key.startswith(prefix) and key.rsplit(".", 1)[-1] in message
        }
    )
    return ", ".join(labels) or None


def effective_sources(data: Mapping[str, Any], sources: Sources, groups: Iterable[str]) -> Sources:
    """The source of every key of the effective configuration ``data``, in its order."""
    group_names = set(groups)
    out: Sources = {}
    for key, value in data.items():
        if key in group_names and isinstance(value, Mapping):
            for sub in value:
                dotted = f"{key}.{sub}"
                out[dotted] = sources.get(dotted) or sources.get(key) or DEFAULT
        else:
            out[key] = sources.get(key, DEFAULT)
    return out


def _secret_keys(data: Mapping[str, Any]) -> list[str]:
    """The secrets a configuration file's mapping sets (the S3 secret, webhook secrets,
    credentials or tokens in akosha_url or a webhook's URL)."""
    found: list[str] = []
    group = data.get("cloud_sync")
    if isinstance(group, Mapping) and group.get("secret_access_key"):
        found.append("cloud_sync.secret_access_key")
    url = data.get("akosha_url")
    if isinstance(url, str) and redact_url(url) != url:
        found.append("akosha_url")
    hooks = data.get("webhooks")
    for i, hook in enumerate(hooks if isinstance(hooks, list) else []):
        if not isinstance(hook, Mapping):
            continue
        url = hook.get("url")
        if isinstance(url, str) and redact_webhook_url(url) != url:
            found.append(f"webhooks[{i}].url")
        if hook.get("secret"):
            found.append(f"webhooks[{i}].secret")
    return found


def exposed_secrets(path: Path, data: Mapping[str, Any]) -> tuple[str, ...]:
    """A note when the configuration file ``path`` sets a secret and group or others may
    read it (as ssh says of a private key), else nothing."""
    secrets = _secret_keys(data)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode) if secrets else 0
    except OSError:
        return ()
    if not mode & 0o077:
        return ()
    return (
        f"configuration file {path} holds {', '.join(secrets)} and others may read it "
        f"(mode {mode:04o}): run chmod 600 {path}",
    )


def _own_group(gid: int, uid: int) -> bool:
    """Whether ``gid`` is the user's private group (its primary group, of no one else: a
    ``umask 002`` system's files are group-writable by the user alone)."""
    try:
        user = pwd.getpwuid(uid)
        members = grp.getgrgid(gid).gr_mem
    except KeyError:
        return False
    if user.pw_gid != gid or any(m != user.pw_name for m in members):
        return False
    return all(p.pw_gid != gid or p.pw_uid == uid for p in pwd.getpwall())


def tampered_file(path: Path) -> str | None:
    """The line ``load_config`` stops with (exit 78) when another user could change the
    configuration file ``path``: it is theirs (root aside), or others, or a group not the
    user's own, may write to it (as ssh says of its own configuration), else None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None  # /dev/stdin, a pipe: no file to keep
    uid = os.geteuid()
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid not in (uid, 0):
        why, fix = f"is owned by {user_name(st.st_uid)}, not you", "use a file of your own"
    elif mode & stat.S_IWOTH or (mode & stat.S_IWGRP and not _own_group(st.st_gid, uid)):
        why, fix = f"can be written by other users (mode {mode:04o})", f"run `chmod go-w {path}`"
    else:
        return None
    return (
        f"configuration file {path} {why}: they could change what akoshad backs up and "
        f"where it sends it; {fix}"
    )


def without_null_groups(data: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """``data`` without the keys of ``names`` (the groups, the lists) that YAML read as
    null: a group whose every line is commented out (``encryption:`` alone) is a group
    that sets nothing, as an empty file is, not an invalid value."""
    unset = set(names)
    return {k: v for k, v in data.items() if not (v is None and k in unset)}
