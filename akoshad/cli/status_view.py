"""Pieces of the human ``akoshad status`` view: sizes and ages as people read them, and
the lines of its targets, owner, last drill and last prune blocks."""

from __future__ import annotations

from typing import Any


def human_bytes(n: float | None) -> str:
    """1536 -> "1.5 KiB"; None -> "-"."""
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_age(seconds: float | None) -> str:
    """90 -> "1m30s"; None -> "-"."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def ago(ts: Any, now: float) -> str:
    """How long ago epoch ``ts`` was ("-" for anything that is not a number)."""
    if isinstance(ts, int | float) and not isinstance(ts, bool):
        return human_age(now - ts)
    return "-"


def circuit_state(circuit: Any) -> str | None:
    """A breaker's state: ``memories.circuit`` is its snapshot ``{state, ...}``, a target's
    ``circuit`` the bare state."""
    if isinstance(circuit, dict):
        circuit = circuit.get("state")
    return circuit if isinstance(circuit, str) else None


def lease_line(lease: Any) -> str | None:
    """Who owns the system id in the primary target (``status.lease``), or None when no
    machine does yet."""
    if not isinstance(lease, dict):
        return None
    if lease.get("unreadable"):
        return (
            f"owner      UNREADABLE (nothing is uploaded or pruned until it is read; read "
            f"again before each upload): {lease['unreadable']}"
        )
    who = "this machine" if lease.get("ours") else "ANOTHER machine (nothing is uploaded)"
    return f"owner      {who}: host {lease.get('host', '?')}, since {lease.get('since', '?')}"


def target_lines(targets: dict[str, Any], now: float) -> list[str]:
    """The ``targets`` block of the human status: health, role, circuit, last error."""
    if not targets:
        return []
    lines = ["targets"]
    for name, t in sorted(targets.items()):
        mark = "ok  " if t.get("available") else "DOWN"
        extra = []
        if t.get("primary"):
            extra.append("primary")
        if t.get("circuit") and t.get("circuit") != "closed":
            extra.append(f"circuit {t['circuit']}")
        if t.get("last_success_at"):
            extra.append(f"last ok {ago(t['last_success_at'], now)} ago")
        lines.append(f"  {name:6} {mark} {', '.join(extra)}".rstrip())
        if t.get("last_error"):  # a line of its own (each line's control characters escaped)
            lines.append(f"         error: {t['last_error']}")
    return lines


def drill_line(drill: Any, now: float) -> str | None:
    """The last restore drill (``status.last_drill``): its upload, how it went and when,
    the first problem when it failed (skipped, not failed, when it only lacked the
    identity: nothing was checked, nothing found wrong); None before the first one."""
    if not isinstance(drill, dict) or drill.get("at") is None:
        return None
    upload = drill.get("upload_id") or "-"
    when = f"{ago(drill.get('at'), now)} ago"
    if drill.get("ok"):
        return f"last drill {upload} ok, {when}, {drill.get('files', 0)} file(s) checked"
    problems = drill.get("problems") or ["no reason recorded"]
    if drill.get("needs_identity"):
        return f"last drill {upload} skipped, {when}: {problems[0]}"
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"last drill {upload} FAILED, {when}: {problems[0]}{more}"


def prune_line(prune: Any, now: float) -> str | None:
    """The last prune (``status.last_prune``): what it removed and freed, or why it
    failed; None before the first one."""
    if not isinstance(prune, dict) or prune.get("at") is None:
        return None
    when = f"{ago(prune.get('at'), now)} ago"
    if prune.get("ok") is False:
        problems = prune.get("problems") or ["no reason recorded"]
        done = ""
        if prune.get("stopped_part_way"):  # what it had deleted when it stopped
            done = (
                f" (stopped part way: {prune.get('uploads_removed', 0)} upload(s) removed, "
                f"{prune.get('objects_deleted', 0)} object(s), "
                f"{human_bytes(prune.get('bytes_freed'))} freed)"
            )
        return f"last prune FAILED, {when}{done}: {problems[0]}"
    return (
        f"last prune ok, {when}: {prune.get('uploads_removed', 0)} upload(s) removed, "
        f"{prune.get('uploads_kept', 0)} kept, {human_bytes(prune.get('bytes_freed'))} freed"
    )


def webhook_lines(webhooks: Any) -> list[str]:
    """The ``webhooks`` block of the human status: per webhook (its URL as redacted) what
    was delivered, what waits, and what was given up (undelivered for an hour: lost)."""
    if not isinstance(webhooks, list) or not webhooks:
        return []
    lines = ["webhooks"]
    for hook in webhooks:
        if not isinstance(hook, dict):
            continue
        line = (
            f"  {hook.get('url', '?')}: {hook.get('delivered', 0)} delivered since the start, "
            f"{hook.get('pending', 0)} waiting"
        )
        if hook.get("dropped"):
            line += f", {hook['dropped']} dropped so far (each undelivered for an hour: lost)"
        lines.append(line)
    return lines
