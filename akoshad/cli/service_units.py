"""The service files of ``akoshad service``: the systemd user unit and the launchd agent
rendered from the templates in ``akoshad/data``, where they go, and the plan (files and
commands) that installs them."""

from __future__ import annotations

import math
import os
import pwd
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from akoshad.config import Settings
from akoshad.fastpath import config_home

UNIT_NAME = "akoshad.service"
LABEL = "dev.akoshad.agent"
DEFAULT_EXEC = "/usr/local/bin/akoshad"
DEFAULT_STOP_TIMEOUT = 45  # drain_deadline_seconds (30) + margin
STOP_MARGIN = 15
# the shipped plist's (launchd expands no ``~`` and makes no directory: /tmp is there);
# ``service install`` renders ~/Library/Logs/akoshad with the home spelled out, and makes it
DEFAULT_LOGDIR = "/tmp"
DEFAULT_MAC_PATH = ("/usr/local/bin", "/opt/homebrew/bin", "/usr/bin", "/bin")
# systemd syntax: "-" = optional (a missing path does not fail the unit), %h home, %t runtime
DEFAULT_WRITABLE = (
    "-%h/.local/state/akoshad",
    "-%h/.local/share/akoshad",
    "-%h/.claude/data",
    "%t",
)
DEFAULT_CREATE = ("%h/.local/state/akoshad", "%h/.local/share/akoshad")
# where the configuration file, the state and the outbox are by default: the service is given
# the values install saw (a service manager's environment seldom has the shell's)
PASSED_ON = ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME")


def _template(name: str) -> str:
    return resources.files("akoshad").joinpath("data", name).read_text(encoding="utf-8")


def _argv(executable: str | Sequence[str]) -> list[str]:
    return [executable] if isinstance(executable, str) else list(executable)


def _sd_word(word: str, exec_line: bool = False) -> str:
    """One word in systemd unit syntax: specifiers (and ``$`` on Exec lines) escaped,
    quoted when it holds whitespace, quotes or backslashes."""
    word = word.replace("%", "%%")
    if exec_line:
        word = word.replace("$", "$$")
    if not word or any(c.isspace() or c in "\"'\\;" for c in word):
        word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def passed_on(environ: Mapping[str, str]) -> dict[str, str]:
    """The :data:`PASSED_ON` variables set (to an absolute path, as the XDG spec reads
    them) in ``environ``: the service gets them, so it reads the file, and uses the
    directories, that install saw."""
    return {k: environ[k] for k in PASSED_ON if os.path.isabs(environ.get(k) or "")}


def render_unit(
    executable: str | Sequence[str],
    config: str | None = None,
    *,
    writable: Sequence[str] = DEFAULT_WRITABLE,
    create: Sequence[str] = DEFAULT_CREATE,
    stop_timeout: int = DEFAULT_STOP_TIMEOUT,
    environment: Mapping[str, str] | None = None,
) -> str:
    """The systemd user unit. ``executable``: a path or an argv prefix (``python -m
    akoshad``); ``writable``/``create``: paths already in unit syntax (see ``unit_paths``);
    ``environment``: variables the service is given (:func:`passed_on`)."""
    argv = [*_argv(executable), "run", *(["--config", config] if config else [])]
    env = "".join(f"Environment={_sd_word(f'{k}={v}')}\n" for k, v in (environment or {}).items())
    return (
        _template("akoshad.service.in")
        .replace("Environment=PYTHONUNBUFFERED=1\n", f"Environment=PYTHONUNBUFFERED=1\n{env}")
        .replace("@EXEC_START@", " ".join(_sd_word(w, exec_line=True) for w in argv))
        .replace("@MKDIR_PATHS@", " ".join(create))
        .replace("@RW_PATHS@", " ".join(writable))
        .replace("@TIMEOUT_STOP@", str(stop_timeout))
    )


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_plist(
    executable: str | Sequence[str],
    config: str | None = None,
    logdir: str = DEFAULT_LOGDIR,
    *,
    exit_timeout: int = DEFAULT_STOP_TIMEOUT,
    environment: Mapping[str, str] | None = None,
) -> str:
    """The launchd agent plist (``logdir`` receives ``akoshad.log``; ``environment``:
    variables the agent is given besides PATH, :func:`passed_on`)."""
    argv = [*_argv(executable), "run", *(["--config", config] if config else [])]
    path = list(DEFAULT_MAC_PATH)
    bindir = str(Path(argv[0]).parent)
    if bindir not in path:
        path.insert(0, bindir)
    return (
        _template("akoshad.plist.in")
        .replace(
            "@PROGRAM_ARGUMENTS@", "\n".join(f"        <string>{_xml(a)}</string>" for a in argv)
        )
        .replace("@EXIT_TIMEOUT@", str(exit_timeout))
        .replace("@LOGDIR@", _xml(logdir))
        .replace("@PATH@", _xml(":".join(path)))
        .replace("@MORE_ENV@", _plist_env(environment))
    )


def _plist_env(environment: Mapping[str, str] | None) -> str:
    """More keys of ``EnvironmentVariables`` (after PATH's ``</string>``)."""
    return "".join(
        f"\n        <key>{_xml(k)}</key>\n        <string>{_xml(v)}</string>"
        for k, v in (environment or {}).items()
    )


def _unit_path(path: Path, home: Path) -> str:
    """``path`` in unit syntax, relative to ``%h`` when under the home directory."""
    try:
        rel = path.relative_to(home)
    except ValueError:
        return _sd_word(str(path))
    return "%h" if not rel.parts else "%h/" + _sd_word(rel.as_posix())


def unit_paths(
    settings: Settings, home: Path, runtime_dir: str | None
) -> tuple[list[str], list[str]]:
    """(ReadWritePaths, directories created before start) for these settings."""
    created: list[Path] = [settings.state_dir, settings.local_target_dir]
    socket_dir = settings.socket_path.parent
    if not runtime_dir or socket_dir != Path(runtime_dir):
        created.append(socket_dir)
    if settings.log_file is not None:
        created.append(settings.log_file.parent)
    mine: list[Path] = []
    for p in created:  # drop a path inside one already listed
        if not any(p == q or p.is_relative_to(q) for q in mine):
            mine = [q for q in mine if not q.is_relative_to(p)] + [p]
    writable = ["-" + _unit_path(p, home) for p in mine]
    if not any(settings.data_dir.is_relative_to(q) for q in mine):
        writable.append("-" + _unit_path(settings.data_dir, home))
    writable.append("%t")
    return writable, [_unit_path(p, home) for p in mine]


@dataclass(frozen=True)
class Plan:
    """What install/uninstall writes and runs."""

    kind: str
    path: Path
    content: str
    enable: list[list[str]]
    disable: list[list[str]]  # run while the file still exists (uninstall --enable)
    after_remove: list[list[str]]
    dirs: list[Path] = field(default_factory=list)  # created by install besides path's own
    links: list[Path] = field(default_factory=list)  # what ``disable`` removes


def home_dir(environ: Mapping[str, str]) -> Path:
    """``$HOME``, else the user's home from the password database."""
    home = environ.get("HOME")
    return Path(home) if home else Path(pwd.getpwuid(os.getuid()).pw_dir)


def plan_for(
    platform: str,
    environ: Mapping[str, str],
    executable: str | Sequence[str],
    config: str | None,
    uid: int,
    settings: Settings | None = None,
) -> Plan:
    """The file, its content and the commands for ``platform`` (``linux``/``darwin``)."""
    home = home_dir(environ)
    stop = DEFAULT_STOP_TIMEOUT
    if settings is not None:
        stop = max(DEFAULT_STOP_TIMEOUT, math.ceil(settings.drain_deadline_seconds) + STOP_MARGIN)
    if platform == "darwin":
        path = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        logdir = home / "Library" / "Logs" / "akoshad"
        return Plan(
            "launchd agent",
            path,
            render_plist(
                executable, config, str(logdir), exit_timeout=stop, environment=passed_on(environ)
            ),
            enable=[
                ["launchctl", "bootstrap", f"gui/{uid}", str(path)],
                ["launchctl", "enable", f"gui/{uid}/{LABEL}"],
            ],
            disable=[["launchctl", "bootout", f"gui/{uid}/{LABEL}"]],
            after_remove=[],
            dirs=[logdir],  # launchd does not create the log file's directory
        )
    unit_dir = config_home(environ) / "systemd" / "user"
    if settings is None:
        writable, create = list(DEFAULT_WRITABLE), list(DEFAULT_CREATE)
    else:
        writable, create = unit_paths(settings, home, environ.get("XDG_RUNTIME_DIR"))
    return Plan(
        "systemd user unit",
        unit_dir / UNIT_NAME,
        render_unit(
            executable,
            config,
            writable=writable,
            create=create,
            stop_timeout=stop,
            environment=passed_on(environ),
        ),
        enable=[
            ["systemctl", "--user", "daemon-reload"],
            ["systemctl", "--user", "enable", "--now", UNIT_NAME],
        ],
        disable=[["systemctl", "--user", "disable", "--now", UNIT_NAME]],
        after_remove=[["systemctl", "--user", "daemon-reload"]],
        links=[unit_dir / "default.target.wants" / UNIT_NAME],
    )


def this_executable(prefix: str | None, environ: Mapping[str, str]) -> list[str]:
    """This installation's ``akoshad``: ``--prefix``/bin/akoshad, the script beside this
    interpreter (a venv or pipx install), the one on PATH, else ``python -m akoshad``."""
    if prefix:
        return [os.path.abspath(os.path.join(prefix, "bin", "akoshad"))]
    beside = Path(sys.executable).parent / "akoshad"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("akoshad", path=environ.get("PATH") or os.defpath)
    if found:
        return [str(Path(found).resolve())]
    return [sys.executable, "-m", "akoshad"]


def config_arg(given: str | None, environ: Mapping[str, str]) -> str | None:
    """The config file the service runs with (``--config`` or ``AKOSHAD_CONFIG``), absolute."""
    raw = given or environ.get("AKOSHAD_CONFIG")
    if not raw:
        return None
    if raw == "~" or raw.startswith("~/"):
        raw = str(home_dir(environ)) + raw[1:]
    return os.path.abspath(raw)
