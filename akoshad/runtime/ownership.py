"""``takeover`` and the work a command does on this machine's state without a daemon.

``akoshad takeover`` makes this machine the owner of its ``system_id`` in the primary
target (the bucket when one is set, else the local outbox). With a daemon answering on the
socket it goes through the daemon (``{"cmd": "takeover"}``), which does it under its pass
lock and carries on uploading at once; otherwise it takes the state directory's lock, as
``run --once`` does, and does it itself.

Either way the ledger of that target is then seeded again from the newest upload in the
target: the previous owner may have pruned the objects this machine's ledger points at,
and an upload must never point at a deleted object. The next pass hashes every file and
sends what differs from that upload.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loguru import logger

from akoshad.config import Settings
from akoshad.errors import PermanentError, TransientError
from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.recovery import Discarder, Recovery
from akoshad.pipeline.sealing import SealingSource, sealing_source
from akoshad.pipeline.stats import Stats
from akoshad.runtime.control_client import ControlRequestError
from akoshad.storage.owner import OwnerRecord, OwnerRecordError
from akoshad.store.db import STATE_FILE, StateDB
from akoshad.targets import Target, make_target

if TYPE_CHECKING:
    from akoshad.runtime.wiring import Parts


def primary_name(settings: Settings) -> str:
    """The target uploads go to (:attr:`Settings.primary_target`)."""
    return settings.primary_target


@dataclass
class Offline:
    """This machine's state (locked) and its primary target, for a command run without a
    daemon; ``gate`` checks and changes the ownership like the daemon's."""

    settings: Settings
    state: StateDB
    target: Target
    gate: OwnerGate


@asynccontextmanager
async def offline(settings: Settings) -> AsyncIterator[Offline]:
    """Lock the state directory (``AlreadyRunning`` when a daemon holds it), open the
    state database and start the primary target without cleaning anything up. A state
    database found corrupt is kept aside and its ledger rebuilt from the target, as a
    daemon's start does (the next daemon finds a sound database and would not know); so is
    the ledger of a primary target that is another place now, or that no longer holds the
    last upload this machine made there (``target_identity``, as a daemon's start; the
    seed bounded by ``SEED_TIMEOUT``)."""
    from akoshad.runtime.target_identity import (
        forget_changed_targets,
        forget_if_last_upload_gone,
        seed_ledger,
    )
    from akoshad.runtime.wiring import StateLock, open_state, target_names

    async with AsyncExitStack() as stack:
        lock = StateLock(settings.state_dir)
        lock.acquire()
        stack.callback(lock.release)
        state, rebuilt = await open_state(settings.state_dir / STATE_FILE)
        stack.push_async_callback(state.close)
        primary = primary_name(settings)
        changed = await forget_changed_targets(state, settings, target_names(settings), primary)
        target = make_target(primary, settings)
        stack.push_async_callback(target.close)
        await target.start(clean_up=False)
        sid = settings.cloud_sync.system_id
        gone = await forget_if_last_upload_gone(state, target, sid)
        if rebuilt or primary in changed or gone:
            recovery = Recovery(state, sid, Discarder(sid), sealing_source(settings))
            await seed_ledger(recovery, target, available=True)
        gate = OwnerGate(settings.state_dir, sid, Stats())
        yield Offline(settings, state, target, gate)


async def forget_ledger(state: StateDB, target: Target) -> None:
    """Forget the ledger of ``target`` and its chunk table (another owner may have pruned
    what they point at): the next upload sends every file, unless it is seeded again."""

    def forget(c: sqlite3.Connection) -> None:
        StateDB.write_ledger(c, target.name, [], list(StateDB.ledger_rows(c, target.name)))
        StateDB.forget_target_chunks(c, target.name)

    await state.transaction(forget)


async def reseed_ledger(
    state: StateDB, system_id: str, target: Target, sealing: SealingSource | None = None
) -> int:
    """Forget the ledger of ``target`` (``forget_ledger``) and seed it from the newest
    upload in it. Returns the entries known. A crash in between leaves an empty ledger:
    everything is sent again."""
    await forget_ledger(state, target)
    return await Recovery(state, system_id, Discarder(system_id), sealing).rebuild_ledger(target)


def takeover_result(
    record: OwnerRecord, previous: OwnerRecord | None, known: int | None
) -> dict[str, Any]:
    """The ``takeover`` reply: the lease now, whom it was taken from (None: nobody, or
    this machine already owned the id) and the ledger entries seeded (None: kept)."""
    return {
        "host": record.host,
        "since": record.since,
        "already_owner": previous is not None and previous.owner_id == record.owner_id,
        "previous_host": None
        if previous is None or previous.owner_id == record.owner_id
        else previous.host,
        "ledger_entries": known,
    }


async def _takeover(
    state: StateDB, gate: OwnerGate, target: Target, sealing: SealingSource | None = None
) -> dict[str, Any]:
    own = await gate.ownership(target)
    try:
        previous = await own.read()
    except OwnerRecordError:  # damaged: taking over is the fix
        previous = None
    mine = previous is not None and previous.owner_id == own.machine.owner_id
    if not mine:  # before the record is written: a takeover whose write lands but whose
        # read-back fails leaves this machine the owner, with no ledger to point at what
        # the previous owner may have pruned
        await forget_ledger(state, target)
        await state.sync()  # a power loss must not keep the record and undo the forgetting
    record = await gate.takeover(target)
    if mine:
        return takeover_result(record, previous, None)  # nothing changed hands
    known = await reseed_ledger(state, gate.system_id, target, sealing)
    logger.warning(
        "this machine ({}) owns system_id {} in {} now{}",
        record.host,
        gate.system_id,
        target.name,
        f", taken over from {previous.host}" if previous is not None else "",
    )
    return takeover_result(record, previous, known)


async def takeover_offline(settings: Settings) -> dict[str, Any]:
    """``akoshad takeover`` with no daemon running on this state."""
    async with offline(settings) as off:
        return await _takeover(off.state, off.gate, off.target, sealing_source(settings))


async def takeover_in_daemon(parts: Parts, after: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    """``{"cmd": "takeover"}``: under the pass lock; then every queued change is due now
    and ``after`` (the daemon's reconcile and wake-up) runs."""
    async with parts.pass_lock:
        try:
            result = await _takeover(
                parts.state, parts.owners, parts.primary, parts.recovery.sealing
            )
        except (TransientError, PermanentError, OSError) as exc:
            raise ControlRequestError(f"takeover failed: {exc}") from None
        await parts.state.transaction(
            lambda c: c.execute("UPDATE queue SET next_attempt = 0 WHERE state = 'pending'")
        )
    await after()
    return result
