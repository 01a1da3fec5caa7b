"""The systemd unit, the launchd plist and `akoshad service install|uninstall`."""

from __future__ import annotations

import argparse
import os
import plistlib
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from akoshad.cli import service
from akoshad.cli.service import (
    DEFAULT_EXEC,
    cmd_service,
    render_plist,
    render_unit,
    this_executable,
    unit_paths,
)
from akoshad.config import load_settings

REPO = Path(__file__).resolve().parents[2]


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


def test_exec_start_quoting() -> None:
    unit = render_unit(["/opt/my dir/python", "-m", "akoshad"], "/cfg/100%$x.yaml")
    assert 'ExecStart="/opt/my dir/python" -m akoshad run --config /cfg/100%%$$x.yaml' in (
        unit.splitlines()
    )


def _verify(unit_text: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd"
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
        [str(python), "-m", "akoshad"], str(home / "c.yaml"), writable=writable, create=create
    )
    _verify(text, tmp_path)


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
    assert committed["StandardOutPath"] == "~/Library/Logs/akoshad/akoshad.log"


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
