"""A configuration file another user can change: they could point data_dir at another
store, akosha_url or a webhook at their server, or a target at their bucket. It was read
without a word; now every command that acts on it refuses it (exit 78, one line), as ssh
refuses a shared configuration, and the client commands warn."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from akoshad.config import load_config
from akoshad.errors import ConfigError
from tests.helpers import akoshad, base_env, write_config


def config(tmp_path: Path) -> Path:
    (tmp_path / "store").mkdir()
    (tmp_path / "store" / "a.txt").write_text("a")
    return write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(tmp_path / "outbox"),
        socket_path=str(tmp_path / "s.sock"),
    )


def test_a_configuration_file_others_can_write_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg.chmod(0o666)
    with pytest.raises(ConfigError) as info:
        load_config(cfg, environ={"HOME": str(tmp_path)})
    assert info.value.exit_code == 78
    assert str(info.value) == (
        f"configuration file {cfg} can be written by other users (mode 0666): they could "
        f"change what akoshad backs up and where it sends it; run `chmod go-w {cfg}`"
    )
    cfg.chmod(0o644)
    assert load_config(cfg, environ={"HOME": str(tmp_path)}).settings.data_dir


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user or group needs root")
def test_a_configuration_file_of_another_user_or_group_is_refused(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    os.chown(cfg, 65534, -1)
    with pytest.raises(ConfigError, match=r"is owned by .*\(uid 65534\), not you"):
        load_config(cfg, environ={"HOME": str(tmp_path)})
    os.chown(cfg, 0, 65534)  # a group of others
    cfg.chmod(0o664)
    with pytest.raises(ConfigError, match=r"can be written by other users \(mode 0664\)"):
        load_config(cfg, environ={"HOME": str(tmp_path)})
    os.chown(cfg, 0, 0)  # root's own group: only root is in it here
    assert load_config(cfg, environ={"HOME": str(tmp_path)}).settings.data_dir


def test_run_once_refuses_it_even_when_nothing_changed(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    env = base_env(tmp_path)
    assert akoshad("run", "--once", "--config", str(cfg), env=env).returncode == 0
    cfg.chmod(0o666)  # the quick no-change check answered "nothing changed", exit 0
    for command in (["run", "--once"], ["config", "check"]):
        proc = akoshad(*command, "--config", str(cfg), env=env)
        assert proc.returncode == 78, proc.stderr
        assert proc.stderr.startswith(f"akoshad: configuration file {cfg} can be written")
        assert len(proc.stderr.splitlines()) == 1
    proc = akoshad("status", "--config", str(cfg), env=env)  # a client: warned, still asks
    assert proc.returncode == 3
    assert f"warning: configuration file {cfg} can be written" in proc.stderr


def test_a_session_buddy_file_others_can_write_is_refused(tmp_path: Path) -> None:
    # its cloud_sync group names the bucket, the endpoint and the keys akoshad uses
    cfg = config(tmp_path)
    sb = tmp_path / "xdg" / "session-buddy" / "config.yaml"
    sb.parent.mkdir(parents=True)
    sb.write_text("cloud_sync:\n  cloud_endpoint: http://127.0.0.1:9\n")
    sb.chmod(0o666)
    environ = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    with pytest.raises(ConfigError, match=r"^session-buddy file .* can be written by other"):
        load_config(cfg, environ=environ)
    sb.chmod(0o644)
    assert load_config(cfg, environ=environ).settings.cloud_sync.cloud_endpoint
    sb.write_text("other: 1\n")  # no cloud_sync: akoshad takes nothing from it
    sb.chmod(0o666)
    assert load_config(cfg, environ=environ).settings.data_dir
