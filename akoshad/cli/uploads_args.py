"""Command-line arguments of ``akoshad uploads`` and of restore's ``--at`` / ``--path``
(kept apart from ``main`` so the parser stays light: nothing heavy is imported here)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from typing import Any

AT_HELP = (
    "the newest upload made at or before TIME (ISO 8601, e.g. 2026-11-30T14:05; local time "
    "unless it has an offset such as +01:00 or Z; a date alone is its 00:00, "
    "2026-11-30T24:00 its end)"
)
TARGET_HELP = (
    "the target to read: auto = where run uploads (the bucket when one is set, unless "
    "force_method is http; else the local outbox), local = local_target_dir, cloud = the "
    "bucket (default: auto)"
)
PATH_HELP = (
    "restore only the store paths matching GLOB (shell-style, against the whole path, * also "
    "matches /; a DuckDB database comes with its .wal); repeatable"
)


def _at(text: str) -> datetime:
    from akoshad.restore.select import at_argument

    return at_argument(text)


def upload_id_arg(text: str) -> str:
    """``--upload-id``: an upload id as akoshad names them, else a usage error."""
    from akoshad.manifest.layout import UPLOAD_ID_RE

    if not UPLOAD_ID_RE.match(text) or ".." in text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an upload id (`akoshad uploads` lists them)"
        )
    return text


def system_id_arg(text: str) -> str:
    """``--system-id``: Akosha's alphabet ``[A-Za-z0-9_-]``, 1-100 characters."""
    from akoshad.names import SYSTEM_ID_RE

    if not SYSTEM_ID_RE.match(text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a system id (1-100 of A-Z, a-z, 0-9, '_' and '-')"
        )
    return text


def dest_arg(text: str) -> str:
    """``--dest``: a directory named; an empty one (an unset shell variable) would be the
    current directory, so it is a usage error."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "is empty (an unset variable?): name the directory to restore into"
        )
    return text


def path_arg(what: str) -> Callable[[str], str]:
    """The type of an option naming a path (``--config``, ``--data-dir``, ``--identity``,
    ``--prefix``): an empty value (an unset shell variable) is a usage error, never the
    configured or default path taken in its place."""

    def check(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"is empty (an unset variable?): name {what}")
        return text

    return check


def add_restore_selection(restore: argparse.ArgumentParser, which: Any) -> None:
    """``--at TIME`` (in the ``--latest``/``--upload-id`` group) and ``--path GLOB``."""
    which.add_argument("--at", metavar="TIME", type=_at, help=AT_HELP)
    restore.add_argument(
        "--path",
        metavar="GLOB",
        action="append",
        type=path_arg("a store path or glob"),
        help=PATH_HELP,
    )


def add_uploads_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """``akoshad uploads [--json] [--system-id ID]``."""
    uploads = sub.add_parser(
        "uploads",
        parents=[common],
        help="list the uploads in the target, oldest first",
        description="List the uploads found in the target (read from the target alone), "
        "oldest first: upload id, time, files, bytes stored by that upload (the objects in "
        "its own folder, and the shared packs and documents no earlier upload listed "
        "references: what it added), total size of the store it captures. A damaged "
        "manifest is listed "
        "as damaged. Encrypted uploads are read with the identity (--identity or "
        "encryption.identity_file); without it their files and stored bytes show as "
        '"encrypted". Exit 1 when the target cannot be read.',
    )
    uploads.add_argument("--json", action="store_true", help="print a JSON list of objects")
    uploads.add_argument(
        "--identity",
        metavar="FILE",
        type=path_arg("the identity file"),
        help="the age identity that reads encrypted uploads (overrides "
        "encryption.identity_file); without one, an encrypted upload's files and stored "
        'bytes show as "encrypted" (JSON: null, with "locked" saying why)',
    )
    uploads.add_argument(
        "--system-id", type=system_id_arg, help="system id to look under (default: configured)"
    )
    uploads.add_argument(
        "--target", choices=("auto", "local", "cloud"), default="auto", help=TARGET_HELP
    )
