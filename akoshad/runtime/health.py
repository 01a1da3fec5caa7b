"""What makes akoshad unhealthy, in one place: the daemon's status, ``status --check``,
``run --once`` and ``config check`` read these.

Pure functions (``data_dir_problem`` stats and opens the directory); no daemon state here.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from akoshad.config import Settings
from akoshad.fileio import directory_problem
from akoshad.pipeline.storefiles import unreadable
from akoshad.runtime.safety import drill_problems, skipped_problem

BEHIND_GRACE_SECONDS = 60.0

# ``status --help``: what the counters mean (README "Status" says the same)
STATUS_EPILOG = (
    "Counters count since the daemon started. 'file bytes captured' (JSON "
    "counters.bytes_uploaded): the size of the changed files as captured, before "
    "compression; 'bytes sent' (counters.bytes_sent): what was written to the target, "
    "after compression, plus manifests and memories.json; 'deduplicated': files an upload "
    "carried over unchanged, pointing at an earlier upload's object. --check prints one "
    "line and exits 0 when healthy, 1 when paused, degraded, waiting for data_dir, when "
    "nothing to back up (no file selected), when changes seen could not be queued, when a "
    "file is skipped, when memories wait to be stored by Akosha again, when metrics_listen "
    "cannot be served, when the last restore drill or prune failed or the last drill could "
    "not run, when a reload (SIGHUP) was refused for an invalid configuration file (until a "
    "reload passes: the next start would refuse that file, exit 78), when the configuration "
    "file changed and was not reloaded (SIGHUP), when data_dir, "
    "encryption, state_dir, local_target_dir, cloud_sync or akosha_url changed and wait for "
    "a restart, or behind "
    "(the oldest pending change is older than max_delay_seconds + min_upload_interval_seconds "
    "+ 60 s), 3 with no daemon."
)


def data_dir_problem(data_dir: Path, *, waits: bool = True) -> str | None:
    """One line when ``data_dir`` is missing, not a directory or cannot be listed (nothing
    is backed up then), else None. ``waits``: a daemon waits for a missing one to appear
    (``run --once`` does not)."""
    waiting = "waiting for it to appear, nothing is backed up" if waits else None
    problem = directory_problem(data_dir, "data_dir", "nothing is backed up", missing=waiting)
    if problem is not None:
        return problem
    reason = unreadable(data_dir)
    if reason is not None:  # its permissions changed, a mount refusing access: not empty
        return f"data_dir {data_dir} cannot be read ({reason}): nothing is backed up"
    return None


def nothing_selected(
    settings: Settings, files_on_disk: int | None, excluded: int = 0
) -> str | None:
    """Why the store has no file to back up (its last reconcile selected none, ``excluded``
    left out by include/exclude), or None."""
    if files_on_disk != 0:
        return None
    include = ", ".join(settings.include) or "everything"
    left_out = f"; {excluded} file(s) left out" if excluded else ""
    return (
        f"no file in {settings.data_dir} is selected "
        f"(include: {include}; exclude: {settings.exclude}{left_out})"
    )


def upload_kept(uploaded: bool) -> str:
    """What became of the backup of a store that selects no file: ``uploaded``, the last
    upload is kept as it is (the reconcile queues no removal)."""
    return "the last upload is kept as it is" if uploaded else "nothing was ever uploaded"


def nothing_to_back_up(why: str, uploaded: bool = False) -> str:
    """The daemon's line for a store that selects no file (``why``: :func:`nothing_selected`;
    ``uploaded``: an upload was made before, :func:`upload_kept`): an ``include`` typo, an
    empty or unmounted ``data_dir`` is not a backup."""
    return f"nothing to back up in data_dir (check include/exclude): {why}; {upload_kept(uploaded)}"


def warn_data_dir(data_dir: Path) -> None:
    """``config check``: one line on stderr when ``data_dir`` is missing. The configuration
    is still valid (the daemon waits for the directory), but nothing is backed up yet."""
    problem = data_dir_problem(data_dir)
    if problem:
        print(f"akoshad: warning: {problem}", file=sys.stderr)


def behind_after_seconds(
    max_delay_seconds: float, min_upload_interval_seconds: float = 0.0
) -> float:
    """How old the oldest pending change may grow before the daemon counts as behind:
    the longest a change may rightly wait (``max_delay_seconds`` in the debouncer, at most
    one ``min_upload_interval_seconds``) plus a minute for the upload itself."""
    return float(max_delay_seconds) + float(min_upload_interval_seconds) + BEHIND_GRACE_SECONDS


# settings whose change, until a restart, leaves uploads going where or as they went
DATA_RESTART_KEYS = frozenset(
    ("data_dir", "encryption", "state_dir", "local_target_dir", "cloud_sync", "akosha_url")
)


def capture_problem(failures: Mapping[str, Any]) -> str | None:
    """One line for the files whose capture fails and is tried again (None: none): the
    newest upload holds each as it was last captured, or not at all."""
    if not failures:
        return None
    path, why = next(iter(sorted(failures.items())))
    more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
    return (
        f"{path} cannot be captured: {why}{more}; tried again, the last upload holds it as "
        "last captured, if ever"
    )


def memories_held(memories: Any) -> str | None:
    """The line for memories Akosha did not store at the last delivery (status
    ``memories.held``; they are sent again later), else None."""
    if not isinstance(memories, Mapping):
        return None
    held = memories.get("held")
    if not isinstance(held, int) or isinstance(held, bool) or held <= 0:
        return None
    first = memories.get("held_first") or "no reason recorded"
    return f"{held} memories not stored by Akosha yet ({first}); sent again later"


def memories_unreadable(why: Any) -> str | None:
    """The line for memories that could not be read from the last copy of
    ``reflection.duckdb`` (status ``memories_unreadable``), else None."""
    if not why:
        return None
    return (
        f"memories not read from reflection.duckdb: {why}; none of them reaches Akosha "
        "until they can be read (tried again when the file changes)"
    )


def drill_not_run(why: str | None) -> str | None:
    """The line for a restore drill that could not run (``why``; None: it ran): tried again
    later; until one runs, nothing says the uploads can be restored."""
    if why is None:
        return None
    return f"the last restore drill could not run: {why} (tried again later)"


# a reload refused because the configuration file read at start is gone (runtime.reload)
FILE_GONE = "is gone (it was read at start)"


def clock_went_back(pair: tuple[str, str] | None) -> str | None:
    """The warning while the upload made last (``pair[0]``) sorts before one made earlier
    (``pair[1]``): the clock went back between them, and ``restore --latest`` (on any
    machine whose clock has passed the earlier one's time) takes that older store."""
    if pair is None:
        return None
    last, greater = pair
    return (
        f"the last upload {last} sorts before {greater}, made earlier: the clock went back "
        f"between them (set back, or set right after it ran ahead), so `restore --latest` "
        f"takes {greater}, the older store, wherever the clock has passed its time, until an "
        f"upload sorts after it; check this machine's clock (restore the newer store with "
        f"`--upload-id {last}`)"
    )


def config_problems(status: Mapping[str, Any]) -> list[str]:
    """The running configuration is not the file's: a reload refused (the file would fail
    the next start with exit 78), the file changed and not reloaded, or a change of what
    is backed up, where or how, that waits for a restart."""
    return list(_config_kinds(status).values())


def _config_kinds(status: Mapping[str, Any]) -> dict[str, str]:
    """:func:`config_problems` by kind (``reload_refused``, ``config_changed``,
    ``restart_pending``)."""
    problems: dict[str, str] = {}
    refused = status.get("reload_refused")
    if refused:
        then = "run on the defaults" if FILE_GONE in refused else "refuse that file too (exit 78)"
        problems["reload_refused"] = f"{refused}; the next start would {then}"
    changed = status.get("config_changed")  # the file edited and not reloaded (yet)
    if changed:
        problems["config_changed"] = str(changed)
    waiting = [k for k in status.get("restart_pending") or () if k in DATA_RESTART_KEYS]
    if waiting:
        problems["restart_pending"] = (
            f"{', '.join(waiting)} changed in the configuration: the previous values are "
            "used until akoshad is restarted"
        )
    return problems


def _waiting_line(status: Mapping[str, Any]) -> str:
    """``status --check``'s line for a daemon waiting for ``data_dir``: missing, "to
    appear"; a file or one that cannot be read, its own reason."""
    why = status.get("data_dir_problem")
    if isinstance(why, str) and why and "does not exist" not in why:
        return f"waiting for data_dir: {why}"
    return f"waiting for data_dir {status.get('data_dir', '?')} to appear (or to be readable)"


def check_problems(status: Mapping[str, Any]) -> list[str]:
    """Why ``status --check`` fails (empty: healthy), from a daemon's status result:
    paused, degraded, waiting for ``data_dir``, nothing to back up, changes the queue could
    not take, /metrics not served, the last restore drill found problems, behind, a
    refused reload, or a change of what is backed up, where or how, that waits for a
    restart."""
    return list(check_kinds(status).values())


def check_kinds(status: Mapping[str, Any]) -> dict[str, str]:
    """:func:`check_problems` by kind (``paused``, ``degraded``, ``data_dir``, ``behind``...):
    the webhook alerts (``runtime.alerts``) follow each kind."""
    problems = _config_kinds(status)
    if status.get("stopping") is True:  # state paused meanwhile: no resume helps
        problems["stopping"] = "stopping: a stop signal was received (akoshad exits soon)"
    elif status.get("paused") or status.get("state") == "paused":
        problems["paused"] = "paused (akoshad resume restarts uploading)"
    reason = status.get("degraded_reason")
    if reason or status.get("state") == "degraded":
        problems["degraded"] = f"degraded: {reason or 'a target is unavailable'}"
    if status.get("waiting_for_data_dir"):
        problems["data_dir"] = _waiting_line(status)
    if status.get("nothing_selected"):
        problems["nothing_selected"] = str(status["nothing_selected"])
    skipped = skipped_problem(status.get("skipped"))  # left out of every upload
    if skipped is not None:
        problems["skipped"] = skipped
    if status.get("unrecorded"):
        problems["unrecorded"] = f"not recorded: {status['unrecorded']}"
    failing = status.get("capture_failures")
    if isinstance(failing, Mapping) and failing:
        problems["capture"] = capture_problem(failing) or ""
    if status.get("metrics_error"):
        problems["metrics"] = str(status["metrics_error"])
    problems.update(_memory_kinds(status))
    drill = _failed_drill(status.get("last_drill"))
    if drill:
        problems["drill_failed"] = drill
    if status.get("drill_not_run"):
        problems["drill_not_run"] = str(status["drill_not_run"])
    prune = status.get("last_prune")
    if isinstance(prune, Mapping) and prune.get("ok") is False:  # the target may be gone
        found = prune.get("problems") or ["no reason recorded"]
        problems["prune_failed"] = f"the last prune failed: {found[0]} (the daemon tries again)"
    age = _number(status.get("oldest_pending_age_seconds"))
    limit = _number(status.get("behind_after_seconds"))
    if age is not None and limit is not None and age > limit:
        problems["behind"] = (
            f"behind: the oldest pending change is {age:.0f} s old (limit {limit:.0f} s)"
        )
    return problems


def _memory_kinds(status: Mapping[str, Any]) -> dict[str, str]:
    """Memories Akosha did not store yet, memories that cannot be read."""
    problems: dict[str, str] = {}
    held = memories_held(status.get("memories"))
    if held is not None:
        problems["memories_held"] = held
    unreadable = memories_unreadable(status.get("memories_unreadable"))
    if unreadable is not None:
        problems["memories_unreadable"] = unreadable
    return problems


def _failed_drill(drill: Any) -> str | None:
    """The line for a last drill that found problems (until a drill passes); None for a
    good one, none, or one that only lacked the identity (a daemon that has only the
    recipients: nothing was found wrong)."""
    if not isinstance(drill, Mapping) or drill.get("ok") is not False:
        return None
    if drill.get("needs_identity"):
        return None
    upload = drill.get("upload_id")
    return f"the last restore drill of upload {upload} failed: {drill_problems(drill)}"


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
