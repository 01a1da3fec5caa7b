"""``akoshad service install|uninstall``: the systemd user unit or the launchd agent.

The files are rendered from the templates in ``akoshad/data`` with this installation's
executable, the user's config file and the directories the daemon writes to. The committed
``systemd/akoshad.service`` and ``launchd/dev.akoshad.agent.plist`` are the same templates
rendered with the defaults.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from akoshad.cli.service_units import (
    UNIT_NAME,
    Plan,
    config_arg,
    home_dir,
    plan_for,
    this_executable,
)
from akoshad.config import Settings


def _show(cmds: list[list[str]]) -> str:
    return "\n".join("  " + shlex.join(c) for c in cmds)


def cmd_service(
    args: argparse.Namespace,
    settings: Settings | None,
    *,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """``service install|uninstall [--dry-run] [--enable] [--prefix P]``; exit code.
    ``settings`` is None only for an uninstall without ``--purge`` whose configuration
    could not be read: removing the unit needs none of it."""
    # the CLI passes no environment: this entry point then takes the process's own
    env: Mapping[str, str] = {} if environ is None else environ
    plat = platform or sys.platform
    if plat != "darwin" and not plat.startswith("linux"):
        print(f"akoshad: service: unsupported platform {plat!r} (linux or darwin)", file=sys.stderr)
        return 1
    config = config_arg(getattr(args, "config", None), env)
    executable = this_executable(getattr(args, "prefix", None), env)
    if args.action == "install" and getattr(args, "prefix", None):
        _warn_missing(Path(executable[0]))
    plan = plan_for(plat, env, executable, config, os.getuid(), settings)
    dry = bool(getattr(args, "dry_run", False))
    run = bool(getattr(args, "enable", False))
    purge = bool(getattr(args, "purge", False))
    if settings is None:
        return _uninstall(plan, dry, run)
    if args.action == "install":
        if purge or getattr(args, "yes", False):
            print("akoshad: service: --purge and --yes go with uninstall", file=sys.stderr)
            return 2
        return _install(plan, dry, run, _unseen(env, settings), _in_private_tmp(settings, config))
    if purge and not dry:
        keep = [settings.data_dir, home_dir(env), *([Path(config)] if config else [])]
        refused = _purge_refusal(settings, keep, run, bool(getattr(args, "yes", False)))
        if refused is not None:
            return refused
    code = _uninstall(plan, dry, run)
    if not purge:
        _say_kept(settings)
        return code
    return _purge(settings, dry) or code


def _warn_missing(executable: Path) -> None:
    """One line on stderr when ``--prefix`` holds no ``bin/akoshad`` to run."""
    if executable.is_file() and os.access(executable, os.X_OK):
        return
    print(
        f"akoshad: warning: --prefix: {executable} is not an executable file: the service "
        "will not start until it is (is --prefix where akoshad is installed?)",
        file=sys.stderr,
    )


# botocore's credential chain: read from the environment when cloud_sync holds no keys
AWS_CREDENTIAL_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
)


def _unseen(env: Mapping[str, str], settings: Settings) -> list[str]:
    """The variables of this shell that the configuration uses and the service will not
    get: AKOSHAD_* and session-buddy's settings, and the S3 keys of botocore's chain."""
    names = [
        k
        for k in env
        if (k.startswith("AKOSHAD_") and k not in ("AKOSHAD_CONFIG", "AKOSHAD_DEBUG"))
        or k.startswith("SESSION_BUDDY_CLOUD_SYNC__")
    ]
    cs = settings.cloud_sync
    if settings.bucket_configured and cs.access_key_id is None:
        names += [k for k in AWS_CREDENTIAL_VARS if env.get(k)]
    return sorted(names)


def _in_private_tmp(settings: Settings, config: str | None) -> list[tuple[str, Path]]:
    """The paths the service needs that ``PrivateTmp=yes`` hides from it."""
    paths = [
        ("store", settings.data_dir),
        ("state folder", settings.state_dir),
        ("outbox", settings.local_target_dir),
        *([("configuration file", Path(config))] if config else []),
    ]
    tmps = (Path("/tmp"), Path("/var/tmp"))
    return [(w, p) for w, p in paths if any(p.is_relative_to(d) for d in tmps)]


def _say_kept(settings: Settings) -> None:
    bucket = settings.cloud_sync.cloud_bucket
    print(
        f"kept: the state {settings.state_dir}, the outbox {settings.local_target_dir}"
        + (f" and the uploads in the bucket {bucket}" if bucket else "")
        + "; `akoshad service uninstall --purge` deletes the local ones"
    )


def _purge_targets(settings: Settings) -> list[Path]:
    return [settings.state_dir, settings.local_target_dir]


def _daemon_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def _purge_refusal(settings: Settings, keep: list[Path], stopping: bool, yes: bool) -> int | None:
    """Why ``--purge`` may not go ahead (its exit code, with one line said), else None.
    ``keep``: the store, the home directory and the configuration file, never deleted."""
    for target in _purge_targets(settings):
        t = target.resolve()
        if t == Path("/") or any(k.resolve().is_relative_to(t) for k in keep):
            print(
                f"akoshad: service: refusing to purge {target}: it holds more than akoshad's"
                " own files",
                file=sys.stderr,
            )
            return 1
    if not stopping and _daemon_answers(settings.socket_path):
        print(
            f"akoshad: service: the daemon still answers on {settings.socket_path}: stop it"
            f" first (systemctl --user stop {UNIT_NAME}) or add --enable",
            file=sys.stderr,
        )
        return 1
    if yes:
        return None
    what = " and ".join(str(t) for t in _purge_targets(settings))
    if not sys.stdin.isatty():
        print(
            f"akoshad: service: --purge deletes {what}: confirm with --yes (no terminal to ask on)",
            file=sys.stderr,
        )
        return 2
    try:
        answer = input(f"Delete {what} (local state and outbox)? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        print("nothing changed")
        return 1
    return None


def _purge(settings: Settings, dry: bool) -> int:
    """Delete the local state and outbox (never following a symbolic link); exit code."""
    code = 0
    for target in _purge_targets(settings):
        if dry:
            print(f"# would delete {target}")
        elif target.is_symlink():
            print(f"akoshad: service: not purged: {target} is a symbolic link", file=sys.stderr)
            code = 1
        elif target.exists():
            try:
                shutil.rmtree(target)
            except OSError as exc:
                print(f"akoshad: service: could not delete {target}: {exc}", file=sys.stderr)
                code = 1
            else:
                print(f"deleted {target}")
        else:
            print(f"{target} was not there")
    bucket = settings.cloud_sync.cloud_bucket
    if bucket:
        print(f"kept: the uploads in the bucket {bucket} (delete them with your S3 tools)")
    return code


def _install(
    plan: Plan, dry: bool, run: bool, ignored: list[str], hidden: list[tuple[str, Path]]
) -> int:
    if dry:
        print(f"# dry run, nothing changed: would write the {plan.kind} {plan.path} (0644):")
        print(plan.content.rstrip("\n"))
        for d in plan.dirs:
            print(f"# would create {d}")
        print(f"# then run:\n{_show(plan.enable)}")
    else:
        for d in [plan.path.parent, *plan.dirs]:
            d.mkdir(parents=True, exist_ok=True)
        tmp = plan.path.with_name(plan.path.name + ".tmp")
        tmp.write_text(plan.content, encoding="utf-8")
        os.chmod(tmp, 0o644)
        os.replace(tmp, plan.path)
        print(f"wrote the {plan.kind} {plan.path}")
    if ignored:
        print(
            f"# note: the service does not get this shell's environment: it will not see "
            f"{', '.join(ignored)}; put those settings in the configuration file (S3 keys: "
            "cloud_sync.access_key_id and secret_access_key, or ~/.aws/credentials)"
        )
    if plan.kind.startswith("systemd"):
        for what, path in hidden:
            print(
                f"# note: the service has a /tmp of its own (PrivateTmp=yes): it will not see"
                f" the {what} {path}; move it out of the system temp folder"
            )
    if dry:
        return 0
    return _run_or_print(plan.enable, run, "enable and start it with")


def _uninstall(plan: Plan, dry: bool, run: bool) -> int:
    if dry:
        print(f"# dry run, nothing changed: would run\n{_show(plan.disable)}")
        print(f"# remove {plan.path}")
        if plan.after_remove:
            print(_show(plan.after_remove))
        return 0
    code = _run_or_print(plan.disable, True, "") if run else 0
    for link in plan.links:  # what `disable` removes, so nothing dangles
        if link.is_symlink():
            link.unlink()
    existed = plan.path.exists()
    plan.path.unlink(missing_ok=True)
    print(f"removed {plan.path}" if existed else f"{plan.path} was not installed")
    if run:
        return _run_or_print(plan.after_remove, True, "") or code
    # the file is gone, so only stopping by name remains (disable needs the file)
    stop = [c for c in plan.disable if c[0] != "systemctl"] or [
        ["systemctl", "--user", "stop", UNIT_NAME]
    ]
    return _run_or_print(stop + plan.after_remove, False, "stop it with")


def _run_or_print(cmds: list[list[str]], run: bool, what: str) -> int:
    """Print the commands, or run them, stopping at the first failure (one line)."""
    if not run:
        print(f"{what}:\n{_show(cmds)}")
        return 0
    for cmd in cmds:
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"akoshad: {shlex.join(cmd)} failed: {exc}", file=sys.stderr)
            return 1
        if res.returncode != 0:
            err = (res.stderr or res.stdout).strip().splitlines()
            reason = err[-1] if err else f"exit {res.returncode}"
            print(f"akoshad: {shlex.join(cmd)} failed: {reason}", file=sys.stderr)
            return 1
        print(f"ran: {shlex.join(cmd)}")
    return 0
