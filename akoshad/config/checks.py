"""Checks of single configuration values that ``model`` applies: bucket names, the
metrics address, and paths (absolute, not a file, not nested in one another). Each raises
``ValueError`` with one line (never echoing a value that could hold a secret)."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from pathlib import Path

# botocore's own checks of a bucket name (botocore.handlers.VALID_BUCKET, VALID_S3_ARN)
VALID_BUCKET = re.compile(r"^[a-zA-Z0-9.\-_]{1,255}$")
VALID_S3_ARN = re.compile(
    r"^arn:(aws).*:(s3|s3-object-lambda):[a-z\-0-9]*:[0-9]{12}:accesspoint[/:]"
    r"[a-zA-Z0-9\-.]{1,63}$|^arn:(aws).*:s3-outposts:[a-z\-0-9]+:[0-9]{12}:outpost[/:]"
    r"[a-zA-Z0-9\-]{1,63}[/:]accesspoint[/:][a-zA-Z0-9\-]{1,63}$"
)
_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
LISTEN_EXAMPLE = "e.g. 127.0.0.1:9464 or [::1]:9464"


def check_bucket(value: str) -> str:
    """``value`` when S3 (botocore) accepts it as a bucket name or access point ARN."""
    if VALID_BUCKET.match(value) or VALID_S3_ARN.match(value):
        return value
    if value.strip().lower().startswith("s3://"):
        raise ValueError("give the bucket's name alone, without s3:// (e.g. akoshad)")
    if "/" in value:
        raise ValueError(
            "holds a '/': give the bucket's name alone (uploads go under "
            "systems/<system_id>/ in it)"
        )
    raise ValueError("is not a bucket name: 1-255 letters, digits, '.', '-' or '_' (no spaces)")


def check_listen(value: str) -> str:
    """``value`` when it is ``host:port`` as the metrics server reads it (the part after
    the last ``:`` a port 1-65535, the host a name, an IPv4 address or a bracketed IPv6
    address)."""
    if "://" in value:
        raise ValueError(f"must be host:port without a scheme or path, {LISTEN_EXAMPLE}")
    host, sep, port = value.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        raise ValueError(f"must be host:port with a port from 1 to 65535, {LISTEN_EXAMPLE}")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ValueError(f"holds no IPv6 address in its [brackets], {LISTEN_EXAMPLE}") from None
        return value
    if ":" in host:
        raise ValueError(f"an IPv6 address goes in brackets, {LISTEN_EXAMPLE}")
    if not _HOST_NAME.match(host):
        raise ValueError(f"its host is not a host name or IP address, {LISTEN_EXAMPLE}")
    if re.fullmatch(r"[0-9.]+", host):  # no name: an IPv4 address, or a typo of one
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(
                f"its host {host} is not an IPv4 address (four numbers from 0 to 255, "
                f"no leading zeros), {LISTEN_EXAMPLE}"
            ) from None
    return value


def exposed_listen(value: str | None) -> str | None:
    """A warning when ``metrics_listen`` (valid) is an IP address other than loopback
    (``0.0.0.0``, ``[::]``, a LAN address): /metrics has no authentication. A host name is
    not resolved here (``localhost``, or this machine's name mapped to 127.0.1.1)."""
    if not value:
        return None
    host = value.rpartition(":")[0].strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if address.is_loopback:
        return None
    return (
        f"metrics_listen {value} is not a loopback address: other machines can read "
        "/metrics, which has no authentication (the system id, the version, how backups "
        "go); use 127.0.0.1, or keep the port behind a firewall"
    )


_ENV_REFERENCE = re.compile(r"\$(\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)")


def check_absolute(value: Path) -> Path:
    """``value`` (``~`` already expanded) when absolute and naming no environment
    variable: a relative path would follow the directory each command happens to start
    in, and ``$HOME`` or ``${USER}`` is not expanded (a directory of that very name)."""
    reference = _ENV_REFERENCE.search(str(value))
    if reference is not None:
        raise ValueError(
            f"names the environment variable {reference.group(0)}, which is not expanded "
            f"here ({value}): write the path out (a leading ~ is expanded)"
        )
    if not value.is_absolute():
        raise ValueError(
            f"must be an absolute path or start with ~, not relative ({value}): it would "
            "follow the directory each command starts in"
        )
    return value


def check_directory(value: Path) -> Path:
    """``value`` when it, or the nearest of its parents that exists, is a directory."""
    for path in (value, *value.parents):
        if os.path.exists(path):  # os.path: an unreadable parent is False, not an error
            if os.path.isdir(path):
                return value
            if path == value:
                raise ValueError(f"{value} exists and is not a directory")
            raise ValueError(f"{value} cannot be made: {path} exists and is not a directory")
        if os.path.islink(path):  # dangling: mkdir fails on it as on a file
            raise ValueError(f"{value}: {path} is a dangling symlink")
    return value


def check_utf8_name(value: Path) -> Path:
    """``value`` when its name is UTF-8: one that is not (an undecodable byte from the
    environment) stops every upload (manifests, DuckDB's copies under state_dir)."""
    try:
        str(value).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(value).decode("utf-8", "backslashreplace")
        raise ValueError(
            f"{shown} is not a UTF-8 name: rename it, or give a symlink to it whose name is UTF-8"
        ) from None
    return value


def check_log_file(value: Path) -> Path:
    """``value`` when a log file can be made there: not a directory, and the nearest of
    its parents that exists a directory (as :func:`check_directory`)."""
    if os.path.isdir(value):
        raise ValueError(f"{value} is a directory: name the file to log to")
    for path in value.parents:
        if os.path.exists(path):
            if os.path.isdir(path):
                return value
            raise ValueError(f"{value} cannot be made: {path} exists and is not a directory")
        if os.path.islink(path):
            raise ValueError(f"{value} cannot be made: {path} is a dangling symlink")
    return value


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def nesting_problem(data_dir: Path, own: Mapping[str, Path]) -> str | None:
    """One line when a directory of akoshad's own (``own``: name -> path) is ``data_dir``,
    inside it, or holds it (resolved paths compared), else None."""
    data = _real(data_dir)
    for name, path in own.items():
        mine = _real(path)
        if mine == data:
            where = "is the same directory as"
        elif data in mine.parents:
            where = "is inside"
        elif mine in data.parents:
            where = "holds"
        else:
            continue
        return (
            f"{name} {path} {where} data_dir {data_dir}: the daemon would back up its own "
            f"files forever; keep {name} and data_dir apart"
        )
    return None


def log_inside(data_dir: Path, log_file: Path | None) -> str | None:
    """One line when ``log_file`` lies inside ``data_dir`` (each line logged would be a
    change to back up), else None."""
    if log_file is None or _real(data_dir) not in _real(log_file).parents:
        return None
    return (
        f"log_file {log_file} is inside data_dir {data_dir}: the daemon would back up its "
        "own log forever; write it elsewhere"
    )


def identity_inside(
    data_dir: Path, identity_file: Path | None, include: list[str], exclude: list[str]
) -> str | None:
    """A warning when the age identity lies inside ``data_dir`` and include/exclude select
    it: it is uploaded with the store (as it is when nothing is encrypted; else encrypted
    to itself, which nothing can open once it is lost), else None."""
    from akoshad.pipeline.storefiles import PathFilter

    if identity_file is None:
        return None
    path = Path(os.path.expanduser(str(identity_file)))
    data, real = _real(data_dir), _real(path)
    if data not in real.parents or not PathFilter.of(include, exclude).allows(
        real.relative_to(data).as_posix()
    ):
        return None
    return (
        f"encryption.identity_file {path} is inside data_dir {data_dir}: the secret key is "
        "uploaded with the store (encrypted to itself, which no restore can open once this "
        "copy is lost; in plain text when nothing is encrypted); keep it outside data_dir, "
        "and a copy off this machine"
    )


def unmatchable_glob(name: str, patterns: list[str], data_dir: Path) -> str | None:
    """One line for the first ``include``/``exclude`` glob (``name``) that no store path
    can match, else None: store paths are relative to ``data_dir``, never ``/...``,
    ``./...`` or ``../...`` (an exclude so written would leave out nothing, an include
    select nothing, without a word)."""
    for i, pattern in enumerate(patterns):
        if not pattern.startswith(("/", "./", "../")):
            continue
        inside = os.path.relpath(pattern, data_dir) if pattern.startswith("/") else ""
        if inside not in ("", ".") and not inside.startswith(".."):
            hint = f"give {inside!r}"
        elif pattern.startswith("./"):
            hint = f"give {pattern[2:]!r}"
        else:
            hint = "it names no path under data_dir"
        return (
            f"{name}[{i}] {pattern!r} can match no file: globs are relative to data_dir "
            f"{data_dir} ({hint})"
        )
    return None


def memories_left_out(include: list[str], exclude: list[str]) -> str | None:
    """Why ``include``/``exclude`` leave ``reflection.duckdb`` out (the file memories are
    read from: none would reach Akosha), or None when they select it."""
    from akoshad.names import MEMORY_DB
    from akoshad.pipeline.storefiles import PathFilter

    if PathFilter.of(include, exclude).allows(MEMORY_DB):
        return None
    return (
        f"akosha_url is set but {MEMORY_DB}, the file memories are read from, is left out "
        f"(include: {include or 'everything'}; exclude: {exclude}): no memory reaches "
        "Akosha; select it to deliver them"
    )
