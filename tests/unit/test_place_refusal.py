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


async def test_pause_and_resume_of_another_configuration_are_refused(tmp_path: Path) -> None:
    """``akoshad pause --config OTHER`` paused whatever daemon answered on the shared
    socket ("uploads paused", exit 0); pause and resume now name their place, and the
    daemon of another one refuses them in one line, its pause left as it was."""
    import argparse
    import asyncio
    from types import SimpleNamespace
    from typing import Any, cast

    from akoshad.cli.client import cmd_pause, cmd_resume
    from akoshad.runtime.control import ControlServer
    from akoshad.runtime.requests import handle_request
    from tests.tmpdirs import short_dir

    sock = short_dir() / "p.sock"
    ours = _settings(tmp_path, "outbox").model_copy(update={"socket_path": sock})
    other = _settings(tmp_path, "outbox", "other").model_copy(update={"socket_path": sock})
    view = SimpleNamespace(paused=False, restart_pending=[])
    daemon: Any = SimpleNamespace(
        settings=ours,
        stop_event=asyncio.Event(),
        wake=asyncio.Event(),
        view=view,
        parts=SimpleNamespace(stats=SimpleNamespace(syncing=False)),
    )

    async def handler(request: dict[str, Any]) -> dict[str, Any]:
        return await handle_request(cast(Any, daemon), request)

    args = argparse.Namespace()
    async with ControlServer(sock, handler):
        with pytest.raises(ControlRequestError, match=r"system_id 'other'.*nothing was paused"):
            await asyncio.to_thread(cmd_pause, args, other)
        assert view.paused is False
        assert await asyncio.to_thread(cmd_pause, args, ours) == 0  # its own configuration
        assert view.paused is True
        with pytest.raises(ControlRequestError, match="nothing was resumed"):
            await asyncio.to_thread(cmd_resume, args, other)
        assert view.paused is True
        assert await asyncio.to_thread(cmd_resume, args, ours) == 0
        assert view.paused is False


def test_status_with_another_configuration_is_not_that_configurations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``akoshad status --check --config OTHER.yaml`` answered by the daemon of another
    place said 'akoshad OK: idle' (exit 0), and ``status`` 'safe since ...', of a store
    OTHER does not name; both are now one line naming the daemon's system_id, exit 1."""
    import argparse
    from typing import Any

    from akoshad.cli import client as client_cli
    from akoshad.errors import AkoshadError

    ours = _settings(tmp_path, "outbox")
    other = _settings(tmp_path, "outbox", "other")
    st: dict[str, Any] = {"state": "idle", "pending": 0, "system_id": "box"}
    st["place"] = place_fields(ours)["place"]
    st["data_dir"] = str(ours.data_dir)
    monkeypatch.setattr(client_cli, "request_sync", lambda *_: dict(st))
    monkeypatch.delenv("AKOSHAD_CONFIG", raising=False)

    def status(settings: Settings, config: str | None, check: bool) -> int:
        args = argparse.Namespace(config=config, json=False, watch=False, check=check)
        return client_cli.cmd_status(args, settings)

    for check in (False, True):
        with pytest.raises(AkoshadError, match=r"backs up system_id 'box' .* 'other'\)"):
            status(other, "other.yaml", check)
        assert status(ours, "ours.yaml", check) == 0  # its own configuration
        assert status(other, None, check) == 0  # no file named: as before
    st["restart_pending"] = ["local_target_dir"]  # the file's target: after a restart
    assert status(other, "other.yaml", False) == 0  # shown (its warnings say so)


def test_queue_with_another_configuration_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``akoshad queue --config OTHER.yaml`` listed another place's daemon's queue as
    OTHER's ('queue empty', exit 0); one line naming that daemon now, exit 1."""
    import argparse
    from typing import Any

    from akoshad.cli import client as client_cli
    from akoshad.errors import AkoshadError

    ours = _settings(tmp_path, "outbox")
    other = _settings(tmp_path, "outbox", "other")
    listing: dict[str, Any] = {"queue": [], "debouncing": [], "system_id": "box"}
    listing["place"] = place_fields(ours)["place"]
    monkeypatch.setattr(client_cli, "request_sync", lambda *_: dict(listing))
    monkeypatch.delenv("AKOSHAD_CONFIG", raising=False)
    args = argparse.Namespace(config="other.yaml", json=False)
    with pytest.raises(AkoshadError, match=r"backs up system_id 'box'"):
        client_cli.cmd_queue(args, other)
    assert client_cli.cmd_queue(args, ours) == 0
