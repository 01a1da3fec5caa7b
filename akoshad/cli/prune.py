"""``akoshad prune [--dry-run] [--json]`` and ``akoshad takeover``.

Both ask the daemon when one answers on the socket (it does the work under its pass lock,
so no upload is in progress meanwhile); otherwise they lock the state directory, as
``run --once`` does, and do it here. A daemon that holds the lock but does not answer yet
(starting) is waited for, up to a minute. ``prune`` exits 1 when the prune failed or found a
kept upload damaged, or when another machine owns the system id; ``takeover`` exits 1
when the target cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from akoshad.errors import AkoshadError, AlreadyRunning, DaemonNotRunning, DaemonWentAway
from akoshad.names import EXIT_FAIL, EXIT_OK

TAKEOVER_WAIT = 120.0  # seconds ``takeover`` waits for the daemon's reply

if TYPE_CHECKING:  # parsing (--help, usage errors) needs none of these
    from akoshad.config import Settings

PRUNE_HELP = "apply the retention policy now: remove the uploads it drops, then their objects"
TAKEOVER_HELP = "make this machine the owner of its system_id in the target"
# a daemon that holds the state's lock but does not answer on its socket yet is starting
STARTING_WAIT = 60.0
STARTING_POLL = 0.5


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``prune`` and ``takeover`` commands."""
    prune = sub.add_parser("prune", parents=[common], help=PRUNE_HELP, description=PRUNE_HELP)
    prune.add_argument("--dry-run", action="store_true", help="say what would go, delete nothing")
    prune.add_argument("--json", action="store_true", help="print the result object as JSON")
    takeover = sub.add_parser(
        "takeover", parents=[common], help=TAKEOVER_HELP, description=TAKEOVER_HELP
    )
    takeover.add_argument("--json", action="store_true", help="print the result object as JSON")


def render_prune(result: dict[str, Any]) -> str:
    """The human summary of a prune result."""
    from akoshad.cli.status_view import human_bytes
    from akoshad.runtime.prune_report import (
        interrupted_line,
        kept_count,
        stopped_line,
        versioning_note,
    )

    if not result.get("enabled", True):
        return (
            "retention is disabled (retention.enabled: false): kept every upload, deleted nothing"
        )
    dry = bool(result.get("dry_run"))
    removed = result.get("uploads_removed") or []
    lines = [f"policy: {result.get('policy', '?')}"]
    before = interrupted_line(result)
    lines += [f"note: {before}"] if before is not None else []
    if dry:
        lines += [f"would remove upload {u}" for u in removed]
    lines.append(
        stopped_line(result)
        or f"{'dry run: would remove' if dry else 'removed'} {len(removed)} upload(s), "
        f"kept {kept_count(result)}; "
        f"{'would delete' if dry else 'deleted'} {result.get('objects_deleted', 0)} object(s), "
        f"{human_bytes(result.get('bytes_freed', 0))} "
        f"{'would be freed' if dry else 'freed'}"
    )
    crashed = result.get("crashed_uploads") or []
    if crashed:
        lines.append(f"objects of {len(crashed)} interrupted upload(s) swept")
    note = versioning_note(result)
    if note is not None:
        lines.append(f"note: {note}")
    if result.get("note"):
        lines.append(f"note: {result['note']}")
    lines += [f"problem: {p}" for p in result.get("problems") or []]
    resent = result.get("sent_again")
    if resent:
        lines.append(
            f"{resent} file(s) that used the missing objects are sent again with the next "
            "upload (uploads before it keep the damage: akoshad verify --all names them)"
        )
    return "\n".join(lines)


def _print(result: dict[str, Any], as_json: bool, text: str) -> None:
    print(json.dumps(result, indent=2, sort_keys=True) if as_json else text)


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    """``akoshad prune [--dry-run] [--json]``."""
    from akoshad.runtime.control_client import ControlRequestError
    from akoshad.storage.owner import NotOwner
    from akoshad.store.places import place_fields

    # where and by which rules this configuration prunes: a daemon answering on the socket
    # that prunes another place (a second configuration without its own socket_path), or
    # runs with other rules (the file edited, not reloaded), refuses
    payload = {
        "cmd": "prune",
        "dry_run": bool(args.dry_run),
        "retention": settings.retention.rules(),
        **place_fields(settings),
    }
    try:
        result = _prune(settings, payload)
    except (NotOwner, ControlRequestError) as exc:
        if not args.json:
            raise
        # a script reading the JSON learns why nothing was done (another machine owns
        # the system_id), not only from the exit code
        result = {"ok": False, "dry_run": bool(args.dry_run), "problems": [str(exc)]}
    except AkoshadError as exc:  # it could not run (the target, the state's lock, ...):
        if args.json:  # the line on stderr and its exit code, and a result a script reads
            result = {"ok": False, "dry_run": bool(args.dry_run), "problems": [str(exc)]}
            _print(result, True, "")
        raise
    _print(result, args.json, render_prune(result))
    return EXIT_OK if result.get("ok") else EXIT_FAIL


def _prune(settings: Settings, payload: dict[str, Any]) -> dict[str, Any]:
    """The prune's result: the running daemon's, else one made here."""
    import asyncio

    try:
        return _daemon_or_here(
            settings,
            payload,
            None,
            lambda: asyncio.run(_prune_offline(settings, bool(payload["dry_run"]))),
        )
    except DaemonWentAway:
        # it may have pruned part of the target: a prune here would report only the rest
        raise AkoshadError(
            "akoshad closed the connection before it answered the prune, which may be "
            "partly done (every kept upload stays restorable); run `akoshad prune` again "
            "to finish it and see what it removes"
        ) from None


def _daemon_or_here(
    settings: Settings,
    payload: dict[str, Any],
    timeout: float | None,
    here: Callable[[], dict[str, Any]],
    *,
    redo: bool = False,
) -> dict[str, Any]:
    """The daemon's answer to ``payload``, else ``here()`` (under the state's lock; with
    ``redo`` also when the daemon went away before it answered). A daemon that holds the
    lock but does not answer yet is starting (recovery, its socket not bound): asked again
    until it answers or lets the lock go, for up to :data:`STARTING_WAIT` seconds."""
    from akoshad.runtime.control_client import request_sync

    deadline = time.monotonic() + STARTING_WAIT
    while True:
        try:
            return request_sync(settings.socket_path, payload, timeout)
        except DaemonNotRunning as exc:
            if isinstance(exc, DaemonWentAway) and not redo:
                raise  # it may have done part of it: not done again here
        try:
            return here()
        except AlreadyRunning:
            if time.monotonic() >= deadline:
                raise AlreadyRunning(
                    f"akoshad holds state {settings.state_dir} but did not answer on "
                    f"{settings.socket_path} within {STARTING_WAIT:g} s; try again once "
                    "`akoshad status` answers"
                ) from None
        time.sleep(STARTING_POLL)


def _quiet_logs(level: str = "ERROR") -> None:
    """Without a daemon the result is printed: only errors (or from ``level`` up) are
    logged (to stderr)."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level=level, format="akoshad: {message}")


async def _prune_offline(settings: Settings, dry_run: bool) -> dict[str, Any]:
    from akoshad.runtime.drill_heal import send_missing_again
    from akoshad.runtime.ownership import offline
    from akoshad.runtime.prune import prune_target
    from akoshad.runtime.prune_report import record
    from akoshad.targets.local import LocalTarget

    _quiet_logs()
    async with offline(settings) as off:  # the state's lock and its checks first (exit 78)
        absent = off.target.absent() if isinstance(off.target, LocalTarget) else None
        if absent is not None:  # a typo is not an empty outbox to claim
            raise AkoshadError(f"{absent}: nothing to prune")
        result = await prune_target(settings, off.state, off.target, off.gate, dry_run=dry_run)
        await send_missing_again(off.state, off.target.name, result, dry_run=dry_run)
        await record(off.state, result)
    return result


def render_takeover(result: dict[str, Any]) -> str:
    """The human line of a takeover result."""
    if result.get("already_owner"):
        return f"this machine ({result.get('host')}) already owns this system_id"
    line = f"this machine ({result.get('host')}) owns this system_id now"
    if result.get("previous_host"):
        line += f", taken over from {result['previous_host']}"
    return line + "; the next upload compares every file with the newest upload in the target"


def cmd_takeover(args: argparse.Namespace, settings: Settings) -> int:
    """``akoshad takeover [--json]``."""
    import asyncio

    from akoshad.runtime.ownership import takeover_offline

    def here() -> dict[str, Any]:
        # warnings too: what the ledger's seed says (an encrypted newest upload and no
        # recipients here: this machine's uploads would not be encrypted)
        _quiet_logs("WARNING")
        if settings.primary_target == "local":  # a typo is not an empty outbox to claim
            absent = LocalTarget(settings.local_target_dir).absent()
            if absent is not None:
                raise AkoshadError(f"{absent}: nothing to take over")
        return asyncio.run(takeover_offline(settings))

    from akoshad.runtime.control_client import NoReply
    from akoshad.store.places import place_fields
    from akoshad.targets.local import LocalTarget

    payload = {"cmd": "takeover", **place_fields(settings)}
    try:
        try:
            result = _daemon_or_here(settings, payload, TAKEOVER_WAIT, here, redo=True)
        except NoReply as exc:  # e.g. a target that does not answer: the daemon keeps trying
            raise AkoshadError(
                f"{exc}; the daemon goes on with the takeover and may still make this "
                "machine the owner (see `akoshad status`, or its log: 'owns system_id ... now')"
            ) from None
    except AkoshadError as exc:  # as prune: the line on stderr, and a result for a script
        if args.json:
            _print({"ok": False, "problems": [str(exc)]}, True, "")
        raise
    _print(result, args.json, render_takeover(result))
    return EXIT_OK
