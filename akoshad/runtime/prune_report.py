"""A prune's outcome: the ``prune`` reply when retention is disabled, the ``last_prune``
record kept in the state (``status``, ``/metrics``), and the lines a prune logs and prints.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from loguru import logger

from akoshad.errors import PermanentError, TransientError
from akoshad.ratelog import ReasonLog
from akoshad.runtime.periodic import failure_reason
from akoshad.store.db import StateDB
from akoshad.targets.base import ListsSystems, Target

KV_LAST = "last_prune"


def disabled_result(dry_run: bool) -> dict[str, Any]:
    """What ``prune`` answers with ``retention.enabled: false``: everything kept."""
    return {
        "enabled": False,
        "dry_run": dry_run,
        "ok": True,
        "uploads_removed": [],
        "objects_deleted": 0,
        "bytes_freed": 0,
        "problems": [],
    }


def last_prune(result: dict[str, Any]) -> dict[str, Any]:
    """The ``last_prune`` object of a prune's result."""
    return {
        "at": result["at"],
        "ok": result["ok"],
        "upload_id": result.get("upload_id"),  # the newest upload kept (None: not known)
        "uploads_kept": result.get("uploads_kept"),  # None: failed before it could tell
        "uploads_removed": len(result.get("uploads_removed") or []),
        "objects_deleted": result.get("objects_deleted", 0),
        "bytes_freed": result.get("bytes_freed", 0),
        "problems": result.get("problems", []),
        **({"needs_identity": True} if result.get("needs_identity") else {}),
        **({"stopped_part_way": True} if result.get("stopped_part_way") else {}),
    }


def stopped_line(result: dict[str, Any]) -> str | None:
    """For a prune that failed after it began to delete (``stopped_part_way``): what it
    had really deleted when it stopped; None for any other result."""
    if not result.get("stopped_part_way"):
        return None
    return f"stopped part way, after it {deleted_text(result)}; " + (
        "every kept upload stays restorable, and the next prune finishes the job"
    )


def deleted_text(result: dict[str, Any]) -> str:
    """What a prune (or its ``last_prune``) says it deleted, as words."""
    removed = result.get("uploads_removed")
    count = len(removed) if isinstance(removed, list) else removed or 0
    return (
        f"removed {count} upload(s) and deleted {result.get('objects_deleted', 0)} "
        f"object(s), {result.get('bytes_freed', 0)} byte(s)"
    )


def interrupted_line(result: dict[str, Any]) -> str | None:
    """For a prune that found the one before it interrupted (killed before it recorded
    its outcome): what that one had deleted; None otherwise."""
    before = result.get("interrupted_prune")
    if not isinstance(before, dict):
        return None
    return f"the prune before this one was interrupted after it {deleted_text(before)}"


def kept_count(result: dict[str, Any]) -> str:
    """How many uploads the prune kept, as said in a line: a prune that failed before it
    read the uploads does not know (it deleted nothing: every upload is still there)."""
    kept = result.get("uploads_kept")
    return "every upload (the prune read none)" if kept is None else str(kept)


def versioning_note(result: dict[str, Any]) -> str | None:
    """What a prune in a versioned bucket must add to its bytes freed (None elsewhere)."""
    status = result.get("bucket_versioning")
    if not status:
        return None
    return (
        f"the bucket has versioning {status}: deleted objects stay stored (and billed) as "
        "noncurrent versions until a lifecycle rule expires them, so the bytes are not "
        "freed until then"
    )


def result_line(result: dict[str, Any]) -> str:
    """The line a prune (retention enabled) logs: what it did, and its problems if any."""
    what = "dry run: would remove" if result.get("dry_run") else "removed"
    line = f"prune ({result.get('policy', '')}): " + (
        stopped_line(result)
        or f"{what} {len(result.get('uploads_removed') or [])} upload(s), kept "
        f"{kept_count(result)}, {result.get('objects_deleted', 0)} object(s), "
        f"{result.get('bytes_freed', 0)} byte(s)"
    )
    return line if result["ok"] else f"{line}; problems: {problems_text(result)}"


def problems_text(result: dict[str, Any]) -> str:
    """A prune's problems, in one line."""
    return "; ".join(result.get("problems") or [])


def log_result(result: dict[str, Any], failure_log: ReasonLog | None = None) -> None:
    """INFO when all went well, ERROR with the problems (through ``failure_log`` when
    given: the same problems again are logged at most once per its interval)."""
    if not result.get("enabled", True):
        logger.info("prune: retention is disabled, every upload kept")
        return
    line = result_line(result)
    if result["ok"]:
        logger.info(line)
    elif failure_log is not None:
        failure_log.error(failure_reason(problems_text(result)), "{}", line)
    else:
        logger.error("{}", line)
    before = interrupted_line(result)
    if before is not None:
        logger.warning("prune: {}", before)
    note = versioning_note(result)
    if note is not None and result.get("objects_deleted"):
        logger.warning("prune: {}", note)


async def record(state: StateDB, result: dict[str, Any]) -> dict[str, Any]:
    """Keep a prune's outcome as ``last_prune`` (dry runs and disabled prunes are not
    kept); returns it."""
    last = last_prune(result)
    if result.get("dry_run") or not result.get("enabled", True):
        return last
    text = json.dumps(last)

    def op(c: sqlite3.Connection) -> None:
        c.execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (KV_LAST, text))

    await state.transaction(op)
    return last


def parse_last(text: str | None) -> dict[str, Any] | None:
    """A stored ``last_prune``, or None."""
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


async def other_systems_note(target: Target, system_id: str) -> str | None:
    """For a prune that found no upload of ``system_id``: which system ids ``target`` does
    hold, when it holds others (a new machine's host name makes another default
    ``system_id``: "removed 0, kept 0" alone read as a prune of the backup), else None."""
    if not isinstance(target, ListsSystems):
        return None
    try:
        others = [i for i in await target.system_ids(7) if i != system_id]
    except (TransientError, PermanentError, OSError):
        return None
    if not others:
        return None
    shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
    return (
        f"no uploads for system {system_id} in {target.name}; it holds system id(s) {shown}: "
        "to prune those, set cloud_sync.system_id to one (then akoshad takeover)"
    )
