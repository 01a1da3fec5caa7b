"""A request for another place than the daemon's (runtime/requests.refuse_other_place): the
refusal names why, a target changed by a reload that waits for a restart included."""

from __future__ import annotations

from pathlib import Path

import pytest

from akoshad.config import Settings, load_settings
from akoshad.runtime.control_client import ControlRequestError
from akoshad.runtime.requests import refuse_other_place
from akoshad.store.places import place_fields


def _settings(tmp_path: Path, outbox: str, system_id: str = "box") -> Settings:
    env = {
        "HOME": str(tmp_path),
        "AKOSHAD_LOCAL_TARGET_DIR": str(tmp_path / outbox),
        "AKOSHAD_CLOUD_SYNC__SYSTEM_ID": system_id,
    }
    return load_settings(environ=env)


def _refusal(daemon: Settings, request: Settings, pending: list[str]) -> str:
    with pytest.raises(ControlRequestError) as info:
        refuse_other_place(daemon, "local", dict(place_fields(request)), "nothing", pending)
    return str(info.value)


def test_a_target_changed_by_a_reload_says_restart(tmp_path: Path) -> None:
    # SIGHUP with a new local_target_dir: the daemon keeps the old one until a restart, and
    # 'sync --wait' with its own --config was told 'not the place the configuration here
    # names (system_id 'box'): give this command the daemon's --config', which it had
    running = _settings(tmp_path, "outbox")
    edited = _settings(tmp_path, "outbox2")
    line = _refusal(running, edited, ["log_level", "local_target_dir"])
    assert "its configuration's local_target_dir changed since it started" in line
    assert line.endswith("restart akoshad; nothing")
    assert "daemon's --config" not in line
    alone = _refusal(running, edited, [])
    assert "(system_id 'box' in another target)" in alone and "daemon's --config" in alone


def test_another_system_id_is_named_as_before(tmp_path: Path) -> None:
    line = _refusal(_settings(tmp_path, "outbox"), _settings(tmp_path, "outbox", "other"), [])
    assert "not the place the configuration here names (system_id 'other'): give" in line
    refuse_other_place(_settings(tmp_path, "o"), "local", {}, "nothing")  # no place: goes on
