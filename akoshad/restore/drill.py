"""Restore drills: the newest upload restored from the target alone and opened with its
engines, by hand (``akoshad drill``) or every ``drill_interval_hours`` in the daemon.

A drill reads only (GETs, at most ``drill_max_mbps``), restores into a private directory
``state_dir/drill-*`` (0700, removed afterwards; one a crash left is removed by the next
drill), checks every SHA-256 (``storage.fetch.fetch_file``: each chunk, then each file;
either manifest format), then hands the databases and JSON
files to a short-lived worker process (``akoshad.restore.drill_worker``). The result
``{at, ok, upload_id, problems}`` is kept in the state database (``status.last_drill``).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from akoshad.config import Settings
from akoshad.errors import AkoshadError, ConfigError, RestoreError
from akoshad.manifest.read import list_uploads
from akoshad.names import printable
from akoshad.private import remove_tree, shared_dir_problem
from akoshad.restore.drill_check import one_line, run_worker, worker_spec
from akoshad.restore.drill_dirs import (
    DRILL_PREFIX,
    KV_LAST,
    KV_LAST_GOOD,
    LOCK_NAME,
    remove_stale,
)
from akoshad.restore.drill_restore import DrillResult, restore_all
from akoshad.restore.readback import identities_of, of_upload, start_reading
from akoshad.restore.throttle import DrillReader, TokenBucket
from akoshad.storage.crypto import Identities, IdentityError, IdentityNeeded
from akoshad.store.db import STATE_FILE, StateError, read_ledger
from akoshad.store.places import (
    another_place,
    manifest_gone,
    recorded_place,
    target_identity,
    upload_gone,
)
from akoshad.targets import Target, make_target
from akoshad.threads import owned_in_thread, to_the_end

STORE_DIR = "store"
MAX_PROBLEMS = 200
FUTURE_SKEW = timedelta(minutes=5)  # an upload id dated this far ahead still counts as now


class NothingToDrill(AkoshadError):
    """The target holds no upload for this system id yet."""


async def pick_upload(target: Target, system_id: str, now: datetime | None = None) -> str | None:
    """The newest upload (as ``restore --latest``): the greatest upload id in the target
    whose time is not in the future; None when there is none."""
    limit = (now or datetime.now(UTC)) + FUTURE_SKEW
    for upload_id in reversed(await list_uploads(target, system_id)):
        try:
            when = datetime.strptime(upload_id[:22], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
        except ValueError:
            return upload_id  # not dated: nothing says it is in the future
        if when <= limit:
            return upload_id
    return None


async def nothing_to_drill(target: Target, system_id: str) -> str:
    """Why there is nothing to drill: no upload at all, or only uploads dated in the future
    (this machine's clock is behind theirs: "no upload" would say there is no backup)."""
    uploads = await list_uploads(target, system_id)
    if not uploads:
        return f"nothing to drill: no upload for {system_id} in {target.name}"
    return (
        f"nothing to drill: every upload of {system_id} in {target.name} is dated in the "
        f"future ({len(uploads)}, the newest {uploads[-1]}): this machine's clock is behind, "
        "or the clock that dated them ran ahead; the drill takes them once their time has "
        f"come (`akoshad verify --upload-id {uploads[-1]}` checks one now)"
    )


# ---- the private directory ----------------------------------------------------------------
def make_drill_dir(state_dir: Path) -> tuple[Path, int]:
    """A new private directory (0700) and the fd of the lock held on it. Blocking."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = Path(tempfile.mkdtemp(prefix=DRILL_PREFIX, dir=state_dir))
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return path, fd


def drop_drill_dir(path: Path, fd: int) -> None:
    """Remove the directory, then let go of its lock. Blocking."""
    remove_tree(path)
    os.close(fd)


async def drill_upload(
    target: Target,
    system_id: str,
    upload_id: str,
    state_dir: Path,
    max_mbps: float,
    identities: Identities | None = None,
) -> DrillResult:
    """Restore ``upload_id`` into a private directory, check it, remove the directory.
    An encrypted upload is read with ``identities``; without them the result says so
    (``needs_identity``): nothing was checked, nothing is wrong with the upload that the
    drill could tell. Identities that do not open it fail the drill (one problem)."""
    started = time.monotonic()
    result = DrillResult(upload_id)
    reader = DrillReader(target, TokenBucket(max_mbps * 1_000_000))
    await asyncio.to_thread(remove_stale, state_dir)
    path, fd = await owned_in_thread(  # a cancellation meanwhile removes it too
        lambda: make_drill_dir(state_dir), lambda made: drop_drill_dir(*made)
    )
    try:
        try:
            restored = await restore_all(
                reader, system_id, upload_id, path / STORE_DIR, result, identities
            )
        except IdentityError as exc:
            result.problems.append(one_line(exc))
            # no identity here: nothing checked, nothing found wrong; an identity that does
            # not open the upload (encrypted to other keys) is a failed drill
            result.needs_identity = isinstance(exc, IdentityNeeded)
            result.identity_error = True
            restored = []
        specs = worker_spec(restored)
        if specs:
            problems, notes = await run_worker(path / STORE_DIR, specs, path / "worker.log")
            result.problems.extend(problems)
            result.notes.extend(notes)
    finally:
        await to_the_end(lambda: drop_drill_dir(path, fd))  # cancelled (again) or not
    if len(result.problems) > MAX_PROBLEMS:
        more = len(result.problems) - MAX_PROBLEMS
        result.problems = [*result.problems[:MAX_PROBLEMS], f"... and {more} more problem(s)"]
    result.ok = not result.problems
    result.at = time.time()
    result.seconds = round(time.monotonic() - started, 3)
    return result


async def drill_picked(
    target: Target,
    system_id: str,
    upload_id: str | None,
    gone: str | None,
    state_dir: Path,
    max_mbps: float,
    identities: Identities | None,
) -> DrillResult:
    """The drill of ``upload_id`` (the newest upload: ``pick_upload``; None when none is
    left), failed when ``gone`` (the last upload this machine made in ``target``) is not
    there any more: ``store.places.upload_gone`` first among its problems, a problem with
    the identity or without it. One of the two is set."""
    result = None
    if upload_id is not None:
        result = await drill_upload(target, system_id, upload_id, state_dir, max_mbps, identities)
    if gone is None:
        if result is None:
            raise ValueError("drill_picked needs an upload to drill or a gone one")
        return result
    if result is None:
        result = DrillResult(gone, at=time.time())
    result.problems.insert(0, upload_gone(target.name, gone))
    result.ok = False
    result.needs_identity = result.identity_error = False  # a problem was found, identity or not
    return result


def store_result(c: sqlite3.Connection, result: DrillResult) -> None:
    """Inside a transaction on the state database: keep ``result`` as ``last_drill``."""
    c.execute(
        "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
        (KV_LAST, json.dumps(result.as_dict())),
    )
    if result.ok:
        c.execute(
            "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (KV_LAST_GOOD, repr(result.at))
        )


# ---- akoshad drill ------------------------------------------------------------------------
def _record(path: Path, result: DrillResult, place: tuple[str, str]) -> str | None:
    """Keep a drill run by hand in this machine's state (when there is one); the reason it
    was not. ``place``: the drilled target's name and identity (``store.places``); a state
    that knows that target as another place does not take it (its next start forgets the
    old place's records, and this drill is not of the place they describe)."""
    if not path.is_file():
        return None
    try:
        con = sqlite3.connect(path, timeout=10, isolation_level=None)
    except sqlite3.Error as exc:
        return str(exc)
    try:
        con.execute("BEGIN IMMEDIATE")
        known = recorded_place(con, place[0])
        if known is not None and known != place[1]:
            con.execute("ROLLBACK")
            return another_place(place[0])
        store_result(con, result)
        con.execute("COMMIT")
    except sqlite3.Error as exc:
        return str(exc)
    finally:
        con.close()
    return None


async def drill_here(settings: Settings) -> dict[str, Any]:
    """A drill in this process, reading the target directly (the CLI goes through a
    running daemon first: ``cli.drill``): its ``last_drill`` object. Raises
    :class:`NothingToDrill`, :class:`IdentityError` (the upload needs the identity) and the
    target's errors; ``ConfigError`` for a ``state_dir`` others can write to (as ``run``)."""
    shared = await asyncio.to_thread(shared_dir_problem, "state_dir", settings.state_dir)
    if shared is not None:
        raise ConfigError(shared)
    try:
        return await _drill_here(settings)
    except OSError as exc:  # state_dir's disk full: the drill could not run (no failure)
        raise RestoreError(f"the drill could not run: {exc.strerror or exc}") from None


def _last_made(path: Path, place: tuple[str, str]) -> str | None:
    """The last upload this machine's state (read only) made in the target ``place``
    names; None without a state, a record, or when the state knew it as another place."""
    try:
        view = read_ledger(path, place[0], with_entries=False)
    except StateError:
        return None  # no state to compare with: the drill itself still runs
    if view is None or view.identity not in (None, place[1]):
        return None
    return view.last_upload


async def _gone(target: Target, system_id: str, path: Path, place: tuple[str, str]) -> str | None:
    """The last upload this machine made in ``target``, when the target no longer holds
    it (read again after the look: one made meanwhile by a daemon does not count)."""
    last = await asyncio.to_thread(_last_made, path, place)
    if last is None or not await manifest_gone(target, system_id, last):
        return None
    return last if await asyncio.to_thread(_last_made, path, place) == last else None


async def _drill_here(settings: Settings) -> dict[str, Any]:
    """A drill in this process; the ``last_drill`` object (recorded in the state). It
    fails when the last upload this machine made in the target is gone, whatever the
    newest upload still there shows."""
    cs = settings.cloud_sync
    identities = await asyncio.to_thread(identities_of, settings)
    name = settings.primary_target
    state_path = settings.state_dir / STATE_FILE
    place = (name, target_identity(settings, name))
    target = make_target(name, settings)
    await start_reading(target)
    try:
        gone = await _gone(target, cs.system_id, state_path, place)
        upload_id = await pick_upload(target, cs.system_id)
        if upload_id is None and gone is None:
            raise NothingToDrill(await nothing_to_drill(target, cs.system_id))
        result = await drill_picked(
            target,
            cs.system_id,
            upload_id,
            gone,
            settings.state_dir,
            settings.drill_max_mbps,
            identities,
        )
    finally:
        await target.close()
    if result.needs_identity:  # one line, exit 1 (as verify, restore), naming the upload
        raise IdentityNeeded(of_upload(result.problems[0], result.upload_id))
    if result.identity_error:  # an identity that does not open the upload: a fault
        raise IdentityError(of_upload(result.problems[0], result.upload_id))
    error = await asyncio.to_thread(_record, state_path, result, place)
    if error is not None:
        line = f"akoshad: the drill is not recorded in the state: {error}"
        print(printable(line), file=sys.stderr)
    return result.as_dict()


def print_result(result: dict[str, Any], as_json: bool) -> int:
    """Print a drill's ``last_drill`` object (as JSON, or a line per problem and a
    verdict); 0 all well, 1 otherwise. One that needed the identity: its one line."""
    if result.get("needs_identity"):
        if as_json:
            print(json.dumps(result, indent=2))
        raise IdentityError(result["problems"][0])
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        problems = result.get("problems", [])
        for line in [*problems, *result.get("notes", [])]:
            print(printable(line))
        verdict = "all well" if result.get("ok") else f"{len(problems)} problem(s)"
        print(
            f"drill of upload {result.get('upload_id')}: {result.get('files', 0)} file(s) "
            f"restored and checked in {result.get('seconds', 0.0):.1f}s, {verdict}"
        )
    return 0 if result.get("ok") else 1
