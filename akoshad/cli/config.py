"""``akoshad config check|show``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

from akoshad.config import Encryption, LoadedConfig, Settings
from akoshad.config.encryption import unavailable
from akoshad.errors import ConfigError
from akoshad.names import EXIT_CONFIG
from akoshad.pipeline.store_walk import walk_store
from akoshad.pipeline.storefiles import PathFilter, idle_include_line
from akoshad.private import shared_dir_problem
from akoshad.redaction import redact_url
from akoshad.runtime.control_path import socket_path_refusal
from akoshad.runtime.health import data_dir_problem, warn_data_dir
from akoshad.runtime.logfile import check_log_dir


def render_sources(loaded: LoadedConfig) -> str:
    """The provenance section of ``config show``: YAML comments, so that the output stays
    the same YAML document for whoever parses it."""
    sources = loaded.effective_sources()
    width = max(len(key) for key in sources)
    lines = ["# sources: where each value came from (highest precedence first: command line,"]
    lines.append("# env AKOSHAD_*, file, session-buddy env, session-buddy file, default)")
    lines.extend(f"#   {key:<{width}}  {origin}" for key, origin in sources.items())
    lines.extend(f"# note: {note}" for note in loaded.notes)
    lines.extend(f"# warning: {warning}" for warning in loaded.settings.warnings)
    return "\n".join(lines)


def check_lines(loaded: LoadedConfig) -> list[str]:
    """``config check``: the summary line, then one note per adjusted value and one naming
    the values taken from session-buddy's configuration."""
    settings = loaded.settings
    cs = settings.cloud_sync
    cloud = settings.primary_target == "cloud"
    target = f"s3://{cs.cloud_bucket}" if cloud else str(settings.local_target_dir)
    http = redact_url(settings.akosha_url) if settings.akosha_url else "off"
    lines = [
        f"configuration ok: data_dir={settings.data_dir} target={target} "
        f"akosha_url={http} system_id={cs.system_id}"
    ]
    lines.extend(f"note: {note}" for note in loaded.notes)
    lines.extend(f"warning: {warning}" for warning in settings.warnings)
    lines.extend(include_lines(settings))
    lines.extend(encryption_lines(settings.encryption))
    enc = settings.encryption
    if cloud and enc.enabled and enc.encrypt_memories:
        why = "akosha_url is off" if settings.akosha_url is None else None
        why = "force_method is cloud" if cs.force_method == "cloud" else why
        if why:  # the bucket's memories.json.age is all, and Akosha cannot read it
            lines.append(
                f"note: memories.json is encrypted and {why} (no delivery over HTTP): "
                "Akosha gets no memories from this machine"
            )
    by_origin: dict[str, list[str]] = {}
    for key, origin in loaded.effective_sources().items():
        if origin.startswith("session-buddy"):
            by_origin.setdefault(origin, []).append(key)
    for origin, keys in by_origin.items():
        lines.append(f"note: from {origin}: {', '.join(keys)}")
    return lines


def include_lines(settings: Settings) -> list[str]:
    """A warning for the ``include`` globs that select no file of ``data_dir`` as it is
    now while others do (as the daemon's walk says it; none selected at all is a warning
    of the daemon's own), and a note for each ``exclude`` glob that leaves out no file
    (a typo: what it was meant to leave out is uploaded). No walk without either."""
    wanted = settings.include or settings.exclude
    if not wanted or data_dir_problem(settings.data_dir) is not None:
        return []
    flt = PathFilter.of(settings.include, settings.exclude)
    try:
        every = walk_store(settings.data_dir, PathFilter()).files
    except OSError:
        return []
    files = [rel for rel in every if flt.allows(rel)]
    idle = flt.idle_includes(files) if files else []
    lines = [f"warning: {idle_include_line(settings.data_dir, idle)}"] if idle else []
    unused = PathFilter.of(settings.exclude, ()).idle_includes(every)
    lines.extend(
        f"note: exclude {glob!r} leaves out no file in data_dir {settings.data_dir} now (a "
        "typo? what it is meant to leave out would be uploaded)"
        for glob in unused
    )
    return lines


def encryption_lines(enc: Encryption) -> list[str]:
    """``config check``'s account of ``encryption:`` (the identity file is not read: only
    verify, restore and drill need it, and prune for uploads of an earlier akoshad)."""
    missing = _identity_file_problem(enc)
    if not enc.enabled:
        return ["note: encryption off (no encryption.recipients)", *missing]
    memories = "encrypted" if enc.encrypt_memories else "readable by Akosha"
    identity = str(enc.identity_file) if enc.identity_file else "not set"
    lines = [
        f"note: encryption to {len(enc.recipients)} recipient(s); memories.json {memories}; "
        f"identity_file {identity} (needed only by verify, restore and drill, and by prune "
        "for uploads of an earlier akoshad)"
    ]
    problem = unavailable(enc)
    if problem:
        lines.append(f"note: {problem}")
    return lines + missing


def _identity_file_problem(enc: Encryption) -> list[str]:
    """A warning when ``identity_file`` is set and is not a file (not read: it is the
    secret key, and the daemon does not need it)."""
    if enc.identity_file is None:
        return []
    path = Path(os.path.expanduser(str(enc.identity_file)))
    if path.is_file():
        return []
    what = "is not a file" if path.exists() else "does not exist"
    return [
        f"warning: encryption.identity_file {path} {what}: verify, restore, drill and "
        "uploads stop there (exit 1), of unencrypted uploads too, until it is the age "
        "identity or the setting is removed"
    ]


def state_dir_refusal(state_dir: Path) -> str | None:
    """The line ``run`` (and prune, takeover) stops with, exit 78, when ``state_dir``
    can be written by other users (``shared_dir_problem``) or cannot be written, found
    without making it: a file made and removed in it, or when it does not exist yet, a
    directory in the nearest of its parents that exists."""
    shared = shared_dir_problem("state_dir", state_dir)
    if shared is not None:
        return shared
    existing = state_dir
    while not os.path.lexists(existing) and existing.parent != existing:
        existing = existing.parent
    try:
        if existing == state_dir:
            fd, name = tempfile.mkstemp(prefix=".akoshad-check-", dir=state_dir)
            os.close(fd)
            os.unlink(name)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".akoshad-check-", dir=existing))
    except OSError as exc:
        return (
            f"state_dir {state_dir} is not writable: {exc.strerror or exc} "
            "(make state_dir writable or set another)"
        )
    return None


def log_file_refusal(log_file: Path | None) -> str | None:
    """The line ``run`` stops with, exit 78, for a ``log_file`` in a directory other users
    can change (``runtime.logfile.check_log_dir``), or None."""
    if log_file is None:
        return None
    try:
        check_log_dir(log_file)
    except ConfigError as exc:
        return str(exc)
    return None


def cmd_config(args: argparse.Namespace, loaded: LoadedConfig) -> int:
    """``check`` prints a summary and notes (exit 78 for a ``socket_path`` that ``run``
    refuses); ``show`` the effective YAML, secrets redacted, followed by where each value
    came from (as YAML comments)."""
    if args.action == "check":
        settings = loaded.settings
        refused = (
            socket_path_refusal(settings.socket_path)
            or state_dir_refusal(settings.state_dir)
            or log_file_refusal(settings.log_file)
        )  # as run refuses them
        if refused is not None:
            print(f"akoshad: {refused}", file=sys.stderr)
            return EXIT_CONFIG
        warn_data_dir(loaded.settings.data_dir)
        print("\n".join(check_lines(loaded)))
        return 0
    data = json.loads(json.dumps(loaded.settings.redacted()))
    print(yaml.safe_dump(data, sort_keys=False).rstrip())
    print(render_sources(loaded))
    return 0
