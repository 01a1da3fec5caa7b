"""The console entry point's own behaviour."""

from __future__ import annotations

import gc

import pytest

from akoshad import entry
from akoshad.cli import main as cli_main


def test_ctrl_c_while_a_command_starts_is_exit_130_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A SIGINT before the command's own handling (its modules loading, its arguments
    parsed) ended in a KeyboardInterrupt traceback; it is exit 130, as later."""

    def interrupted(argv: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "parse_args", interrupted)
    try:
        assert entry.main(["status"]) == 130
    finally:
        gc.enable()  # the entry holds the collector until a command settles it
