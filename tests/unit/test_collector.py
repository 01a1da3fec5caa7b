"""The garbage collector: off while a command's modules are imported, then on again with
the start-up objects frozen and a higher young threshold, for every command."""

from __future__ import annotations

import gc
from pathlib import Path

from akoshad import collector, entry
from akoshad.names import EXIT_NO_DAEMON
from tests.tmpdirs import short_dir


def test_hold_then_settle() -> None:
    collector.hold()
    assert not gc.isenabled()
    garbage = [object() for _ in range(100)]
    collector.settle()
    assert gc.isenabled()
    assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD
    assert gc.get_freeze_count() >= len(garbage)  # what existed is frozen, never walked


def test_a_client_command_runs_with_the_collector_on(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    sock = short_dir() / "none.sock"
    config.write_text(f"socket_path: {sock}\nstate_dir: {tmp_path / 'state'}\n")
    assert entry.main(["status", "--config", str(config)]) == EXIT_NO_DAEMON
    assert gc.isenabled()
    assert gc.get_threshold()[0] == collector.YOUNG_THRESHOLD
