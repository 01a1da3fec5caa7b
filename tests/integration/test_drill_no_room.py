"""A drill whose state_dir takes no more (its disk full) could not run: that says nothing of
the upload. Before: it was recorded as a failed drill ('big.bin: drill stopped, cannot
write: No space left on device', ``last_drill.ok`` false, status UNSAFE "last drill failed",
the metric 0) until the next drill a whole interval later, where the README promises
``drill_not_run`` and a try again 10 minutes later; a target that failed mid-drill alike.
A file-size limit stands in for the full disk."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import akoshad, daemon_config


def _file_size_limit() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 << 20, 2 << 20))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE and EFBIG")
def test_a_drill_without_room_in_state_dir_could_not_run(tmp_path: Path) -> None:
    config, env = daemon_config(tmp_path, "drillroom", store=False)
    store = tmp_path / "store"
    store.mkdir()
    (store / "notes.json").write_text('{"a": 1}')
    (store / "big.bin").write_bytes(os.urandom(4 << 20))
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    proc = subprocess.run(
        [sys.executable, "-m", "akoshad", "drill", "--json", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        preexec_fn=_file_size_limit,
    )
    assert proc.returncode == 1, proc.stderr
    result = json.loads(proc.stdout)
    assert result["ran"] is False, result
    line = "the drill could not run: File too large (the drill's copy of big.bin in state_dir)"
    assert result["problems"] == [line]
    assert proc.stderr == f"akoshad: {line}\n"
    assert sorted((tmp_path / "state").glob("drill-*")) == []
    # with room again it runs and passes
    again = akoshad("drill", "--config", str(config), env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "all well" in again.stdout
