"""Command line: parse, load the configuration once, dispatch, map errors to exit codes.

Exit codes: 0 success, 1 operation failed, 2 usage error, 3 daemon not running,
78 invalid configuration. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from akoshad import __version__, collector
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
from akoshad.errors import AkoshadError, ConfigError
from akoshad.names import EXIT_CONFIG, EXIT_FAIL
from akoshad.runtime.health import STATUS_EPILOG

if TYPE_CHECKING:  # imported once parsed: --help and usage errors need no pydantic
    from akoshad.config import LoadedConfig, Settings

WARNING_LEVEL = 30  # loguru's WARNING
CLIENT_COMMANDS = ("status", "sync", "pause", "resume", "queue")
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


class _Parser(argparse.ArgumentParser):
    """The top-level parser: merges ``--config`` given before and after the command."""

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


def build_parser() -> argparse.ArgumentParser:
    """The whole command line. ``--config`` may come before or after the command: the
    top level and the commands keep it under distinct names, merged once parsed."""
    before = argparse.ArgumentParser(add_help=False)
    before.add_argument(
        "--config", metavar="FILE", type=CONFIG_FILE, action=_ConfigOnce, help=CONFIG_HELP
    )
    before.add_argument(
        "--debug",
        action="store_true",
        help="print the traceback of an unexpected error (also AKOSHAD_DEBUG=1)",
    )
    common = argparse.ArgumentParser(add_help=False)  # the commands' copy
    common.add_argument(
        "--config",
        dest="sub_config",
        metavar="FILE",
        type=CONFIG_FILE,
        action=_ConfigOnce,
        help=CONFIG_HELP,
    )

    parser = _Parser(
        prog="akoshad",
        description="Keep a session-buddy memory store synced to Akosha.",
        parents=[before],
    )
    parser.add_argument("--version", action="version", version=f"akoshad {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=argparse.ArgumentParser
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
    status.add_argument(
        "--check",
        action="store_true",
        help="exit 0 when healthy, 1 when degraded, paused, waiting for data_dir or behind, "
        "3 with no daemon (see below)",
    )
    status.add_argument(
        "--watch",
        action="store_true",
        help="print it again every --interval seconds until Ctrl-C (redrawn in place on a "
        "terminal); a daemon that stops or starts meanwhile is shown, not fatal",
    )
    status.add_argument(
        "--interval",
        type=_interval,
        default=1.0,
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


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        out["data_dir"] = args.data_dir
    if getattr(args, "identity", None):
        out["encryption"] = {"identity_file": args.identity}
    return out


def _run_async(coro: Coroutine[Any, Any, int]) -> int:
    import asyncio

    return asyncio.run(coro)


def _dispatch(
    args: argparse.Namespace, loaded: LoadedConfig, argv: Sequence[str], env: dict[str, str]
) -> int:
    cmd, settings = args.command, loaded.settings
    if cmd == "config":
        from akoshad.cli.config import cmd_config

        return cmd_config(args, loaded)
    if cmd == "run":
        from akoshad.runtime.run import run_daemon

        return run_daemon(
            settings,
            once=args.once,
            config_path=args.config,
            argv=argv,
            environ=env,
            overrides=_overrides(args),
        )
    if cmd in CLIENT_COMMANDS:
        from akoshad.cli import client as client_cli

        handler: Callable[[argparse.Namespace, Settings], int] = getattr(client_cli, f"cmd_{cmd}")
        return handler(args, settings)
    if cmd == "verify":
        from akoshad.restore.readback import cmd_verify

        return _run_async(cmd_verify(args, settings))
    if cmd == "restore":
        from akoshad.restore.readback import cmd_restore

        return _run_async(cmd_restore(args, settings))
    if cmd == "uploads":
        from akoshad.cli.uploads import cmd_uploads

        return _run_async(cmd_uploads(args, settings))
    if cmd == "drill":
        from akoshad.cli.drill import cmd_drill

        return _run_async(cmd_drill(args, settings))
    if cmd in ("prune", "takeover"):
        return int(getattr(prune_cli, f"cmd_{cmd}")(args, settings))
    if cmd == "service":
        from akoshad.cli.service import cmd_service

        return int(cmd_service(args, settings, environ=env))
    if cmd == "mcp":
        from akoshad.cli.mcp import cmd_mcp

        return int(cmd_mcp(args, settings, environ=env))
    raise AssertionError(cmd)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line; usage errors exit 2 (argparse prints them)."""
    return build_parser().parse_args(list(argv))


def _load(args: argparse.Namespace, env: dict[str, str]) -> LoadedConfig | int:
    """The validated configuration, or the exit code of an invalid one.

    The client commands need only the socket: with an invalid configuration they warn in
    one line and still ask the daemon (at the file's ``socket_path`` when it can be read)."""
    from akoshad.config import LoadedConfig, client_settings, fallback_socket_path, load_config

    try:
        return load_config(args.config, overrides=_overrides(args), environ=env)
    except ConfigError as exc:
        if args.command not in CLIENT_COMMANDS:
            print(f"akoshad: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        try:
            sock = fallback_socket_path(args.config, env)
        except ConfigError as unknown:  # where the daemon listens cannot be told
            why = "" if str(unknown) == str(exc) else f"; {unknown}"  # a missing file: once
            print(
                f"akoshad: {exc}{why}, so {args.command} cannot tell where the daemon "
                "listens (fix the file, or set AKOSHAD_SOCKET_PATH)",
                file=sys.stderr,
            )
            return EXIT_CONFIG
        print(
            f"akoshad: warning: {exc}; {args.command} asks the daemon at {sock} anyway",
            file=sys.stderr,
        )
        return LoadedConfig(client_settings(sock, env))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from akoshad.config import debug_enabled, process_environ

    env = process_environ()
    if args.command == "keygen":  # needs no configuration (a broken one must not stop it)
        from akoshad.cli.keygen import cmd_keygen

        return cmd_keygen(args, env)
    loaded = _load(args, env)
    if isinstance(loaded, int):
        return loaded
    if args.command != "run":  # run settles once the daemon's modules are imported
        collector.settle()
        _cli_logs(bool(args.debug or debug_enabled(env)))
    try:
        return _dispatch(args, loaded, list(sys.argv[1:] if argv is None else argv), env)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`akoshad uploads | head`): no noise
        _quiet_stdout()
        return EXIT_FAIL
    except AkoshadError as exc:
        print(f"akoshad: {_as_given(exc, args)}", file=sys.stderr)
        return exc.exit_code
    except ImportError as exc:
        print(f"akoshad: a component is missing: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except Exception as exc:  # the reason in one line; the traceback only when debugging
        if args.debug or debug_enabled(env):
            traceback.print_exc(file=sys.stderr)
        print(f"akoshad: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAIL


def _as_given(exc: AkoshadError, args: argparse.Namespace) -> str:
    """An error's line, naming a setting as the user gave it: ``--identity FILE`` reaches
    the settings as ``encryption.identity_file``, but a problem with it names the option."""
    text = str(exc)
    # by name: the class lives beside pyrage, which a command without encryption never loads
    if getattr(args, "identity", None) and type(exc).__name__ == "IdentityFileError":
        return text.replace("encryption.identity_file ", "--identity ", 1)
    return text


def _cli_logs(debug: bool) -> None:
    """A command's log lines on stderr as its other messages: ``akoshad: warning: ...``
    (``run`` sets up the daemon's own logging; no traceback unless debugging)."""
    from loguru import logger

    def line(record: Any) -> str:
        level = record["level"]
        kind = f"{level.name.lower()}: " if level.no >= WARNING_LEVEL else ""
        return f"akoshad: {kind}{{message}}\n" + ("{exception}" if debug else "")

    def to_stderr(message: Any) -> None:  # the stream of the moment (tests swap it)
        sys.stderr.write(message)

    logger.remove()
    logger.add(to_stderr, level="DEBUG" if debug else "INFO", format=line, backtrace=False)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: the interpreter's final flush of what is left would fail
    on the closed pipe again (and print its own error)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
