"""``akoshad drill``: in the running daemon when there is one (its drill sends again what
it finds lost, and emits the ``drill`` event), else in this process (``restore.drill``)."""

from __future__ import annotations

import argparse
from typing import Any

from akoshad.config import Settings
from akoshad.errors import DaemonNotRunning
from akoshad.runtime.control_client import ControlRequestError, request


async def cmd_drill(args: argparse.Namespace, settings: Settings) -> int:
    """``akoshad drill [--json]``: 0 all well, 1 problems (each printed with its path).
    With a daemon running and no ``--identity`` given, the drill runs in the daemon; else
    here, reading the target directly."""
    from akoshad.restore.drill import cmd_drill as drill_here
    from akoshad.restore.drill import print_result

    if not getattr(args, "identity", None):
        answer = await drill_in_daemon(settings)
        if answer is not None:
            return print_result(answer, args.json)
    return await drill_here(args, settings)


async def drill_in_daemon(settings: Settings) -> dict[str, Any] | None:
    """The running daemon's drill (its ``last_drill`` object), or None when no daemon runs
    or it is of a version without drills by request (then the drill runs here)."""
    try:
        return await request(settings.socket_path, {"cmd": "drill"}, None)
    except DaemonNotRunning:
        return None
    except ControlRequestError as exc:
        if str(exc).startswith("unknown command"):
            return None
        raise
