"""What the daemon answers on its control socket: status, queue, pause/resume, sync,
prune, drill, takeover. A bad request is a :class:`ControlRequestError` (one line to the client);
the daemon carries on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from loguru import logger

from akoshad.runtime.control_client import ControlRequestError
from akoshad.runtime.drills import drill_request
from akoshad.runtime.health import data_dir_problem
from akoshad.runtime.ownership import takeover_in_daemon
from akoshad.runtime.prune_scheduler import prune_request
from akoshad.runtime.safety import skipped_problem
from akoshad.store.places import target_identity

if TYPE_CHECKING:
    from akoshad.config import Settings
    from akoshad.runtime.daemon import Daemon


# the commands that act on the daemon's store and target (or on its uploads: pause,
# resume): refused for another place
_PLACED = {
    "prune": "nothing was deleted",
    "sync": "nothing was synced",
    "drill": "no drill ran",
    "takeover": "nothing was taken over",
    "pause": "nothing was paused",
    "resume": "nothing was resumed",
}
# what a stopping daemon cannot do any more: refused, not "sync started" for nothing
_NOT_WHILE_STOPPING = {
    **_PLACED,
    "pause": "its uploads end with it",
    "resume": "nothing is uploaded until it starts again",
}
# changed by a reload, they wait for a restart, and a sync until then is not the one the
# configuration asks for (another store; not encrypted as it now says)
_SYNCED_KEYS = ("data_dir", "encryption")
# the settings a place is made of (target_identity): changed by a reload, they wait for a restart
_PLACE_KEYS = ("local_target_dir", "cloud_sync")


def refuse_other_place(
    settings: Settings,
    target: str,
    request: dict[str, Any],
    not_done: str,
    pending: Sequence[str] = (),
) -> None:
    """``ControlRequestError`` when ``request`` names a place (``place_fields``) that is not
    this daemon's ``target`` under ``settings``: it would act on this daemon's store and
    target and report that as the other configuration's. A request without one goes on.
    ``pending``: the settings a reload read but cannot apply until a restart; a changed
    target or system id among them is the likely cause, said instead of another daemon."""
    place = request.get("place")
    if place is None or place == target_identity(settings, target):
        return
    named = f"{request.get('system_id')!s:.100}"
    ours = settings.cloud_sync.system_id
    other = f"(system_id '{named}'{'' if named != ours else ' in another target'})"
    changed = [key for key in pending if key in _PLACE_KEYS]
    hint = (
        f"its configuration's {' and '.join(changed)} changed since it started, which takes "
        "effect after a restart: restart akoshad"
        if changed
        else "give this command the daemon's --config, or set socket_path so that each "
        "configuration has a daemon of its own"
    )
    raise ControlRequestError(
        f"the daemon answering here backs up system_id '{ours}' to its {target} target, "
        f"not the place the configuration here names {other}: {hint}; {not_done}"
    )


async def handle_request(daemon: Daemon, request: dict[str, Any]) -> dict[str, Any]:
    """``{"cmd": ...}`` -> result dict."""
    cmd = request.get("cmd")
    if isinstance(cmd, str) and cmd in _NOT_WHILE_STOPPING and daemon.stop_event.is_set():
        raise ControlRequestError(
            f"akoshad is stopping (a stop signal was received): {_NOT_WHILE_STOPPING[cmd]}; "
            "what is queued stays queued for its next start"
        )
    if isinstance(cmd, str) and cmd in _PLACED and request.get("place") is not None:
        settings = daemon.settings
        pending = daemon.view.restart_pending
        refuse_other_place(settings, settings.primary_target, request, _PLACED[cmd], pending)
    if cmd == "status":
        return await daemon.view.status()
    if cmd == "queue":
        return await daemon.view.queue_listing()
    if cmd in ("pause", "resume"):
        daemon.view.paused = cmd == "pause"
        if not daemon.view.paused:
            daemon.wake.set()
        # a pause starts no new pass: the one in hand (maybe a large upload) goes on
        finishing = daemon.view.paused and daemon.parts.stats.syncing
        logger.info(
            "uploads {}{}",
            "paused" if daemon.view.paused else "resumed",
            " (the pass in hand finishes first)" if finishing else "",
        )
        return {"paused": daemon.view.paused, "finishing": finishing}
    if cmd == "sync":
        return await _sync(daemon, request)
    if cmd == "prune":
        return await prune_request(daemon.parts.prunes, request)
    if cmd == "drill":
        return await drill_request(daemon.parts.drills)
    if cmd == "takeover":
        return await takeover_in_daemon(daemon.parts, daemon.feed.reconcile)
    raise ControlRequestError(f"unknown command {cmd!r}")


async def _sync(daemon: Daemon, request: dict[str, Any]) -> dict[str, Any]:
    method = request.get("method")
    if method not in (None, "auto", "cloud", "http"):
        raise ControlRequestError("method must be auto, cloud or http")
    fallback = request.get("enable_fallback")
    if fallback is not None and not isinstance(fallback, bool):
        raise ControlRequestError("enable_fallback must be true or false")
    wait = request.get("wait", False)
    if not isinstance(wait, bool):  # "no" or "false" waited for the drain
        raise ControlRequestError("wait must be true or false")
    if method == "http" and daemon.drain.akosha is None:  # nothing it could deliver
        raise ControlRequestError(
            "sync --method http delivers memories to Akosha, and no akosha_url is configured"
        )
    if method == "cloud" and not daemon.settings.bucket_configured:  # not the outbox instead
        raise ControlRequestError(
            "sync --method cloud sends to the bucket, and no cloud_sync.cloud_bucket is "
            f"configured (uploads go to the local outbox {daemon.settings.local_target_dir}: "
            "sync without --method)"
        )
    if daemon.view.paused:  # pause stops uploading: a sync does not override it
        raise ControlRequestError(
            "uploads are paused: nothing is uploaded until `akoshad resume` "
            "(watching and queueing go on)"
        )
    if wait:
        return await _sync_wait(daemon, method, fallback)
    await daemon.feed.flush()
    await daemon.passes.due_now()  # nor by a failure's backoff (as with --wait)
    daemon.drain.pacer.waive()  # a sync is not held back by min_upload_interval_seconds
    daemon.wake.set()
    # a store that cannot be read, or selects no file, is not synced: said now, not
    # "sync started" (exit 0) for nothing
    missing = await asyncio.to_thread(data_dir_problem, daemon.settings.data_dir)
    problem = missing or await daemon.view.nothing_to_back_up() or not_as_configured(daemon)
    if problem is not None:
        return {"ok_drain": False, "started": True, "error": problem}
    return {"ok_drain": True, "started": True}


def not_as_configured(daemon: Daemon) -> str | None:
    """Why a sync now is not what the configuration file asks for: a reload read a new
    ``data_dir`` or ``encryption``, which only a restart applies (None: nothing such)."""
    changed = [key for key in _SYNCED_KEYS if key in daemon.view.restart_pending]
    if not changed:
        return None
    keys = " and ".join(changed)
    return (
        f"{keys} changed in the configuration, which takes effect after a restart: this "
        f"daemon syncs {daemon.settings.data_dir} with the previous {keys} until then; "
        "restart akoshad"
    )


async def _sync_wait(daemon: Daemon, method: str | None, fallback: bool | None) -> dict[str, Any]:
    """``sync --wait``: drain now; ``ok_drain`` false with every reason it is not done."""
    ok, reports = await daemon.drain_until_empty(method=method, enable_fallback=fallback)
    pending = await daemon.state.queue_depth() + len(daemon.feed.debouncer)
    result: dict[str, Any] = {
        "ok_drain": ok,
        "passes": [r.as_dict() for r in reports],
        "pending": pending,
    }
    problems: list[str] = []
    if daemon.stop_event.is_set() and pending:  # the drain stopped between passes
        problems.append(
            f"akoshad is stopping (a stop signal was received): {pending} change(s) stay "
            "queued for its next start"
        )
    elif daemon.view.paused and pending:  # `akoshad pause` meanwhile: no new pass began
        problems.append(
            f"uploads were paused during the sync: {pending} change(s) wait for `akoshad resume`"
        )
    unrecorded = daemon.feed.unrecorded  # the changes seen were not drained: not done
    if unrecorded is not None:
        problems.append(f"{unrecorded}: not uploaded; the daemon tries again")
    # a store that cannot be read was not synced, however empty the queue
    missing = await asyncio.to_thread(data_dir_problem, daemon.settings.data_dir)
    # nor is one that selects no file (an include typo, an empty or unmounted data_dir)
    problem = missing or await daemon.view.nothing_to_back_up()
    # nor is a store with files left out of the upload (run --once exits 1 for them too)
    problem = problem or skipped_problem(await daemon.state.skipped())
    # nor the store, or the encryption, of a configuration not applied yet
    problem = problem or not_as_configured(daemon)
    if problem is not None:
        problems.append(problem)
    if problems:
        result["ok_drain"] = False
        result["error"] = "; ".join(problems)
    return result
