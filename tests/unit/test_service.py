"""The systemd unit, the launchd plist and `akoshad service install|uninstall`."""

from __future__ import annotations

import argparse
import os
import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest

from akoshad.config import load_settings
from akoshad.service import DEFAULT_EXEC, cmd_service, render_plist, render_unit

REPO = Path(__file__).resolve().parents[2]


def test_committed_files_match_the_templates() -> None:
    assert (REPO / "systemd" / "akoshad.service").read_text() == render_unit(DEFAULT_EXEC)
    assert (REPO / "launchd" / "dev.akoshad.agent.plist").read_text() == render_plist(
        DEFAULT_EXEC, None, "~/Library/Logs/akoshad"
    )


def test_unit_has_what_a_notify_service_needs() -> None:
    unit = render_unit("/opt/ak/bin/akoshad", "/home/u/.config/akoshad/config.yaml")
    for line in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "WatchdogSec=60",
        "TimeoutStopSec=45",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/opt/ak/bin/akoshad run --config /home/u/.config/akoshad/config.yaml",
        "WantedBy=default.target",
    ):
        assert line in unit.splitlines(), line
    assert any(x.startswith("ReadWritePaths=") for x in unit.splitlines())


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd"
    exe = shutil.which("akoshad") or "/bin/true"
    unit = tmp_path / "akoshad.service"
    unit.write_text(render_unit(str(Path(exe).resolve())))
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700)
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
    problems = [line for line in res.stderr.splitlines() if str(unit) in line]
    assert problems == [], problems  # warnings about our unit count as failures


def test_plist_loads_with_the_keys() -> None:
    data = plistlib.loads(
        render_plist(
            "/opt/ak/bin/akoshad", "/Users/u/ak.yaml", "/Users/u/Library/Logs/akoshad"
        ).encode()
    )
    assert data["Label"] == "dev.akoshad.agent"
    assert data["ProgramArguments"] == [
        "/opt/ak/bin/akoshad",
        "run",
        "--config",
        "/Users/u/ak.yaml",
    ]
    assert data["RunAtLoad"] is True and data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["ProcessType"] == "Background"
    assert data["StandardOutPath"].endswith("akoshad.log")
    assert data["StandardErrorPath"].endswith("akoshad.log")
    assert "PYTHONUNBUFFERED" in data["EnvironmentVariables"]
    committed = plistlib.loads((REPO / "launchd" / "dev.akoshad.agent.plist").read_bytes())
    assert committed["ProgramArguments"] == [DEFAULT_EXEC, "run"]


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


@pytest.mark.parametrize("platform", ["linux", "darwin"])
def test_dry_run_prints_and_writes_nothing(
    tmp_path: Path, platform: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    settings = load_settings(environ=env)
    assert (
        cmd_service(_args("install", dry_run=True), settings, platform=platform, environ=env) == 0
    )
    out = capsys.readouterr().out
    assert "/opt/ak/bin/akoshad" in out
    if platform == "linux":
        assert str(tmp_path / "cfg" / "systemd" / "user" / "akoshad.service") in out
        assert "systemctl --user daemon-reload" in out
        assert "systemctl --user enable --now akoshad.service" in out
    else:
        assert "Library/LaunchAgents/dev.akoshad.agent.plist" in out
        assert f"launchctl bootstrap gui/{os.getuid()}" in out
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_install_and_uninstall_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    settings = load_settings(environ=env)
    cfg = tmp_path / "ak.yaml"
    cfg.write_text("debounce_seconds: 3\n")
    assert (
        cmd_service(_args("install", config=str(cfg)), settings, platform="linux", environ=env) == 0
    )
    unit = tmp_path / "cfg" / "systemd" / "user" / "akoshad.service"
    assert f"run --config {cfg}" in unit.read_text()
    assert "systemctl --user enable --now" in capsys.readouterr().out
    assert cmd_service(_args("uninstall"), settings, platform="linux", environ=env) == 0
    assert not unit.exists()
    assert "systemctl --user disable --now" in capsys.readouterr().out
