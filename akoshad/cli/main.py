"""Command line: parse, load the configuration once, dispatch, map errors to exit codes.

Exit codes: 0 success, 1 operation failed, 2 usage error, 3 daemon not running,
78 invalid configuration. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from akoshad import collector
from akoshad.cli import prune as prune_cli
from akoshad.cli.parser import build_parser
from akoshad.errors import AkoshadError, ConfigError
from akoshad.names import EXIT_CONFIG, EXIT_FAIL, printable

if TYPE_CHECKING:  # imported once parsed: --help and usage errors need no pydantic
    from akoshad.config import LoadedConfig, Settings

WARNING_LEVEL = 30  # loguru's WARNING
CLIENT_COMMANDS = ("status", "sync", "pause", "resume", "queue")
# with --json, a failure of these is also one object on stdout (prune, drill and takeover
# print their own {ok: false, problems})
JSON_FAILURES = ("status", "sync", "queue", "uploads")


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
            _fail(args, str(exc))
            return EXIT_CONFIG
        try:
            sock = fallback_socket_path(args.config, env)
        except ConfigError as unknown:  # where the daemon listens cannot be told
            why = "" if str(unknown) == str(exc) else f"; {unknown}"  # a missing file: once
            _fail(
                args,
                f"{exc}{why}, so {args.command} cannot tell where the daemon "
                "listens (fix the file, or set AKOSHAD_SOCKET_PATH)",
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
    if args.command == "service" and args.action == "uninstall" and not args.purge:
        return _uninstall_service(args, env)  # a broken configuration must not stop it
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
        _fail(args, _as_given(exc, args))
        return exc.exit_code
    except ImportError as exc:
        print(f"akoshad: a component is missing: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except Exception as exc:  # the reason in one line; the traceback only when debugging
        if args.debug or debug_enabled(env):
            traceback.print_exc(file=sys.stderr)
        _fail(args, f"{args.command} failed: {type(exc).__name__}: {exc}")
        return EXIT_FAIL


def _fail(args: argparse.Namespace, line: str) -> None:
    """A command's failure: the line on stderr, and with ``--json`` (status, sync, queue,
    uploads) ``{"ok": false, "error": line}`` on stdout, so that a script reads an object
    there and not nothing."""
    print(printable(f"akoshad: {line}"), file=sys.stderr)
    if args.command in JSON_FAILURES and getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": line}, indent=2, sort_keys=True))


def _uninstall_service(args: argparse.Namespace, env: dict[str, str]) -> int:
    """``service uninstall`` (without ``--purge``): the unit goes also when the
    configuration cannot be read (a warning then), as removing it needs none of it."""
    from akoshad.cli.service import cmd_service
    from akoshad.config import load_config

    settings: Settings | None = None
    try:
        settings = load_config(args.config, overrides=_overrides(args), environ=env).settings
    except ConfigError as exc:
        print(
            f"akoshad: warning: {exc}; service uninstall removes the unit all the same",
            file=sys.stderr,
        )
    from akoshad.config import debug_enabled

    collector.settle()
    _cli_logs(bool(args.debug or debug_enabled(env)))
    return int(cmd_service(args, settings, environ=env))


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
