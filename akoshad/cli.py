"""Command line: parse, load the configuration once, dispatch, map errors to exit codes.

Exit codes: 0 success, 1 operation failed, 2 usage error, 3 daemon not running,
78 invalid configuration. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from akoshad import __version__
from akoshad.config import Settings, load_settings, process_environ
from akoshad.errors import AkoshadError, ConfigError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NO_DAEMON, EXIT_CONFIG = 0, 1, 2, 3, 78


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="configuration file (YAML)")

    parser = argparse.ArgumentParser(
        prog="akoshad",
        description="Keep a session-buddy memory store synced to Akosha.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"akoshad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="run the daemon in the foreground")
    run.add_argument("--once", action="store_true", help="reconcile, drain, exit")
    run.add_argument("--data-dir", help="override data_dir")

    status = sub.add_parser("status", parents=[common], help="ask the running daemon")
    status.add_argument("--json", action="store_true", help="print the raw status object")
    status.add_argument("--watch", action="store_true", help="refresh in place")
    status.add_argument("--interval", type=float, default=1.0, help="--watch refresh seconds")

    sync = sub.add_parser("sync", parents=[common], help="ask the daemon to drain now")
    sync.add_argument("--wait", action="store_true", help="return when the queue is empty")
    sync.add_argument("--method", choices=("auto", "cloud", "http"), default=None)
    sync.add_argument("--json", action="store_true", help="print the raw result object")

    sub.add_parser("pause", parents=[common], help="stop uploading (watching goes on)")
    sub.add_parser("resume", parents=[common], help="restart uploading")
    queue = sub.add_parser("queue", parents=[common], help="list pending paths")
    queue.add_argument("--json", action="store_true")

    config = sub.add_parser("config", parents=[common], help="check or show the configuration")
    config.add_argument("action", choices=("check", "show"))

    verify = sub.add_parser("verify", parents=[common], help="check uploads against the target")
    group = verify.add_mutually_exclusive_group()
    group.add_argument("--upload-id", help="verify this upload (default: the newest)")
    group.add_argument("--all", action="store_true", help="verify every upload")
    verify.add_argument("--system-id", help="system id to look under (default: configured)")
    verify.add_argument("--target", choices=("auto", "local", "cloud"), default="auto")

    restore = sub.add_parser("restore", parents=[common], help="rebuild the store from a target")
    which = restore.add_mutually_exclusive_group(required=True)
    which.add_argument("--latest", action="store_true", help="the newest upload in the target")
    which.add_argument("--upload-id", help="this upload")
    restore.add_argument("--dest", required=True, help="directory to restore into")
    restore.add_argument("--system-id", help="system id to restore (default: configured)")
    restore.add_argument("--force", action="store_true", help="allow a non-empty --dest")
    restore.add_argument("--target", choices=("auto", "local", "cloud"), default="auto")

    service = sub.add_parser("service", parents=[common], help="install the user service")
    service.add_argument("action", choices=("install", "uninstall"))
    service.add_argument("--dry-run", action="store_true", help="print, change nothing")
    service.add_argument("--enable", action="store_true", help="also run the enable commands")
    service.add_argument("--prefix", help="where akoshad is installed (default: this one)")
    service.add_argument(
        "--purge", action="store_true", help="uninstall: also delete the local state and outbox"
    )
    service.add_argument("--yes", action="store_true", help="--purge without asking")

    sub.add_parser("mcp", parents=[common], help="serve the MCP tools over stdio")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        out["data_dir"] = args.data_dir
    return out


def _run_async(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)


def _dispatch(
    args: argparse.Namespace, settings: Settings, argv: Sequence[str], env: dict[str, str]
) -> int:
    cmd = args.command
    if cmd == "config":
        from akoshad.config_cli import cmd_config

        return cmd_config(args, settings)
    if cmd == "run":
        from akoshad.daemon import run_daemon

        return run_daemon(settings, once=args.once, config_path=args.config, argv=argv, environ=env)
    if cmd in ("status", "sync", "pause", "resume", "queue"):
        from akoshad import client_cli

        handler: Callable[[argparse.Namespace, Settings], int] = getattr(client_cli, f"cmd_{cmd}")
        return handler(args, settings)
    if cmd == "verify":
        from akoshad.restore import cmd_verify

        return _run_async(cmd_verify(args, settings))
    if cmd == "restore":
        from akoshad.restore import cmd_restore

        return _run_async(cmd_restore(args, settings))
    if cmd == "service":
        from akoshad.service import cmd_service

        return int(cmd_service(args, settings, environ=env))
    if cmd == "mcp":
        from akoshad.mcp_tools import cmd_mcp

        return int(cmd_mcp(args, settings, environ=env))
    raise AssertionError(cmd)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        env = process_environ()
        settings = load_settings(args.config, overrides=_overrides(args), environ=env)
    except ConfigError as exc:
        print(f"akoshad: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return _dispatch(args, settings, list(sys.argv[1:] if argv is None else argv), env)
    except KeyboardInterrupt:
        return 130
    except AkoshadError as exc:
        print(f"akoshad: {exc}", file=sys.stderr)
        return exc.exit_code
    except ImportError as exc:
        print(f"akoshad: a component is missing: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except Exception as exc:  # never a traceback for the user; the reason in one line
        print(f"akoshad: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
