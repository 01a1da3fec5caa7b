"""A store path holding a newline or a terminal escape (a real file name, or a manifest
written by someone else) is shown escaped by restore, verify and drill, each problem on
one line. Before: printed as it is, a newline split a problem in two and an escape reached
the terminal (``\\x1b[2J`` cleared the screen), where the daemon's log and status escape
it."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.helpers import akoshad, daemon_config

ODD = "odd\x1b[2J\x1b[31m\nname.json"
SHOWN = "odd\\x1b[2J\\x1b[31m\\nname.json"


def test_odd_names_are_shown_escaped_on_one_line(tmp_path: Path) -> None:
    config, env = daemon_config(tmp_path, "oddnames", store=False)
    store = tmp_path / "store"
    store.mkdir()
    (store / ODD).write_text('{"a": 1}')
    (store / "plain.json").write_text('{"b": 2}')
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    manifest = next((tmp_path / "outbox").rglob("manifest.json"))
    for f in json.loads(manifest.read_text())["metadata"]["files"]:
        if f["path"] == ODD:
            os.remove(tmp_path / "outbox" / f["chunks"][0]["key"])  # its pack lost
    dest = tmp_path / "back"
    runs = {
        "restore": akoshad(
            "restore", "--config", str(config), "--latest", "--dest", str(dest), env=env
        ),
        "verify": akoshad("verify", "--config", str(config), env=env),
        "drill": akoshad("drill", "--config", str(config), env=env),
    }
    for name, proc in runs.items():
        assert proc.returncode == 1, (name, proc.stderr)
        out = proc.stdout + proc.stderr
        assert "\x1b" not in out, (name, out)
        lines = [line for line in out.splitlines() if SHOWN in line]
        assert lines and all("is missing" in line for line in lines), (name, out)
        assert not any(line.startswith("name.json") for line in out.splitlines()), (name, out)
