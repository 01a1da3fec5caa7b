"""``akoshad service install|uninstall``: the systemd user unit or the launchd agent."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from akoshad.config import Settings

UNIT_NAME = "akoshad.service"
LABEL = "dev.akoshad.agent"
DEFAULT_EXEC = "/usr/local/bin/akoshad"


def _template(name: str) -> str:
    return resources.files("akoshad").joinpath("data", name).read_text(encoding="utf-8")


def render_unit(executable: str, config: str | None = None) -> str:
    """The systemd user unit for this executable (and config file, when given)."""
    arg = f" --config {shlex.quote(config)}" if config else ""
    return (
        _template("akoshad.service.in").replace("@EXEC@", executable).replace("@CONFIG_ARG@", arg)
    )


def render_plist(executable: str, config: str | None = None, logdir: str = "~") -> str:
    """The launchd agent plist for this executable (and config file, when given)."""
    extra = ""
    if config:
        extra = f"\n        <string>--config</string>\n        <string>{_xml(config)}</string>"
    return (
        _template("akoshad.plist.in")
        .replace("@EXEC@", _xml(executable))
        .replace("@CONFIG_PLIST@", extra)
        .replace("@LOGDIR@", _xml(logdir))
    )


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class Plan:
    """What install/uninstall writes and runs."""

    path: Path
    content: str
    enable: list[list[str]]
    disable: list[list[str]]


def plan_for(
    platform: str,
    environ: Mapping[str, str],
    executable: str,
    config: str | None,
    uid: int,
) -> Plan:
    home = Path(environ.get("HOME") or os.path.expanduser("~"))
    if platform == "darwin":
        path = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        logdir = str(home / "Library" / "Logs" / "akoshad")
        return Plan(
            path,
            render_plist(executable, config, logdir),
            enable=[
                ["launchctl", "bootstrap", f"gui/{uid}", str(path)],
                ["launchctl", "enable", f"gui/{uid}/{LABEL}"],
            ],
            disable=[["launchctl", "bootout", f"gui/{uid}/{LABEL}"]],
        )
    config_home = Path(environ.get("XDG_CONFIG_HOME") or home / ".config")
    path = config_home / "systemd" / "user" / UNIT_NAME
    return Plan(
        path,
        render_unit(executable, config),
        enable=[
            ["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", "--now", UNIT_NAME],
        ],
        disable=[
            ["systemctl", "--user", "disable", "--now", UNIT_NAME],
            ["systemctl", "--user", "daemon-reload"],
        ],
    )


def this_executable(prefix: str | None) -> str:
    """The real path of this installation's ``akoshad`` (or ``--prefix/bin/akoshad``)."""
    if prefix:
        return str(Path(prefix) / "bin" / "akoshad")
    found = shutil.which("akoshad")
    if found:
        return str(Path(found).resolve())
    return f"{sys.executable} -m akoshad"


def _show(cmds: list[list[str]]) -> str:
    return "\n".join("  " + shlex.join(c) for c in cmds)


def cmd_service(
    args: argparse.Namespace,
    settings: Settings,
    *,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    env = dict(os.environ if environ is None else environ)
    plat = platform or sys.platform
    config = str(Path(args.config).expanduser().resolve()) if args.config else None
    plan = plan_for(plat, env, this_executable(args.prefix), config, os.getuid())
    kind = "launchd agent" if plat == "darwin" else "systemd user unit"
    if args.action == "install":
        if args.dry_run:
            print(f"# would write the {kind} {plan.path}:")
            print(plan.content.rstrip())
            print(f"# then enable it with:\n{_show(plan.enable)}")
            return 0
        plan.path.parent.mkdir(parents=True, exist_ok=True)
        plan.path.write_text(plan.content, encoding="utf-8")
        os.chmod(plan.path, 0o644)
        print(f"wrote the {kind} {plan.path}")
        return _run_or_print(plan.enable, args.enable, "enable it with")
    if args.dry_run:
        print(f"# would disable and remove {plan.path}:\n{_show(plan.disable)}")
        return 0
    code = _run_or_print(plan.disable, args.enable, "disable it with")
    plan.path.unlink(missing_ok=True)
    print(f"removed {plan.path}")
    return code


def _run_or_print(cmds: list[list[str]], run: bool, what: str) -> int:
    if not run:
        print(f"{what}:\n{_show(cmds)}")
        return 0
    for cmd in cmds:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            err = (res.stderr or res.stdout).strip().splitlines()
            print(
                f"akoshad: {shlex.join(cmd)} failed: {err[-1] if err else res.returncode}",
                file=sys.stderr,
            )
            return 1
    return 0
