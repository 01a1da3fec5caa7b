"""The systemd unit, the launchd plist and `akoshad service install|uninstall`."""

from __future__ import annotations

import argparse
import os
import plistlib
import pty
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from akoshad.cli import service
from akoshad.cli.service import cmd_service
from akoshad.cli.service_units import (
    DEFAULT_EXEC,
    render_plist,
    render_unit,
    this_executable,
    unit_paths,
)
from akoshad.config import load_settings
from akoshad.names import EXIT_CONFIG
from tests.helpers import base_env
from tests.tmpdirs import short_dir

REPO = Path(__file__).resolve().parents[2]
NO_ANALYZE = (
    "systemd-analyze is missing: install the 'systemd' package (scripts/test.sh does, as root)"
)


def unit_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_committed_files_match_the_templates() -> None:
    assert (REPO / "systemd" / "akoshad.service").read_text() == render_unit(DEFAULT_EXEC)
    assert (REPO / "launchd" / "dev.akoshad.agent.plist").read_text() == render_plist(DEFAULT_EXEC)
    for text in (render_unit(DEFAULT_EXEC), render_plist(DEFAULT_EXEC)):
        assert "@" not in text.replace("$MAINPID", ""), "a placeholder was left unrendered"


def test_unit_has_what_a_notify_service_needs() -> None:
    lines = unit_lines(render_unit("/opt/ak/bin/akoshad", "/home/u/.config/akoshad/config.yaml"))
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/opt/ak/bin/akoshad run --config /home/u/.config/akoshad/config.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=5",
        "WatchdogSec=60",
        "TimeoutStopSec=45",
        "Environment=PYTHONUNBUFFERED=1",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "PrivateTmp=yes",
        "LockPersonality=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "SystemCallArchitectures=native",
        "UMask=0077",
        "MemoryMax=512M",
        "WantedBy=default.target",
        "ReadWritePaths=-%h/.local/state/akoshad -%h/.local/share/akoshad -%h/.claude/data %t",
    ):
        assert line in lines, line


def test_unit_does_not_restart_on_an_invalid_configuration() -> None:
    """Exit 78 (invalid configuration) is not restarted: with Restart=on-failure and
    RestartSec=5 the start limit is never reached, so a bad file would loop for ever."""
    for text in (render_unit(DEFAULT_EXEC), (REPO / "systemd" / "akoshad.service").read_text()):
        prevent = [
            line.partition("=")[2].split()
            for line in unit_lines(text)
            if line.startswith("RestartPreventExitStatus=")
        ]
        assert any(str(EXIT_CONFIG) in words for words in prevent), prevent


def test_exec_start_quoting() -> None:
    unit = render_unit(["/opt/my dir/python", "-m", "akoshad"], "/cfg/100%$x.yaml")
    assert 'ExecStart="/opt/my dir/python" -m akoshad run --config /cfg/100%%$$x.yaml' in (
        unit.splitlines()
    )


def _verify(unit_text: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip(NO_ANALYZE)
    unit = tmp_path / "akoshad.service"
    unit.write_text(unit_text)
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    res = subprocess.run(
        [analyze, "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if res.returncode != 0 and "Failed to initialize manager" in res.stderr:
        res = subprocess.run(
            [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
        )
    assert res.returncode == 0, res.stderr
    problems = [line for line in res.stderr.splitlines() if "akoshad.service" in line]
    assert problems == [], problems  # warnings about our unit count as failures


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    exe = Path(shutil.which("akoshad") or "/bin/true").resolve()
    committed = (REPO / "systemd" / "akoshad.service").read_text()
    _verify(committed.replace(f"ExecStart={DEFAULT_EXEC} ", f"ExecStart={exe} "), tmp_path)


def test_systemd_analyze_verify_accepts_an_installed_unit(tmp_path: Path) -> None:
    """Rendered from settings, with an interpreter path that needs quoting."""
    odd = tmp_path / "my bin"
    odd.mkdir()
    python = odd / "python"
    python.symlink_to(sys.executable)
    home = tmp_path / "home"
    settings = load_settings(
        environ={"HOME": str(home), "XDG_RUNTIME_DIR": "/run/user/1000"},
        overrides={
            "data_dir": "/srv/store",
            "log_file": str(home / "logs" / "ak.log"),
            "drain_deadline_seconds": 60,
        },
    )
    writable, create = unit_paths(settings, home, "/run/user/1000")
    text = render_unit(
        [str(python), "-m", "akoshad"],
        str(home / "c.yaml"),
        writable=writable,
        create=create,
        environment={"XDG_STATE_HOME": str(tmp_path / "my state %h")},
    )
    _verify(text, tmp_path)


def test_systemd_analyze_tests_skip_with_the_reason_when_it_is_missing(tmp_path: Path) -> None:
    """Without ``systemd-analyze`` on PATH those tests are skipped, and -rs says why."""
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "-k",
            "systemd_analyze_verify",
            str(Path(__file__)),
        ],
        cwd=REPO,
        env=dict(os.environ, PATH=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 skipped" in res.stdout, res.stdout
    assert NO_ANALYZE in res.stdout


def test_unit_paths_from_settings(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = load_settings(
        environ={"HOME": str(home), "XDG_RUNTIME_DIR": "/run/user/7"},
        overrides={"data_dir": "/srv/store", "log_file": "/var/tmp/ak/ak.log"},
    )
    writable, create = unit_paths(settings, home, "/run/user/7")
    assert create == ["%h/.local/state/akoshad", "%h/.local/share/akoshad/outbox", "/var/tmp/ak"]
    assert writable == [*("-" + c for c in create), "-/srv/store", "%t"]
    # a socket outside the runtime directory, inside the state directory: nothing added
    settings = load_settings(environ={"HOME": str(home)})
    writable, create = unit_paths(settings, home, None)
    assert create == ["%h/.local/state/akoshad", "%h/.local/share/akoshad/outbox"]
    assert writable[-2:] == ["-%h/.claude/data", "%t"]


def test_plist_loads_with_the_keys() -> None:
    data = plistlib.loads(
        render_plist(
            "/opt/ak/bin/akoshad", "/Users/u/a&b.yaml", "/Users/u/Library/Logs/akoshad"
        ).encode()
    )
    assert data["Label"] == "dev.akoshad.agent"
    assert data["ProgramArguments"] == [
        "/opt/ak/bin/akoshad",
        "run",
        "--config",
        "/Users/u/a&b.yaml",
    ]
    assert data["RunAtLoad"] is True and data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["ProcessType"] == "Background"
    assert data["StandardOutPath"] == "/Users/u/Library/Logs/akoshad/akoshad.log"
    assert data["StandardErrorPath"] == data["StandardOutPath"]
    assert data["ExitTimeOut"] >= 45  # launchd's default 20 s would cut the drain short
    env = data["EnvironmentVariables"]
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].split(":")[0] == "/opt/ak/bin" and "/usr/bin" in env["PATH"]
    committed = plistlib.loads((REPO / "launchd" / "dev.akoshad.agent.plist").read_bytes())
    assert committed["ProgramArguments"] == [DEFAULT_EXEC, "run"]
    # launchd expands no "~" and makes no directory: the shipped file names paths as they are
    assert committed["StandardOutPath"] == "/tmp/akoshad.log"
    assert committed["StandardErrorPath"] == committed["StandardOutPath"]
    text = (REPO / "launchd" / "dev.akoshad.agent.plist").read_text()
    assert "~" not in text and "$" not in text


def test_plist_with_an_interpreter_prefix() -> None:
    data = plistlib.loads(render_plist(["/usr/bin/python3", "-m", "akoshad"]).encode())
    assert data["ProgramArguments"] == ["/usr/bin/python3", "-m", "akoshad", "run"]


def _args(action: str, **kw: object) -> argparse.Namespace:
    base = {
        "action": action,
        "dry_run": False,
        "enable": False,
        "prefix": "/opt/ak",
        "config": None,
    }
    base.update(kw)
    return argparse.Namespace(**base)


def _env(tmp_path: Path) -> dict[str, str]:
    return {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg"), "PATH": "/nowhere"}


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_dry_run_prints_and_writes_nothing(
    tmp_path: Path, platform: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _env(tmp_path)
    settings = load_settings(environ=env)
    args = _args("install", dry_run=True, config="~/ak.yaml")
    assert cmd_service(args, settings, platform=platform, environ=env) == 0
    out = capsys.readouterr().out
    uid = os.getuid()
    if platform == "linux":
        assert str(tmp_path / "cfg" / "systemd" / "user" / "akoshad.service") in out
        assert f"ExecStart=/opt/ak/bin/akoshad run --config {tmp_path}/ak.yaml" in out
        assert "Type=notify" in out and "WatchdogSec=60" in out
        assert "  systemctl --user daemon-reload\n" in out
        assert "  systemctl --user enable --now akoshad.service\n" in out
    else:
        plist = tmp_path / "Library" / "LaunchAgents" / "dev.akoshad.agent.plist"
        assert str(plist) in out
        assert "<string>/opt/ak/bin/akoshad</string>" in out
        assert f"<string>{tmp_path}/ak.yaml</string>" in out
        assert f"<string>{tmp_path}/Library/Logs/akoshad/akoshad.log</string>" in out
        assert f"  launchctl bootstrap gui/{uid} {plist}\n" in out
        assert f"  launchctl enable gui/{uid}/dev.akoshad.agent\n" in out
    assert list(tmp_path.rglob("*")) == []


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_uninstall_dry_run(
    tmp_path: Path, platform: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = _env(tmp_path)
    args = _args("uninstall", dry_run=True)
    assert cmd_service(args, load_settings(environ=env), platform=platform, environ=env) == 0
    out = capsys.readouterr().out
    if platform == "linux":
        assert "systemctl --user disable --now akoshad.service" in out
    else:
        assert f"launchctl bootout gui/{os.getuid()}/dev.akoshad.agent" in out
    assert list(tmp_path.rglob("*")) == []


def test_install_and_uninstall_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = _env(tmp_path)
    settings = load_settings(environ=env, overrides={"drain_deadline_seconds": 100})
    cfg = tmp_path / "ak.yaml"
    cfg.write_text("debounce_seconds: 3\n")
    args = _args("install", config=str(cfg))
    assert cmd_service(args, settings, platform="linux", environ=env) == 0
    unit = tmp_path / "cfg" / "systemd" / "user" / "akoshad.service"
    text = unit.read_text()
    assert f"ExecStart=/opt/ak/bin/akoshad run --config {cfg}" in text
    assert "TimeoutStopSec=115" in text.splitlines()  # follows drain_deadline_seconds
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    assert "systemctl --user enable --now akoshad.service" in capsys.readouterr().out
    # enabled by hand: the wants link goes with the file
    wants = unit.parent / "default.target.wants"
    wants.mkdir()
    (wants / "akoshad.service").symlink_to(unit)
    assert cmd_service(_args("uninstall"), settings, platform="linux", environ=env) == 0
    assert not unit.exists() and not (wants / "akoshad.service").is_symlink()
    out = capsys.readouterr().out
    assert "systemctl --user stop akoshad.service" in out
    assert "systemctl --user daemon-reload" in out


def test_install_darwin_creates_the_log_directory(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert (
        cmd_service(_args("install"), load_settings(environ=env), platform="darwin", environ=env)
        == 0
    )
    plist = tmp_path / "Library" / "LaunchAgents" / "dev.akoshad.agent.plist"
    assert plistlib.loads(plist.read_bytes())["Label"] == "dev.akoshad.agent"
    assert (tmp_path / "Library" / "Logs" / "akoshad").is_dir()
    assert (
        cmd_service(_args("uninstall"), load_settings(environ=env), platform="darwin", environ=env)
        == 0
    )
    assert not plist.exists()


def test_config_from_the_environment_is_passed_on(tmp_path: Path) -> None:
    env = {**_env(tmp_path), "AKOSHAD_CONFIG": "/etc/ak.yaml", "AKOSHAD_DATA_DIR": "/d"}
    assert (
        cmd_service(
            _args("install"), load_settings(environ=_env(tmp_path)), platform="linux", environ=env
        )
        == 0
    )
    unit = tmp_path / "cfg" / "systemd" / "user" / "akoshad.service"
    assert "ExecStart=/opt/ak/bin/akoshad run --config /etc/ak.yaml" in unit.read_text()


def test_unsupported_platform(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert (
        cmd_service(_args("install"), load_settings(environ=env), platform="win32", environ=env)
        == 1
    )


def test_run_reports_failures_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        service._run_or_print([["true"], ["sh", "-c", "echo 'no bus' >&2; exit 3"]], True, "") == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["akoshad: sh -c 'echo '\"'\"'no bus'\"'\"' >&2; exit 3' failed: no bus"]
    assert service._run_or_print([["/nonexistent/systemctl"]], True, "") == 1
    assert "failed" in capsys.readouterr().err


def test_this_executable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert this_executable("/opt/ak", {}) == ["/opt/ak/bin/akoshad"]
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    on_path = tmp_path / "path"
    on_path.mkdir()
    script = on_path / "akoshad"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    assert this_executable(None, {"PATH": str(on_path)}) == [str(script)]
    assert this_executable(None, {"PATH": str(tmp_path / "none")}) == [
        str(venv / "python"),
        "-m",
        "akoshad",
    ]
    (venv / "akoshad").write_text("#!/bin/sh\n")
    (venv / "akoshad").chmod(0o755)  # the script beside the interpreter wins
    assert this_executable(None, {"PATH": str(on_path)}) == [str(venv / "akoshad")]


# ---- uninstall --purge: the local state and outbox, with a confirmation -------------------


def _purge_rig(tmp_path: Path, **extra: object) -> tuple[Path, dict[str, str], dict[str, Path]]:
    """An installed unit, a store, a state folder, an outbox and a neighbour to keep."""
    home = tmp_path / "home"
    dirs = {
        "data": home / "store",
        "state": home / "ak" / "state",
        "outbox": home / "ak" / "outbox",
        "neighbour": home / "ak" / "keep",
    }
    for name, d in dirs.items():
        (d / "sub").mkdir(parents=True)
        (d / "sub" / f"{name}.bin").write_bytes(b"x" * 10)
    cfg = home / "ak" / "config.yaml"
    settings: dict[str, object] = {
        "data_dir": str(dirs["data"]),
        "state_dir": str(dirs["state"]),
        "local_target_dir": str(dirs["outbox"]),
        "socket_path": str(short_dir() / "a.sock"),
    }
    settings.update(extra)
    cfg.write_text(yaml.safe_dump(settings))
    env = base_env(home)
    assert _cli(["install", "--config", str(cfg)], env).returncode == 0
    assert (home / ".config" / "systemd" / "user" / "akoshad.service").exists()
    return cfg, env, dirs


def _cli(
    args: list[str], env: dict[str, str], stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "akoshad", "service", *args],
        cwd=REPO,
        env=env,
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_uninstall_purge_yes_deletes_the_state_and_outbox_only(tmp_path: Path) -> None:
    cfg, env, dirs = _purge_rig(tmp_path)
    res = _cli(["uninstall", "--purge", "--yes", "--config", str(cfg)], env)
    assert res.returncode == 0, res.stderr
    assert not dirs["state"].exists() and not dirs["outbox"].exists()
    assert (dirs["data"] / "sub" / "data.bin").read_bytes() == b"x" * 10
    assert (dirs["neighbour"] / "sub" / "neighbour.bin").exists()
    assert cfg.exists()
    assert not (Path(env["HOME"]) / ".config" / "systemd" / "user" / "akoshad.service").exists()
    assert f"deleted {dirs['state']}" in res.stdout and f"deleted {dirs['outbox']}" in res.stdout


def test_uninstall_purge_refuses_without_a_terminal_or_yes(tmp_path: Path) -> None:
    cfg, env, dirs = _purge_rig(tmp_path)
    res = _cli(["uninstall", "--purge", "--config", str(cfg)], env)
    assert res.returncode == 2
    assert "--yes" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr
    assert all((d / "sub").is_dir() for d in dirs.values())  # nothing deleted
    assert (Path(env["HOME"]) / ".config" / "systemd" / "user" / "akoshad.service").exists()


@pytest.mark.parametrize(("answer", "code"), [("n", 1), ("", 1), ("y", 0)])
def test_uninstall_purge_asks_on_a_terminal(tmp_path: Path, answer: str, code: int) -> None:
    cfg, env, dirs = _purge_rig(tmp_path)
    master, slave = pty.openpty()
    try:
        os.write(master, (answer + "\n").encode())
        res = _cli(["uninstall", "--purge", "--config", str(cfg)], env, stdin=slave)
    finally:
        os.close(slave)
        os.close(master)
    assert res.returncode == code, res.stdout + res.stderr
    assert "[y/N]" in res.stdout
    assert dirs["state"].exists() is (code != 0)
    assert dirs["outbox"].exists() is (code != 0)
    assert (dirs["data"] / "sub" / "data.bin").exists()


def test_uninstall_purge_refuses_while_the_daemon_answers(tmp_path: Path) -> None:
    cfg, env, dirs = _purge_rig(tmp_path)
    sock_path = yaml.safe_load(cfg.read_text())["socket_path"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
        srv.bind(sock_path)
        srv.listen()
        res = _cli(["uninstall", "--purge", "--yes", "--config", str(cfg)], env)
    assert res.returncode == 1
    assert "still answers" in res.stderr
    assert dirs["state"].exists() and dirs["outbox"].exists()


def test_uninstall_purge_refuses_a_state_dir_holding_the_store(tmp_path: Path) -> None:
    cfg, env, dirs = _purge_rig(tmp_path)
    settings = yaml.safe_load(cfg.read_text())
    settings["state_dir"] = str(dirs["data"].parent)  # the store is inside it
    cfg.write_text(yaml.safe_dump(settings))
    res = _cli(["uninstall", "--purge", "--yes", "--config", str(cfg)], env)
    # refused by the configuration itself (exit 78) before any purge is thought of
    assert res.returncode == 78 and "holds data_dir" in res.stderr, res.stderr
    assert all((d / "sub").is_dir() for d in dirs.values())


def test_uninstall_says_what_it_keeps(tmp_path: Path) -> None:
    cfg, env, dirs = _purge_rig(tmp_path, cloud_sync={"cloud_bucket": "my-bucket"})
    res = _cli(["uninstall", "--config", str(cfg)], env)
    assert res.returncode == 0, res.stderr
    assert f"kept: the state {dirs['state']}, the outbox {dirs['outbox']}" in res.stdout
    assert "my-bucket" in res.stdout and "--purge" in res.stdout
    assert dirs["state"].exists() and dirs["outbox"].exists()


def test_uninstall_removes_the_unit_whatever_the_configuration_says(tmp_path: Path) -> None:
    """A configuration broken after the install (not YAML any more), or a named file gone:
    uninstall still removes the unit, with the reason as a warning (before: exit 78 and
    the unit stayed, even with --dry-run); --purge, which needs the paths, is refused."""
    cfg, env, dirs = _purge_rig(tmp_path)
    unit = tmp_path / "home" / ".config" / "systemd" / "user" / "akoshad.service"
    cfg.write_text("data_dir: [unclosed\n")
    refused = _cli(["uninstall", "--purge", "--yes", "--config", str(cfg)], env)
    assert refused.returncode == EXIT_CONFIG and unit.exists()
    res = _cli(["uninstall", "--config", str(cfg)], env)
    assert res.returncode == 0, res.stderr
    assert not unit.exists() and f"removed {unit}" in res.stdout
    assert "warning:" in res.stderr and "removes the unit all the same" in res.stderr
    assert dirs["state"].exists() and dirs["outbox"].exists()
    again = _cli(["uninstall", "--config", str(tmp_path / "gone.yaml")], env)
    assert again.returncode == 0 and "was not installed" in again.stdout


def test_purge_goes_with_uninstall_only(tmp_path: Path) -> None:
    res = _cli(["install", "--purge", "--dry-run"], base_env(tmp_path))
    assert res.returncode == 2 and "uninstall" in res.stderr


def test_uninstall_purge_never_deletes_the_configuration_file(tmp_path: Path) -> None:
    cfg, env, dirs = _purge_rig(tmp_path)
    inside = dirs["state"] / "config.yaml"
    inside.write_text(cfg.read_text())
    res = _cli(["uninstall", "--purge", "--yes", "--config", str(inside)], env)
    assert res.returncode == 1 and "refusing to purge" in res.stderr
    assert inside.exists() and dirs["outbox"].exists()


def test_install_warns_about_paths_in_the_private_tmp(tmp_path: Path) -> None:
    if not tmp_path.is_relative_to("/tmp"):
        pytest.skip("tmp_path is not under /tmp here")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "store")}))
    res = _cli(["install", "--dry-run", "--config", str(cfg)], base_env(tmp_path / "home"))
    assert res.returncode == 0, res.stderr
    assert f"PrivateTmp=yes): it will not see the store {tmp_path / 'store'}" in res.stdout
    assert f"the configuration file {cfg}" in res.stdout


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_the_service_gets_the_xdg_directories_install_saw(
    tmp_path: Path, platform: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """XDG_CONFIG_HOME (or XDG_STATE_HOME, XDG_DATA_HOME) set in the shell: install found
    the configuration file and made the unit's paths with them, but the unit ran
    ``akoshad run`` without them, so the service read ~/.config/akoshad/config.yaml
    (another file, or none: the default store) and a state its sandbox does not let it
    write. They are passed on now; SESSION_BUDDY_CLOUD_SYNC__* are named as not seen."""
    env = {
        **_env(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "my cfg"),
        "XDG_STATE_HOME": str(tmp_path / "st"),
        "XDG_DATA_HOME": "relative",  # ignored, as the XDG spec says
        "SESSION_BUDDY_CLOUD_SYNC__CLOUD_BUCKET": "b",
    }
    settings = load_settings(environ=env)
    args = _args("install", dry_run=True)
    assert cmd_service(args, settings, platform=platform, environ=env) == 0
    out = capsys.readouterr().out
    if platform == "linux":
        lines = unit_lines(out)
        assert f'Environment="XDG_CONFIG_HOME={tmp_path}/my cfg"' in lines
        assert f"Environment=XDG_STATE_HOME={tmp_path}/st" in lines
        assert not any("XDG_DATA_HOME" in line for line in lines)
    else:
        start = out.index("<?xml")
        plist = plistlib.loads(out[start : out.index("</plist>") + 8].encode())
        passed = plist["EnvironmentVariables"]
        assert passed["XDG_CONFIG_HOME"] == f"{tmp_path}/my cfg"
        assert passed["XDG_STATE_HOME"] == f"{tmp_path}/st" and "XDG_DATA_HOME" not in passed
    assert "will not see SESSION_BUDDY_CLOUD_SYNC__CLOUD_BUCKET" in out


def test_a_prefix_without_akoshad_is_warned_of(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--prefix`` that holds no bin/akoshad (a typo, a relative path from another
    directory) wrote a unit whose ExecStart does not exist, without a word."""
    env = _env(tmp_path)
    args = _args("install", dry_run=True, prefix=str(tmp_path / "nowhere"))
    assert cmd_service(args, load_settings(environ=env), platform="linux", environ=env) == 0
    err = capsys.readouterr().err
    assert f"warning: --prefix: {tmp_path}/nowhere/bin/akoshad is not an executable" in err
    exe = tmp_path / "ok" / "bin" / "akoshad"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    args = _args("install", dry_run=True, prefix=str(tmp_path / "ok"))
    assert cmd_service(args, load_settings(environ=env), platform="linux", environ=env) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_install_names_the_shell_settings_the_service_will_not_get(
    tmp_path: Path, platform: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's S3 try-out gives the keys as AWS_* variables and session-buddy's bucket
    may come from SESSION_BUDDY_CLOUD_SYNC__*: a service started by systemd or launchd has
    none of them (no keys, or another target), so install says so; keys in the file, or no
    bucket, need no AWS_* variable, and AKOSHAD_CONFIG/AKOSHAD_DEBUG are no settings."""
    shell = {
        "AWS_ACCESS_KEY_ID": "trykey",
        "AWS_SECRET_ACCESS_KEY": "try-secret-0123456789",
        "SESSION_BUDDY_CLOUD_SYNC__CLOUD_BUCKET": "b",
        "AKOSHAD_CONFIG": str(tmp_path / "c.yaml"),
        "AKOSHAD_DEBUG": "1",
    }
    (tmp_path / "c.yaml").write_text("{}\n")
    env = {**_env(tmp_path), **shell}
    settings = load_settings(environ=env)
    assert settings.cloud_sync.cloud_bucket == "b"
    args = _args("install", dry_run=True)
    assert cmd_service(args, settings, platform=platform, environ=env) == 0
    out = capsys.readouterr().out
    note = next(line for line in out.splitlines() if "this shell's environment" in line)
    want = "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, SESSION_BUDDY_CLOUD_SYNC__CLOUD_BUCKET;"
    assert want in note and "AKOSHAD_" not in note and "try-secret" not in out
    keys = {"AKOSHAD_CLOUD_SYNC__ACCESS_KEY_ID": "k", "AKOSHAD_CLOUD_SYNC__SECRET_ACCESS_KEY": "s"}
    env = {**env, **keys}
    assert cmd_service(args, load_settings(environ=env), platform=platform, environ=env) == 0
    note = next(line for line in capsys.readouterr().out.splitlines() if "shell's" in line)
    assert "AWS_" not in note and "AKOSHAD_CLOUD_SYNC__ACCESS_KEY_ID" in note
    env = {**_env(tmp_path), "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    assert cmd_service(args, load_settings(environ=env), platform=platform, environ=env) == 0
    assert "shell's environment" not in capsys.readouterr().out  # no bucket: no keys needed
