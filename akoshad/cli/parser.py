"""The command line's parser: every command, option and help text (``build_parser``);
``main`` parses with it, then loads the configuration and dispatches."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from typing import Any, NoReturn

from akoshad import __version__
from akoshad.cli import prune as prune_cli
from akoshad.cli.uploads_args import (
    TARGET_HELP,
    add_restore_selection,
    add_uploads_parser,
    dest_arg,
    path_arg,
    system_id_arg,
    upload_id_arg,
)
from akoshad.runtime.health import STATUS_EPILOG

CONFIG_HELP = (
    "configuration file (YAML); before or after the command, once (two different "
    "files are a usage error)"
)
CONFIG_FILE = path_arg("the configuration file")
IDENTITY_FILE = path_arg("the identity file")
IDENTITY_HELP = (
    "the age identity file that reads encrypted uploads (overrides encryption.identity_file)"
)
KEYGEN_HELP = (
    "where to write the new identity (default: $XDG_CONFIG_HOME/akoshad/identity.txt, "
    "i.e. ~/.config/akoshad/identity.txt); never overwritten"
)
SYNC_METHOD_HELP = (
    "where this drain delivers: auto = the configured chain (the bucket when one is set, "
    "else the local outbox; memories over HTTP to Akosha when akosha_url is set), cloud = "
    "the bucket only, http = memories to Akosha only (default: cloud_sync.force_method)"
)
STATUS_DESCRIPTION = (
    "Ask the running daemon over its socket (socket_path) and print a summary: state, "
    "pending changes, last upload, per-target health, counters. Exit 3 when no daemon "
    "answers. An invalid configuration file only gives a warning: the daemon is still asked, "
    "at the file's socket_path when it can be read; a named file that does not exist, or "
    "whose socket_path cannot be read, is exit 78."
)


def _same_file(a: str, b: str) -> bool:
    return os.path.abspath(os.path.expanduser(a)) == os.path.abspath(os.path.expanduser(b))


class _ConfigOnce(argparse.Action):
    """``--config FILE``: a second, different file at the same place is a usage error."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        old = getattr(namespace, self.dest, None)
        if old is not None and not _same_file(old, str(values)):
            parser.error(f"--config given twice ({old} and {values}): give it once")
        setattr(namespace, self.dest, values)


# an age identity typed on the command line (``prune --identity KEY``: an option the command
# does not take) would be echoed whole by argparse's "unrecognized arguments" line
_AGE_SECRET = re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]*", re.IGNORECASE)


def hide_secret_keys(message: str) -> str:
    """``message`` with every age identity in it replaced by a note that one was there."""
    return _AGE_SECRET.sub("AGE-SECRET-KEY-1... (an age identity: not shown)", message)


class _UnechoingParser(argparse.ArgumentParser):
    """A parser whose usage errors never echo an age identity (the commands' parsers), and
    that takes no abbreviated option (``--dry`` is no ``--dry-run``: exit 2)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        super().error(hide_secret_keys(message))


# an option that means something only beside another: (command, option, the other);
# given alone it would be ignored without a word ('sync --timeout 60' returned at once, 0)
_GOES_WITH = (("sync", "timeout", "wait"), ("status", "interval", "watch"))


class _Parser(_UnechoingParser):
    """The top-level parser: merges ``--config`` and ``--debug`` given before and after
    the command, and refuses an option given without the one it goes with."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        ns, rest = super().parse_known_args(args, namespace)
        after = vars(ns).pop("sub_config", None)
        before = getattr(ns, "config", None)
        if before is not None and after is not None and not _same_file(before, after):
            self.error(
                f"--config given before and after the command ({before} and {after}): give it once"
            )
        ns.config = after if after is not None else before
        ns.debug = bool(getattr(ns, "debug", False) or vars(ns).pop("sub_debug", False))
        for command, option, needed in _GOES_WITH:
            given = ns.command == command and getattr(ns, option) is not None
            if given and not getattr(ns, needed):
                self.error(f"{command} --{option} goes with --{needed}: add --{needed}")
        return ns, rest


def _seconds(text: str) -> float:
    """A number of seconds above 0 (``sync --timeout``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0: {text!r}")
    return value


def _interval(text: str) -> float:
    """``status --interval``: seconds above 0, at most a day (raised to 0.2 when shorter)."""
    value = _seconds(text)
    if value > 86400:
        raise argparse.ArgumentTypeError(f"must be at most 86400 seconds (a day): {text!r}")
    return value


DEBUG_HELP = "print the traceback of an unexpected error (also AKOSHAD_DEBUG=1)"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line. ``--config`` may come before or after the command: the
    top level and the commands keep it under distinct names, merged once parsed."""
    before = _UnechoingParser(add_help=False)
    before.add_argument(
        "--config", metavar="FILE", type=CONFIG_FILE, action=_ConfigOnce, help=CONFIG_HELP
    )
    before.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    common = _UnechoingParser(add_help=False)  # the commands' copy
    common.add_argument(
        "--config",
        dest="sub_config",
        metavar="FILE",
        type=CONFIG_FILE,
        action=_ConfigOnce,
        help=CONFIG_HELP,
    )
    common.add_argument("--debug", dest="sub_debug", action="store_true", help=DEBUG_HELP)

    parser = _Parser(
        prog="akoshad",
        description="Keep a session-buddy memory store synced to Akosha.",
        parents=[before],
    )
    parser.add_argument("--version", action="version", version=f"akoshad {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_UnechoingParser
    )

    run = sub.add_parser("run", parents=[common], help="run the daemon in the foreground")
    run.add_argument("--once", action="store_true", help="reconcile, drain, exit")
    run.add_argument("--data-dir", type=path_arg("the store's directory"), help="override data_dir")

    status = sub.add_parser(
        "status",
        parents=[common],
        help="ask the running daemon",
        description=STATUS_DESCRIPTION,
        epilog=STATUS_EPILOG,
    )
    status.add_argument(
        "--json", action="store_true", help="print the daemon's status result object as JSON"
    )
    once_or_watch = status.add_mutually_exclusive_group()  # --check answers once, for scripts
    once_or_watch.add_argument(
        "--check",
        action="store_true",
        help="exit 0 when healthy, 1 when degraded, paused, waiting for data_dir or behind, "
        "3 with no daemon (see below)",
    )
    once_or_watch.add_argument(
        "--watch",
        action="store_true",
        help="print it again every --interval seconds until Ctrl-C (redrawn in place on a "
        "terminal); a daemon that stops or starts meanwhile is shown, not fatal",
    )
    status.add_argument(
        "--interval",
        type=_interval,
        default=None,
        help="seconds between --watch refreshes (default 1, at least 0.2), at most 86400",
    )

    sync = sub.add_parser("sync", parents=[common], help="ask the daemon to drain now")
    sync.add_argument("--wait", action="store_true", help="return when the queue is empty")
    sync.add_argument(
        "--method", choices=("auto", "cloud", "http"), default=None, help=SYNC_METHOD_HELP
    )
    sync.add_argument("--json", action="store_true", help="print the raw result object")
    sync.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="with --wait: give up waiting after SECONDS (exit 1; the daemon's sync goes on)",
    )

    sub.add_parser(
        "pause",
        parents=[common],
        help="stop uploading until resume or a restart (watching goes on)",
    )
    sub.add_parser("resume", parents=[common], help="restart uploading")
    queue = sub.add_parser("queue", parents=[common], help="list pending paths")
    queue.add_argument("--json", action="store_true", help="print the queue as JSON")

    config = sub.add_parser("config", parents=[common], help="check or show the configuration")
    config.add_argument("action", choices=("check", "show"))

    verify = sub.add_parser("verify", parents=[common], help="check uploads against the target")
    group = verify.add_mutually_exclusive_group()
    group.add_argument(
        "--upload-id", type=upload_id_arg, help="verify this upload (default: the newest)"
    )
    group.add_argument("--all", action="store_true", help="verify every upload")
    verify.add_argument(
        "--system-id", type=system_id_arg, help="system id to look under (default: configured)"
    )
    verify.add_argument(
        "--target", choices=("auto", "local", "cloud"), default="auto", help=TARGET_HELP
    )
    verify.add_argument("--identity", metavar="FILE", type=IDENTITY_FILE, help=IDENTITY_HELP)

    restore = sub.add_parser("restore", parents=[common], help="rebuild the store from a target")
    which = restore.add_mutually_exclusive_group(required=True)
    which.add_argument("--latest", action="store_true", help="the newest upload in the target")
    which.add_argument("--upload-id", type=upload_id_arg, help="this upload")
    add_restore_selection(restore, which)
    restore.add_argument("--dest", required=True, type=dest_arg, help="directory to restore into")
    restore.add_argument(
        "--system-id", type=system_id_arg, help="system id to restore (default: configured)"
    )
    restore.add_argument("--force", action="store_true", help="allow a non-empty --dest")
    restore.add_argument(
        "--target", choices=("auto", "local", "cloud"), default="auto", help=TARGET_HELP
    )
    restore.add_argument("--identity", metavar="FILE", type=IDENTITY_FILE, help=IDENTITY_HELP)

    add_uploads_parser(sub, common)

    drill = sub.add_parser("drill", parents=[common], help="restore the newest upload and check it")
    drill.add_argument("--json", action="store_true", help="print the last_drill object")
    drill.add_argument("--identity", metavar="FILE", type=IDENTITY_FILE, help=IDENTITY_HELP)

    keygen = sub.add_parser(
        "keygen",
        parents=[common],  # accepted like everywhere; keygen reads no configuration
        help="create an age identity for encryption and print its public key",
        description="Write a new age identity (mode 0600) and print its recipient (public "
        "key) for encryption.recipients. Keep the identity safe, ideally offline: without "
        "it, encrypted uploads cannot be restored.",
    )
    keygen.add_argument("--output", "-o", metavar="PATH", help=KEYGEN_HELP)

    service = sub.add_parser("service", parents=[common], help="install the user service")
    service.add_argument("action", choices=("install", "uninstall"))
    service.add_argument("--dry-run", action="store_true", help="print, change nothing")
    service.add_argument("--enable", action="store_true", help="also run the enable commands")
    service.add_argument(
        "--prefix",
        type=path_arg("where akoshad is installed"),
        help="where akoshad is installed (default: this one)",
    )
    service.add_argument(
        "--purge", action="store_true", help="uninstall: also delete the local state and outbox"
    )
    service.add_argument("--yes", action="store_true", help="--purge without asking")

    sub.add_parser("mcp", parents=[common], help="serve the MCP tools over stdio")
    prune_cli.add_parsers(sub, common)
    return parser
