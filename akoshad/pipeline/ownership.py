"""One writer per system id, as the drain applies it (the record itself: ``storage.owner``).

Every target a pass writes to records its owner (``systems/{system_id}/owner.json``); the
local outbox is a target like the bucket. The daemon starts its targets without cleaning
up (``start(clean_up=False)``) and asks :meth:`OwnerGate.refusal` before each upload:

* this machine owns the id (or no machine does, and it claims it now): the upload goes on;
  the first time, the target is cleaned up (``start(clean_up=True)``: abandoned multipart
  uploads, temporary files), which only the owner may do;
* another machine owns it: nothing is captured or sent, the due changes go back to the
  queue until the next check, and the route is degraded with one line naming the owner's
  host and the fix (``targets.<name>.last_error``), logged once;
* the record cannot be read (target down, record damaged): nothing is sent either.

The record is read again at most every ``interval`` seconds (one small GET), so a
takeover by another machine stops this one within a minute.

The daemon's start reads the record in a task the gate owns (:meth:`OwnerGate.start_check`):
another machine's is reported at once (degraded), this machine's lets it clean up; any
``refusal`` asked meanwhile waits for that read. The start claims nothing: the first machine
that uploads records itself (CONTRACT, "One writer per system id"), so a daemon with
nothing to send (its ``data_dir`` missing, an empty store) takes no id from the machine that
has. The first pass with changes due begins the claim (:meth:`OwnerGate.until_settling`)
when no machine owns the id; a first claim settles for ``CLAIM_SETTLE`` seconds before its
record is read back, and ``until_settling`` tells the pass when only that wait is left, so
it can claim its queue rows and capture (nothing that writes to the target) meanwhile; it
asks ``refusal`` before it delivers or sends anything.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from loguru import logger

from akoshad.errors import PermanentError, TransientError
from akoshad.pipeline.stats import Stats
from akoshad.storage.owner import (
    CHECK_INTERVAL,
    CLAIM_SETTLE,
    OWNER_ID_FILE,
    Machine,
    NotOwner,
    OwnerRecord,
    Ownership,
)
from akoshad.targets.base import Target

CLEAN_UP_TIMEOUT = 10.0  # the bound a target's start had before ownership came first
UNREADABLE_RETRY = 10.0  # seconds before changes are tried again after a failed check


class OwnerGate:
    """The ownership of the system id in each target a pass writes to, with its cache."""

    def __init__(
        self,
        state_dir: Path,
        system_id: str,
        stats: Stats,
        *,
        interval: float = CHECK_INTERVAL,
        settle: float = CLAIM_SETTLE,
    ) -> None:
        self.state_dir = state_dir
        self.system_id = system_id
        self.stats = stats
        self.interval = interval
        self.settle = settle
        self.refused: dict[str, str] = {}  # target name -> the line it is degraded with
        self._machine: Machine | None = None
        self._owners: dict[str, Ownership] = {}
        self._cleaned: set[str] = set()
        self._unreadable: set[str] = set()
        self._unanswered: set[str] = set()  # of those, the checks the target did not answer
        self._checks: dict[str, asyncio.Task[str | None]] = {}  # the start's, per target
        self._claims: dict[str, asyncio.Task[str | None]] = {}  # a first upload's
        self._owned: set[str] = set()  # targets where this machine was found the owner
        self._lock = asyncio.Lock()  # one Machine, one Ownership per target
        self._said_host: dict[str, OwnerRecord] = {}  # the record named with another host

    async def machine(self) -> Machine:
        """This machine (its owner id is read, or made, in ``state_dir`` once)."""
        if self._machine is None:
            self._machine = await asyncio.to_thread(Machine.from_state, self.state_dir)
        return self._machine

    async def ownership(self, target: Target) -> Ownership:
        """The (cached) ownership of the system id in ``target``."""
        async with self._lock:
            own = self._owners.get(target.name)
            if own is None or own.target is not target:
                own = Ownership(
                    target,
                    self.system_id,
                    await self.machine(),
                    interval=self.interval,
                    settle=self.settle,
                )
                self._owners[target.name] = own
            return own

    def start_check(self, target: Target) -> asyncio.Task[str | None]:
        """The start's forced read of the record in ``target`` (no claim when no machine
        owns the id: the first upload claims it), as a task the gate owns: ``refusal`` and
        ``until_settling`` wait for it; ``close`` ends it."""
        task = asyncio.create_task(
            self._refusal(target, force=True, claim=False), name="owner-check"
        )
        self._checks[target.name] = task
        return task

    async def _checked(self, target: Target) -> tuple[bool, str | None]:
        """(whether the start's check of ``target`` was still to be heard, its answer)."""
        check = self._checks.get(target.name)
        if check is None:
            return False, None
        answer = await asyncio.shield(check)
        if self._checks.get(target.name) is check:
            del self._checks[target.name]
        return True, answer

    def _unowned(self, target_name: str, answer: str | None) -> bool:
        """The start's check found no machine owning the id (``answer`` None, not ours)."""
        return answer is None and target_name not in self._owned

    async def unowned(self, target: Target) -> bool:
        """The start's check of ``target`` found no machine owning the id, and no claim
        began since (a pass with nothing to send then claims nothing)."""
        check = self._checks.get(target.name)
        if check is None:
            return False
        return self._unowned(target.name, await asyncio.shield(check))

    async def until_settling(self, target: Target) -> bool:
        """Wait until the claim of ``target`` is either answered or only waiting out its
        settle; True in the latter case (this machine's record is written: work that
        writes nothing to the target may begin; ``refusal`` still decides). A pass asks it
        first: when the start's check found no owner, the claim begins here, as a task
        ``refusal`` answers with."""
        checked, answer = await self._checked(target)
        if checked and self._unowned(target.name, answer) and target.name not in self._claims:
            self._claims[target.name] = asyncio.create_task(
                self._refusal(target, force=False), name="owner-claim"
            )
        claim = self._claims.get(target.name)
        if claim is None or claim.done():
            return False
        own = await self.ownership(target)
        settling = asyncio.create_task(own.settling.wait())
        try:
            await asyncio.wait([claim, settling], return_when=asyncio.FIRST_COMPLETED)
        finally:
            settling.cancel()
            await asyncio.gather(settling, return_exceptions=True)
        return not claim.done()

    async def close(self) -> None:
        """End a check or a claim still running (shutdown)."""
        tasks = [*self._checks.values(), *self._claims.values()]
        self._checks, self._claims = {}, {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def refusal(self, target: Target, *, force: bool = False) -> str | None:
        """None when this machine may write to ``target`` (claiming the id when no machine
        owns it); else the one-line reason, also recorded as the target's last error. While
        the start's check or a claim runs, its answer."""
        checked, answer = await self._checked(target)
        if checked and not self._unowned(target.name, answer):
            return answer
        claim = self._claims.get(target.name)
        if claim is not None:
            answer = await asyncio.shield(claim)
            if self._claims.get(target.name) is claim:
                del self._claims[target.name]
            return answer
        return await self._refusal(target, force=force)

    async def _refusal(self, target: Target, *, force: bool, claim: bool = True) -> str | None:
        own = await self.ownership(target)
        try:
            record = await own.check(force=force, claim=claim)
        except NotOwner as exc:
            return self._refuse(target.name, str(exc))
        except (TransientError, PermanentError, OSError) as exc:
            line = f"cannot check the owner of system_id {self.system_id!r}: {exc}"
            if target.name not in self._unreadable:
                logger.error("{}: {}", target.name, line)
            self._unreadable.add(target.name)
            if isinstance(exc, PermanentError):  # answered: the record is damaged
                self._unanswered.discard(target.name)
            else:
                self._unanswered.add(target.name)
            self.stats.target(target.name).failed(line)
            return line
        self._unreadable.discard(target.name)
        self._unanswered.discard(target.name)
        if record is None and not claim:
            return None  # no machine owns the id: nothing claimed, nothing cleaned up
        self._owned.add(target.name)
        self.accepted(target.name)
        if record is not None:
            self._other_host(target.name, record, own.machine.host)
        if target.name not in self._cleaned:
            await self._clean_up(target)
        return None

    def unreadable(self, target_name: str) -> bool:
        """The last refusal for ``target_name`` was a check that failed (the target did not
        answer), not another owner: a failed pass, not one that waits."""
        return target_name in self._unreadable

    def unanswered(self, target_name: str) -> bool:
        """The last check of ``target_name`` failed because the target did not answer it
        (down, unreachable, a server error; not a damaged record): its circuit breaker
        hears it like a failed upload."""
        return target_name in self._unanswered

    def retry_in(self, target_name: str) -> float:
        """Seconds until changes held back for ``target_name`` are due again."""
        return self.interval if target_name in self.refused else UNREADABLE_RETRY

    def accepted(self, target_name: str) -> None:
        """This machine owns the id in that target (again): lift the refusal."""
        line = self.refused.pop(target_name, None)
        if line is None:
            return
        health = self.stats.target(target_name)
        if health.last_error == line:
            health.available = True
            health.last_error = None
        logger.info("this machine owns system_id {} in {} now", self.system_id, target_name)

    def _other_host(self, target_name: str, record: OwnerRecord, host: str) -> None:
        """This machine's owner id recorded with another host name: a copy of this state on
        that host (both would upload as the owner), or this host renamed. Said once a record."""
        if _short(record.host) == _short(host) or self._said_host.get(target_name) == record:
            return  # macOS names a host after its network too: MacBook.local, macbook.lan
        self._said_host[target_name] = record
        logger.warning(
            "{}: the owner record of system_id {} names this machine's owner id with host {!r} "
            "(this host is {!r}): if this state_dir was copied from {!r} and akoshad runs "
            "there too, both upload as the owner and mix their uploads (remove owner_id from "
            "the state_dir of one of them, here {}: it then counts as a new machine); if this "
            "host was renamed, run `akoshad takeover` to record its name",
            target_name,
            self.system_id,
            record.host,
            host,
            record.host,
            self.state_dir / OWNER_ID_FILE,
        )

    def _refuse(self, target_name: str, line: str) -> str:
        if self.refused.get(target_name) != line:
            logger.error("{}: {}", target_name, line)
        self.refused[target_name] = line
        self.stats.target(target_name).failed(line)
        return line

    async def _clean_up(self, target: Target) -> None:
        """What a crash of this owner left in ``target`` (once per start, best effort)."""
        try:
            await asyncio.wait_for(target.start(clean_up=True), CLEAN_UP_TIMEOUT)
        except (TimeoutError, TransientError, PermanentError, OSError) as exc:
            reason = str(exc) or f"not finished within {CLEAN_UP_TIMEOUT:g} s"  # a timeout says ""
            logger.warning("{}: clean-up of what a crash left did not run: {}", target.name, reason)
            return
        self._cleaned.add(target.name)

    async def takeover(self, target: Target) -> OwnerRecord:
        """Make this machine the owner of the id in ``target`` (raises the target's errors)."""
        own = await self.ownership(target)
        record = await own.takeover()
        self._owned.add(target.name)
        self._unreadable.discard(target.name)
        self._unanswered.discard(target.name)
        self.accepted(target.name)
        self._cleaned.discard(target.name)  # clean up before the next upload
        return record

    def lease(self, target_name: str) -> dict[str, Any] | None:
        """``status.lease``: the owner of the id in that target as last read (host, since,
        ours, ...), None before the first check or when no machine owns it yet."""
        own = self._owners.get(target_name)
        return None if own is None else own.status()


def _short(host: str) -> str:
    """A host name without its domain, in lower case."""
    return host.split(".", 1)[0].lower()
