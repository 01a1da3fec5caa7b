"""``min_upload_interval_seconds`` in a running daemon (a subprocess on the local target):
a busy store is paced, the last change still lands, status says when the next upload may
start, and ``sync`` / ``sync --wait`` are not held back."""

from __future__ import annotations

import hashlib
import itertools
import json
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tests.helpers import akoshad, daemon_config, manifests, start_daemon, stop_daemon, wait_for

SYSTEM = "pace"


def _uploaded(outbox: Path, path: str, content: bytes) -> bool:
    """The newest upload holds ``path`` with exactly ``content``."""
    found = manifests(outbox, SYSTEM)
    if not found:
        return False
    digest = hashlib.sha256(content).hexdigest()
    files = found[-1]["metadata"]["files"]
    return any(f["path"] == path and f["sha256"] == digest for f in files)


def _status(config: Path, env: dict[str, str]) -> dict[str, Any]:
    res = akoshad("status", "--json", "--config", str(config), env=env, check=True)
    return dict(json.loads(res.stdout))


def _settled(config: Path, env: dict[str, str]) -> bool:
    st = _status(config, env)
    return st["pending"] == 0 and st["state"] == "idle"


def test_a_busy_writer_makes_at_most_one_upload_per_interval(tmp_path: Path) -> None:
    config, env = daemon_config(tmp_path, SYSTEM, min_upload_interval_seconds=3)
    outbox, busy = tmp_path / "outbox", tmp_path / "store" / "busy.json"
    proc = start_daemon(config, env, tmp_path / "d.log")
    try:
        wait_for(lambda: manifests(outbox, SYSTEM), 30)  # the first upload, at start
        wait_for(lambda: _settled(config, env), 30)
        time.sleep(3.0)  # a quiet spell: the writer's first change is not held back
        before = len(manifests(outbox, SYSTEM))
        began = time.monotonic()
        content = b""
        for i in range(19):  # a change every 0.3 s for ~6 s
            content = json.dumps({"i": i, "pad": "x" * i}).encode()
            busy.write_bytes(content)
            time.sleep(0.3)
        wrote = time.monotonic() - began
        # the last change lands: debounce, then at most one interval of waiting
        wait_for(lambda: _uploaded(outbox, "busy.json", content), 3 + 2 + 10)
        wait_for(lambda: _settled(config, env), 10)
        made = manifests(outbox, SYSTEM)[before:]
        ids = [m["metadata"]["upload_id"] for m in made]
        # one at the writer's start, then one per 3 s (the last write is 5.4 s after the
        # first; it goes up with the third upload, 6 s after the first)
        assert 1 <= len(made) <= 3, ids
        assert wrote >= 5.6
        stamps = [datetime.strptime(i[:22], "%Y%m%dT%H%M%S%fZ").timestamp() for i in ids]
        assert all(b - a >= 2.5 for a, b in itertools.pairwise(stamps)), ids
        st = _status(config, env)
        assert st["next_upload_not_before"] is None  # nothing pending: nothing held back
        assert st["behind_after_seconds"] == 2 + 3 + 60  # max_delay + interval + a minute
    finally:
        assert stop_daemon(proc) == 0


def test_held_back_changes_show_in_status_and_sync_is_not_held_back(tmp_path: Path) -> None:
    config, env = daemon_config(tmp_path, SYSTEM, min_upload_interval_seconds=120)
    outbox, note = tmp_path / "outbox", tmp_path / "store" / "held.json"
    proc = start_daemon(config, env, tmp_path / "d.log")
    try:
        wait_for(lambda: manifests(outbox, SYSTEM), 30)  # at start: no upload yet, not held
        wait_for(lambda: _settled(config, env), 30)
        count = len(manifests(outbox, SYSTEM))

        note.write_bytes(b'{"held": 1}')
        st = wait_for(lambda: (s := _status(config, env))["next_upload_not_before"] and s, 10)
        assert st["pending"] >= 1
        assert 60 < st["next_upload_not_before"] - time.time() <= 120
        assert st["behind_after_seconds"] == 2 + 120 + 60
        time.sleep(1.0)  # debounce (0.2 s) long over: still held back
        assert len(manifests(outbox, SYSTEM)) == count
        text = akoshad("status", "--config", str(config), env=env, check=True).stdout
        assert "(min_upload_interval_seconds)" in text and text.startswith("safe since")

        began = time.monotonic()
        res = akoshad("sync", "--wait", "--json", "--config", str(config), env=env, check=True)
        assert time.monotonic() - began < 30
        assert [p["upload_id"] is not None for p in json.loads(res.stdout)["passes"]] == [True]
        assert _uploaded(outbox, "held.json", b'{"held": 1}')

        note.write_bytes(b'{"held": 2}')  # right after that upload: held back again...
        wait_for(lambda: _status(config, env)["next_upload_not_before"], 10)
        akoshad("sync", "--config", str(config), env=env, check=True)  # ...but `sync` goes now
        wait_for(lambda: _uploaded(outbox, "held.json", b'{"held": 2}'), 20)
        assert len(manifests(outbox, SYSTEM)) == count + 2
    finally:
        assert stop_daemon(proc) == 0


def test_a_reload_applies_a_new_interval_to_held_back_changes(tmp_path: Path) -> None:
    config, env = daemon_config(tmp_path, SYSTEM, min_upload_interval_seconds=120)
    outbox, note = tmp_path / "outbox", tmp_path / "store" / "held.json"
    log = tmp_path / "d.log"
    proc = start_daemon(config, env, log)
    try:
        wait_for(lambda: manifests(outbox, SYSTEM), 30)
        wait_for(lambda: _settled(config, env), 30)
        note.write_bytes(b'{"reload": 1}')
        wait_for(lambda: _status(config, env)["next_upload_not_before"], 10)
        text = config.read_text()
        assert "min_upload_interval_seconds: 120" in text
        config.write_text(text.replace("interval_seconds: 120", "interval_seconds: 0"))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in log.read_text(), 10)
        wait_for(lambda: _uploaded(outbox, "held.json", b'{"reload": 1}'), 10)
        st = _status(config, env)
        assert st["next_upload_not_before"] is None and st["behind_after_seconds"] == 2 + 60
    finally:
        assert stop_daemon(proc) == 0
