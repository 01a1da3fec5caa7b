"""``akoshad status|sync|pause|resume|queue``: ask the running daemon over its socket.

Exit 3 (``DaemonNotRunning``, printed by the CLI as one line) when no daemon answers.
A reply without the fields a status or a sync result has is a failure (exit 1).
The result fields read here (all optional; a missing one shows as ``-`` or 0):

- ``status``: CONTRACT.md's ``state, pid, version, uptime_seconds, data_dir, pending,
  in_flight, last_upload{upload_id, method, finished_at (epoch s), files, bytes_sent},
  counters{files_uploaded, bytes_uploaded, bytes_sent, deduplicated, failures, retries},
  targets{name: {available, last_error, last_success_at (epoch s)}}``, plus the extras
  ``paused``, ``degraded_reason`` (str), ``targets.<name>.primary`` (bool) and ``.circuit``
  (``closed|open|half_open``), ``memories{delivered, skipped, held, held_first,
  last_skipped{id: reason}, circuit{state, ...}, last_error}`` and
  ``skipped{path: reason}``, ``warnings[str]``, ``reload_refused`` and ``config_changed``
  (null or str), ``waiting_for_data_dir`` (bool),
  ``oldest_pending_age_seconds`` (null or s), ``behind_after_seconds`` (s) and
  ``next_upload_not_before`` (null or epoch s: uploads held back by
  ``min_upload_interval_seconds``).
- ``sync`` (request ``{"cmd": "sync", "method": null|"auto"|"cloud"|"http", "wait": bool}``):
  ``ok_drain`` (bool: false = that drain had failures -> exit 1), and with ``wait``
  ``passes[{upload_id, target, error, memory_error, files_uploaded[path], bytes_sent,
  skipped{path: reason}, retrying{path: reason}}]``, ``pending`` (int: queued or still
  debouncing) and ``error`` (str, when changes seen could not be put on the queue).
- ``queue``: ``queue[{path, age_seconds, attempts, state, last_error}]`` and
  ``debouncing[path]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from typing import Any

from akoshad.cli.status_view import (
    ago,
    circuit_state,
    drill_line,
    human_age,
    human_bytes,
    lease_line,
    prune_line,
    target_lines,
    webhook_lines,
)
from akoshad.config import Settings
from akoshad.errors import AkoshadError, DaemonNotRunning, DaemonWentAway
from akoshad.fastpath import state_held
from akoshad.names import printable
from akoshad.runtime.control_client import request_sync
from akoshad.runtime.health import behind_after_seconds, check_problems
from akoshad.runtime.safety import safety_line


def _state(st: dict[str, Any]) -> str:
    """The state word shown: STOPPING while the daemon stops (its ``state`` is then
    ``paused``, the nearest of CONTRACT.md's states)."""
    return "STOPPING" if st.get("stopping") is True else str(st.get("state", "?")).upper()


def render_status(st: dict[str, Any], now: float | None = None) -> str:
    """The human view of a status result."""
    now = time.time() if now is None else now
    safe = safety_line(st.get("safety"))
    lines = [] if safe is None else [safe]
    lines += [
        f"akoshad {st.get('version', '?')}  pid {st.get('pid', '?')}  "
        f"state {_state(st)}  up {human_age(st.get('uptime_seconds'))}",
        f"store      {st.get('data_dir', '?')}",
        f"pending    {st.get('pending', 0)}   in flight {st.get('in_flight', 0)}",
    ]
    held = st.get("next_upload_not_before")
    if isinstance(held, int | float) and not isinstance(held, bool) and held > now:
        lines.append(f"next upload in {human_age(held - now)} (min_upload_interval_seconds)")
    lines.extend(f"WARNING    {w}" for w in st.get("warnings") or [])
    if st.get("degraded_reason"):
        lines.append(f"degraded   {st['degraded_reason']}")
    last = st.get("last_upload")
    if last:
        lines.append(
            f"last upload {last.get('upload_id')} via {last.get('method')}, "
            f"{ago(last.get('finished_at'), now)} ago, "
            f"{last.get('files', 0)} file(s), {human_bytes(last.get('bytes_sent'))} sent"
        )
    else:
        lines.append("last upload none yet")
    lines.extend(target_lines(st.get("targets") or {}, now))
    lines.extend(webhook_lines(st.get("webhooks")))
    for line in (
        lease_line(st.get("lease")),
        drill_line(st.get("last_drill"), now),
        prune_line(st.get("last_prune"), now),
    ):
        if line is not None:
            lines.append(line)
    counters = st.get("counters") or {}
    if counters:
        lines.append(
            "counters   "
            f"{counters.get('files_uploaded', 0)} files uploaded, "
            f"{human_bytes(counters.get('bytes_uploaded'))} file bytes captured, "
            f"{human_bytes(counters.get('bytes_sent'))} bytes sent, "
            f"{counters.get('deduplicated', 0)} deduplicated, "
            f"{counters.get('failures', 0)} failures, {counters.get('retries', 0)} retries"
            + (f", {counters['redactions']} secrets redacted" if counters.get("redactions") else "")
        )
    memories = st.get("memories")
    if memories:
        line = (
            f"memories   {memories.get('delivered', 0)} delivered to Akosha, "
            f"{memories.get('skipped', 0)} skipped"
        )
        circuit = circuit_state(memories.get("circuit"))
        if circuit and circuit != "closed":
            line += f", circuit {circuit}"
        if memories.get("held"):
            line += f", {memories['held']} held back (sent again later)"
        if memories.get("last_error"):
            line += f" (last error: {memories['last_error']})"
        lines.append(line)
        last_skipped = memories.get("last_skipped") or {}
        if isinstance(last_skipped, dict):
            lines.extend(f"  skipped {m}: {why}" for m, why in last_skipped.items())
    skipped = st.get("skipped") or {}
    if skipped:
        lines.append(f"skipped    {len(skipped)} file(s)")
        for path, reason in sorted(skipped.items())[:10]:
            lines.append(f"  {path}: {reason}")
        if len(skipped) > 10:
            lines.append(f"  ... and {len(skipped) - 10} more (status --json lists them all)")
    return "\n".join(printable(line) for line in lines)


def _ask(
    settings: Settings, payload: dict[str, Any], timeout: float | None = 5.0
) -> dict[str, Any]:
    try:
        return request_sync(settings.socket_path, payload, timeout)
    except DaemonWentAway:
        raise
    except DaemonNotRunning:
        if not state_held(settings.state_dir):
            raise
        # the socket is served once a start is done: until then an akoshad is there
        raise DaemonNotRunning(
            f"akoshad does not answer on {settings.socket_path} yet, but an akoshad holds "
            f"its state {settings.state_dir}: a daemon still starting (its socket answers "
            "once its targets answered or were given up on), or a `run --once`, `prune` or "
            "`takeover` at work; ask again shortly"
        ) from None


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def check_line(st: dict[str, Any], settings: Settings) -> tuple[int, str]:
    """``status --check``: (exit code, one line). A daemon that does not say how old its
    changes may grow is judged by this configuration's ``max_delay_seconds``."""
    if "behind_after_seconds" not in st:
        limit = behind_after_seconds(
            settings.max_delay_seconds, settings.min_upload_interval_seconds
        )
        st = {**st, "behind_after_seconds": limit}
    if not isinstance(st.get("state"), str):  # not a status: nothing says it is healthy
        return 1, "akoshad UNHEALTHY: the reply on the socket is not a status (no state)"
    problems = check_problems(st)
    pending = f"{st.get('pending', 0)} pending"
    if problems:
        return 1, printable(f"akoshad UNHEALTHY: {'; '.join(problems)} ({pending})")
    return 0, f"akoshad OK: {st.get('state', '?')}, {pending}"


def refuse_other_daemon(args: argparse.Namespace, st: dict[str, Any], settings: Settings) -> None:
    """``AkoshadError`` (exit 1) when the daemon that answered (its status ``st``) uploads
    to another place than the configuration named (``--config`` or ``$AKOSHAD_CONFIG``;
    a second configuration without a ``socket_path`` of its own reaches the daemon at the
    default one): its status, and a --check's OK, are not that configuration's. No file
    named (a bare ``akoshad status``), a daemon that does not say its place, a
    configuration that did not load, or a place changed in its file and waiting for a
    restart (``restart_pending`` says so): it goes on."""
    from akoshad.store.places import place_fields

    if not (getattr(args, "config", None) or os.environ.get("AKOSHAD_CONFIG")):
        return
    ours = place_fields(settings).get("place")
    place = st.get("place")
    if ours is None or not isinstance(place, str) or place == ours:
        return
    if {"local_target_dir", "cloud_sync"} & set(st.get("restart_pending") or ()):
        return  # this file's target is the daemon's next one: its status shows the wait
    theirs = printable(f"{st.get('system_id')!s:.100}")
    raise AkoshadError(
        f"the daemon answering on {settings.socket_path} backs up system_id '{theirs}' "
        f"({printable(str(st.get('data_dir', '?')))}), not the place this configuration "
        f"names (system_id '{settings.cloud_sync.system_id}'): what it answers is not this "
        "configuration's; give this command the daemon's --config, or set socket_path so "
        "that each configuration has a daemon of its own"
    )


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """``akoshad status [--json] [--check] [--watch [--interval S]]``."""
    if getattr(args, "check", False):
        st = _ask(settings, {"cmd": "status"})
        refuse_other_daemon(args, st, settings)
        code, line = check_line(st, settings)
        if args.json:
            _print_json(st)
        else:
            print(line)
        return code
    if not args.watch:
        st = _ask(settings, {"cmd": "status"})
        refuse_other_daemon(args, st, settings)
        if args.json:
            _print_json(st)
        else:
            print(render_status(st))
        return 0
    interval = 1.0 if args.interval is None else float(args.interval)
    config = getattr(args, "config", None)
    return _watch(settings, max(0.2, interval), as_json=bool(args.json), config=config)


def _watch(settings: Settings, interval: float, *, as_json: bool, config: str | None = None) -> int:
    """Redraw the status every ``interval`` seconds until Ctrl-C; a daemon that goes away
    (or comes back) is shown, not fatal. On a terminal the screen is redrawn in place."""
    # Ctrl-C stops it even when started by a process that ignores or blocks SIGINT (both are
    # inherited: a parent's ignored SIGINT would leave the loop running until killed)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tty = sys.stdout.isatty()
    if tty:
        sys.stdout.write("\x1b[?25l\x1b[2J")  # hide the cursor, clear once
    try:
        while True:
            try:
                st = _ask(settings, {"cmd": "status"}, timeout=max(2.0, interval))
                refuse_other_daemon(argparse.Namespace(config=config), st, settings)
                text = json.dumps(st, indent=2, sort_keys=True) if as_json else render_status(st)
            except DaemonNotRunning:
                st = {"error": f"akoshad is not running (no answer on {settings.socket_path})"}
                text = st["error"]
            except AkoshadError as exc:
                st = {"error": f"no status: {exc}"}
                text = st["error"]
            header = f"{time.strftime('%H:%M:%S')}  every {interval:g}s, Ctrl-C to stop"
            if as_json and not tty:  # for a program: one JSON object per line, nothing else
                sys.stdout.write(json.dumps(st, sort_keys=True, default=str) + "\n")
            elif tty:  # home, each line cleared to its end, then the rest of the screen
                body = "\n".join(line + "\x1b[K" for line in [header, *text.splitlines()])
                sys.stdout.write("\x1b[H" + body + "\n\x1b[J")
            else:
                sys.stdout.write(header + "\n" + text + "\n\n")
            sys.stdout.flush()
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
    finally:
        if tty:
            sys.stdout.write("\x1b[?25h")
            sys.stdout.flush()


def _count(files: Any) -> int:
    """A pass's ``files_uploaded``: the list of paths sent (a bare number is taken as is)."""
    if isinstance(files, list):
        return len(files)
    return files if isinstance(files, int) and not isinstance(files, bool) else 0


NOT_A_SYNC = "the reply on the socket has no ok_drain (true or false): not a sync result"


def sync_ok(result: dict[str, Any]) -> bool:
    """The drain went well: ``ok_drain`` is true (missing or not a bool: it did not)."""
    return result.get("ok_drain") is True


def _sync_error(result: dict[str, Any]) -> str:
    """Why a sync failed, in one line."""
    if not isinstance(result.get("ok_drain"), bool):
        return NOT_A_SYNC
    return str(result.get("error") or "the daemon says the drain failed")


def render_sync(result: dict[str, Any]) -> str:
    """The human summary of a ``sync --wait`` result."""
    passes = result.get("passes") or []
    uploads = [p["upload_id"] for p in passes if p.get("upload_id") and not p.get("error")]
    files = sum(_count(p.get("files_uploaded")) for p in passes)
    sent = sum(int(p.get("bytes_sent") or 0) for p in passes)
    if not passes and sync_ok(result):  # not "0 upload(s)": nothing was left to send
        lines = [
            "sync done: nothing to upload (every change seen is in an upload already), "
            f"{result.get('pending', 0)} pending"
        ]
    else:
        lines = [
            f"sync {'done' if sync_ok(result) else 'FAILED'}: "
            f"{len(passes)} pass(es), {len(uploads)} upload(s)"
            + (f" ({', '.join(uploads)})" if uploads else "")
            + f", {files} file(s), {human_bytes(sent)} sent, {result.get('pending', 0)} pending"
        ]
    if not isinstance(result.get("ok_drain"), bool):
        lines.append(f"  error: {NOT_A_SYNC}")
    if result.get("error"):
        lines.append(f"  error: {result['error']}")
    for p in passes:
        where = p.get("target") or "?"
        if p.get("error") and p.get("source_changed") and p is not passes[-1]:
            lines.append(f"  sent again ({where}): {p['error']}")
        elif p.get("error"):
            lines.append(f"  error ({where}): {p['error']}")
        if p.get("memory_error"):
            lines.append(f"  memories: {p['memory_error']}")
        skipped = (p.get("memories") or {}).get("skipped")
        if skipped:
            lines.append(f"  memories: {skipped} skipped for good (akoshad status names them)")
        for kind in ("skipped", "retrying"):
            for path, reason in sorted((p.get(kind) or {}).items())[:10]:
                lines.append(f"  {kind} {path}: {reason}")
    delivered = sum(_count((p.get("memories") or {}).get("delivered")) for p in passes)
    if delivered:
        lines.insert(1, f"  memories: {delivered} delivered to Akosha")
    return "\n".join(printable(line) for line in lines)


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    """``akoshad sync [--wait] [--method M] [--json]``; exit 1 if the drain had failures
    (or the reply does not say it had none)."""
    from akoshad.store.places import place_fields

    payload = {
        "cmd": "sync",
        "method": args.method,
        "wait": bool(args.wait),
        **place_fields(settings),
    }
    # --wait: the daemon answers when the drain is over, however long a large first upload
    # takes (or --timeout runs out: exit 1); a daemon that stops closes the connection
    # (exit 3), Ctrl-C gives up waiting.
    timeout = getattr(args, "timeout", None)
    result = _ask(settings, payload, timeout if args.wait else 10.0)
    if args.json:
        _print_json(result)
    elif not args.wait:
        print("sync started" if sync_ok(result) else f"sync FAILED: {_sync_error(result)}")
    else:
        print(render_sync(result))
    return 0 if sync_ok(result) else 1


def _placed(cmd: str, settings: Settings) -> dict[str, Any]:
    """A request naming this configuration's place: a daemon of another configuration
    answering on the socket refuses it (``place_fields``)."""
    from akoshad.store.places import place_fields

    return {"cmd": cmd, **place_fields(settings)}


def cmd_pause(args: argparse.Namespace, settings: Settings) -> int:
    """``akoshad pause`` (of the daemon backing up this configuration's place only)."""
    result = _ask(settings, _placed("pause", settings))
    print("uploads paused until resume or a restart (watching and queueing go on)")
    if result.get("finishing") is True:  # a pause starts no new pass; it stops none
        print(
            "the pass in hand is not stopped: it finishes its upload first "
            "(`akoshad status` shows it in flight)"
        )
    return 0


def cmd_resume(args: argparse.Namespace, settings: Settings) -> int:
    """``akoshad resume`` (of the daemon backing up this configuration's place only)."""
    _ask(settings, _placed("resume", settings))
    print("uploads resumed")
    return 0


def render_queue(result: dict[str, Any]) -> str:
    """The table of a ``queue`` result: age, attempts, state, path, last error."""
    rows = result.get("queue") or []
    settling = result.get("debouncing") or []
    if not rows and not settling:
        return "queue empty"
    lines = [f"{'age':>8} {'tries':>5} {'state':9} path"]
    for r in rows:
        line = f"{human_age(r.get('age_seconds')):>8} {r.get('attempts', 0):>5} "
        line += f"{r.get('state') or '':9} {r.get('path')}"
        if r.get("last_error"):
            line += f"  ({r['last_error']})"
        lines.append(line)
    lines.extend(f"{'':>8} {'':>5} {'settling':9} {path}" for path in settling)
    return "\n".join(printable(line) for line in lines)


def cmd_queue(args: argparse.Namespace, settings: Settings) -> int:
    """``akoshad queue [--json]``."""
    result = _ask(settings, {"cmd": "queue"})
    refuse_other_daemon(args, result, settings)
    if args.json:
        _print_json(result)
    else:
        print(render_queue(result))
    return 0
