"""``akoshad drill``: in the running daemon when there is one (its drill sends again what
it finds lost, and emits the ``drill`` event), else in this process (``restore.drill``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from akoshad.config import Settings
from akoshad.errors import AkoshadError, DaemonNotRunning
from akoshad.runtime.control_client import OlderDaemon, request


async def cmd_drill(args: argparse.Namespace, settings: Settings) -> int:
    """``akoshad drill [--json]``: 0 all well, 1 problems (each printed with its path).
    With a daemon running and no ``--identity`` given, the drill runs in the daemon; else
    here, reading the target directly. A drill that cannot run (no upload, no identity, a
    target that cannot be read) is its one line on stderr, and with ``--json`` also a
    result on stdout: ``{"at", "ok": false, "ran": false, "problems": [that line]}``."""
    from akoshad.restore.drill import drill_here, print_result
    from akoshad.restore.interrupt import cancelled_by_signals, tell

    with cancelled_by_signals() as caught:  # SIGTERM, SIGHUP: its directory removed too
        try:
            answer = None if getattr(args, "identity", None) else await drill_in_daemon(settings)
            if answer is None:
                answer = await drill_here(settings)
        except AkoshadError as exc:
            if args.json:
                print(json.dumps(not_run(exc), indent=2))
            raise
        except asyncio.CancelledError:
            tell("drill interrupted: not recorded (nothing of it left in state_dir)")
            if not caught:
                raise  # Ctrl-C: asyncio.run makes it a KeyboardInterrupt, exit 130
            return 128 + caught[0]
    return print_result(answer, args.json)


def not_run(exc: AkoshadError) -> dict[str, Any]:
    """The ``--json`` result of a drill that could not run: the ``last_drill`` fields
    (``at``: when it was tried) with ``ran`` false."""
    # by name: the class lives beside pyrage, which a drill without encryption never loads.
    # Only a missing identity: one that cannot be read or does not open the upload is a
    # fault to fix, as in the daemon's drills
    needs_identity = any(c.__name__ == "IdentityNeeded" for c in type(exc).__mro__)
    return {
        "at": time.time(),
        "ok": False,
        "ran": False,
        "upload_id": None,
        "files": 0,
        "problems": [str(exc)],
        "needs_identity": needs_identity,
    }


async def drill_in_daemon(settings: Settings) -> dict[str, Any] | None:
    """The running daemon's drill (its ``last_drill`` object), or None when no daemon runs
    or it is of a version without drills by request (then the drill runs here)."""
    try:
        from akoshad.store.places import place_fields

        payload = {"cmd": "drill", **place_fields(settings)}
        return await request(settings.socket_path, payload, None)
    except DaemonNotRunning:
        return None
    except OlderDaemon:  # a daemon of a version without drills by request
        return None
