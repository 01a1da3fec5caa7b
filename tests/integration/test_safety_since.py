"""Without a service manager asking each second (launchd, ``akoshad run`` by hand) and
without scrapes, the "am I safe?" verdict is dated by when it changed, not by when a
``status`` first asked."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from akoshad.runtime.alerts import ALERT_TICK_SECONDS as SAFETY_LOOK_SECONDS
from tests.helpers import akoshad, daemon_config, manifests, start_daemon, stop_daemon, wait_for


def _safety(cfg: Path, env: dict[str, str]) -> dict[str, Any]:
    res = akoshad("status", "--json", "--config", str(cfg), env=env)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout)["safety"])


def test_since_is_when_the_verdict_changed_not_when_status_asked(tmp_path: Path) -> None:
    cfg, env = daemon_config(tmp_path, "since")
    assert "NOTIFY_SOCKET" not in env
    proc = start_daemon(cfg, env, tmp_path / "d.log")
    store, away = tmp_path / "store", tmp_path / "away"
    try:
        wait_for(lambda: manifests(tmp_path / "outbox", "since"), 30)
        wait_for(lambda: _safety(cfg, env)["safe"], 30)
        store.rename(away)  # data_dir gone: unsafe from now, with nobody asking
        gone = time.time()
        time.sleep(SAFETY_LOOK_SECONDS + 3)
        unsafe = _safety(cfg, env)
        assert unsafe["safe"] is False, unsafe
        assert gone <= unsafe["since"] <= gone + SAFETY_LOOK_SECONDS + 1.5, (gone, unsafe)
        away.rename(store)  # back: safe again, once the daemon sees it
        back = time.time()
        time.sleep(SAFETY_LOOK_SECONDS + 4)
        safe = _safety(cfg, env)
        assert safe["safe"] is True, safe
        assert back <= safe["since"] <= back + SAFETY_LOOK_SECONDS + 2.5, (back, safe)
    finally:
        if away.exists() and not store.exists():
            away.rename(store)
        stop_daemon(proc)
