"""The shipped OnFailure= drop-in and alert template: systemd accepts them as they are."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from akoshad.cli.service_units import DEFAULT_EXEC
from akoshad.names import EXIT_DEGRADED

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "systemd"
DROP_IN = SYSTEMD / "akoshad.service.d" / "onfailure.conf"
ALERT = SYSTEMD / "akoshad-alert@.service"


def _settings(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_drop_in_alerts_and_does_not_restart_on_the_degraded_exit_code() -> None:
    lines = _settings(DROP_IN)
    assert "OnFailure=akoshad-alert@%n.service" in lines
    assert f"RestartPreventExitStatus={EXIT_DEGRADED}" in lines
    alert = _settings(ALERT)
    assert "Type=oneshot" in alert
    assert any(line.startswith("ExecStart=/usr/bin/logger ") for line in alert)


def _analyze(tmp_path: Path, *units: str) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    runtime = tmp_path / "rt"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime))
    cmd = [analyze, "--user", "verify", *units]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, cwd=tmp_path)
    if res.returncode != 0 and "Failed to initialize manager" in res.stderr:
        cmd.remove("--user")
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    return res


def _install(tmp_path: Path, drop_in: str) -> None:
    """The unit, the drop-in and the template, laid out as in ~/.config/systemd/user."""
    exe = Path(shutil.which("akoshad") or "/bin/true").resolve()
    unit = (SYSTEMD / "akoshad.service").read_text()
    (tmp_path / "akoshad.service").write_text(
        unit.replace(f"ExecStart={DEFAULT_EXEC} ", f"ExecStart={exe} ")
    )
    (tmp_path / "akoshad.service.d").mkdir(exist_ok=True)
    (tmp_path / "akoshad.service.d" / "onfailure.conf").write_text(drop_in)
    shutil.copy(ALERT, tmp_path / ALERT.name)


def test_systemd_analyze_verify_accepts_drop_in_and_alert_unit(tmp_path: Path) -> None:
    _install(tmp_path, DROP_IN.read_text())
    res = _analyze(tmp_path, "akoshad.service", "akoshad-alert@akoshad.service.service")
    assert res.returncode == 0, res.stderr
    ours = [
        line
        for line in res.stderr.splitlines()
        if "onfailure.conf" in line or "akoshad-alert@" in line or "akoshad.service:" in line
    ]
    assert ours == [], ours  # warnings about our files count as failures
    # the drop-in really is read by the check: a wrong key in it is reported
    _install(tmp_path, DROP_IN.read_text() + "NoSuchSetting=1\n")
    res = _analyze(tmp_path, "akoshad.service")
    assert "onfailure.conf" in res.stderr and "NoSuchSetting" in res.stderr, res.stderr
