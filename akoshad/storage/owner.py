"""One writer per system id: the owner record ``systems/{system_id}/owner.json``.

A machine is its owner id, a random id kept in ``state_dir/owner_id`` (0600): a second state
directory is another machine, and a machine whose state was lost is a new one that must take
over. The first machine that writes for a system id records itself as its owner; a target
holding uploads but no record (made by an earlier akoshad) is claimed the same way. Any other
machine writes nothing: :class:`NotOwner` names the owner's host and the fix. ``takeover``
overwrites the record with this machine. Prune never deletes the record.

Races. A claim is: read the record; if absent, write ours only if the key is still free
(``ExclusiveCreate``: the local target's hard link, S3's ``If-None-Match: *``), and the
race is settled at once: of two machines exactly one creates the record, and the other
reads it and stops. A target without that (or an S3 server that ignores the condition)
gets the old way: write ours, wait ``settle`` seconds, read it back; last writer wins and
the loser sees another owner on read-back and stops. Two machines can then both believe they
own the id only if one stalled more than ``settle`` between its read and its write while the
other claimed; the next check (at most ``interval`` seconds later, and always before a
prune) then stops the loser. A takeover reaches the old owner the same way:
at its next check, within ``interval`` seconds.

The record is cached: ``check`` re-reads it at most every ``interval`` seconds, unless forced
(daemon start, before each prune). Each re-read is one small GET. A read that fails (the
record damaged, the target not answering) drops the cache: until a read succeeds, every
check reads again and fails, and ``status`` says why instead of the last owner read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from akoshad import __version__
from akoshad.errors import PermanentError, TransientError
from akoshad.names import SYSTEM_ID_RE
from akoshad.private import FILE_MODE, make_private_dirs, sync_entry
from akoshad.storage.documents import DocumentError, DocumentMissing, fetch_stored
from akoshad.targets.base import ExclusiveCreate, Target

OWNER_NAME = "owner.json"
OWNER_ID_FILE = "owner_id"
RECORD_FORMAT = 1
MAX_RECORD_BYTES = 64 * 1024
CHECK_INTERVAL = 60.0
CLAIM_SETTLE = 1.0
_OWNER_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")
HOST_MAX = 255
How = Literal["claim", "legacy", "takeover"]
# a clock that goes on while the machine sleeps and never goes back: Linux's CLOCK_BOOTTIME;
# on macOS clock_gettime's CLOCK_MONOTONIC counts sleep too (``time.monotonic`` does not)
_AWAKE_OR_ASLEEP = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def awake_or_asleep() -> float:
    """Seconds on :data:`_AWAKE_OR_ASLEEP`: the age of an owner check. ``time.monotonic``
    stops while a laptop is suspended, so a check made just before the lid closed counted
    as fresh after days asleep (a takeover made meanwhile not seen by the first upload)."""
    return time.clock_gettime(_AWAKE_OR_ASLEEP)


FIX = (
    "set another cloud_sync.system_id on this machine, or run `akoshad takeover` on the "
    "machine that should own it from now on"
)


class NotOwner(PermanentError):
    """Another machine owns this system id: this one must upload (and prune) nothing."""

    def __init__(self, system_id: str, record: OwnerRecord, my_host: str) -> None:
        if record.host == my_host:
            who = (
                f"another akoshad state on this host ({record.host!r}: a second state_dir, "
                "or this machine's state was lost)"
            )
        else:
            who = f"host {record.host!r}"
        super().__init__(
            f"system_id {system_id!r} is owned by {who} since {record.since}; "
            "this machine uploads nothing",
            fix=FIX,
        )
        self.record = record


class OwnerRecordError(PermanentError):
    """The owner record in the target, or the owner id in the state, cannot be read."""


def _clean_host(host: str) -> str:
    return _UNPRINTABLE.sub("?", host)[:HOST_MAX] or "?"


def this_host() -> str:
    """This machine's host name, for messages (printable ASCII, bounded)."""
    return _clean_host(socket.gethostname())


def owner_key(system_id: str) -> str:
    """``systems/{system_id}/owner.json``."""
    if not SYSTEM_ID_RE.match(system_id):
        raise ValueError(f"invalid system_id {system_id!r}")
    return f"systems/{system_id}/{OWNER_NAME}"


def load_owner_id(state_dir: Path) -> str:
    """This machine's owner id, created (0600, never overwritten) on first use. Blocking."""
    make_private_dirs(state_dir)
    path = state_dir / OWNER_ID_FILE
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        write_owner_id(state_dir, secrets.token_hex(16))
        fd = os.open(path, flags)
    except OSError as exc:
        raise OwnerRecordError(
            f"the owner id {path} cannot be read: {exc.strerror}",
            fix="remove it; this machine then counts as a new one and must run akoshad takeover",
        ) from None
    with os.fdopen(fd) as fh:
        value = fh.read(100).strip()
    if not _OWNER_ID_RE.match(value):
        raise OwnerRecordError(
            f"the owner id in {path} is damaged",
            fix="remove it; this machine then counts as a new one and must run akoshad takeover",
        )
    return value


def write_owner_id(state_dir: Path, owner_id: str) -> bool:
    """Record ``owner_id`` in ``state_dir/owner_id`` (0600) unless an id is there already
    (never replaced); True when this one was written. Blocking."""
    tmp = state_dir / f".{OWNER_ID_FILE}.{secrets.token_hex(4)}.tmp"
    wflags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    with os.fdopen(os.open(tmp, wflags, FILE_MODE), "w") as fh:
        fh.write(owner_id + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, state_dir / OWNER_ID_FILE)  # never replaces an id made meanwhile
    except FileExistsError:
        return False
    finally:
        tmp.unlink()
    # the name outlives a power loss: else the claim made with this id next would name an
    # owner id this machine no longer has, and it would be locked out of its own system id
    sync_entry(state_dir)
    return True


@dataclass(frozen=True)
class Machine:
    """This machine as an owner: its id (from the state) and its host name."""

    owner_id: str
    host: str

    @classmethod
    def from_state(cls, state_dir: Path) -> Machine:
        """Blocking (reads or creates ``state_dir/owner_id``)."""
        return cls(load_owner_id(state_dir), this_host())


@dataclass(frozen=True)
class OwnerRecord:
    """The content of ``owner.json``. ``how``: claim, legacy (claimed a target an earlier
    version wrote) or takeover; ``previous_host``: whom a takeover replaced. The lease has no
    expiry: it holds until another machine runs ``akoshad takeover``."""

    owner_id: str
    host: str
    since: str
    akoshad_version: str
    how: How = "claim"
    previous_host: str | None = None

    def to_bytes(self) -> bytes:
        lease = {"expires": None, "how": self.how, "previous_host": self.previous_host}
        doc = {
            "format": RECORD_FORMAT,
            "owner_id": self.owner_id,
            "host": self.host,
            "since": self.since,
            "akoshad_version": self.akoshad_version,
            "lease": lease,
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode()

    @classmethod
    def parse(cls, data: bytes) -> OwnerRecord:
        """Strict on what matters (``owner_id``, ``host``, ``since``), tolerant of more."""
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError):  # also UnicodeDecodeError, absurd nesting
            raise OwnerRecordError("the owner record is not JSON", fix=_DAMAGED) from None
        if not isinstance(doc, dict):
            raise OwnerRecordError("the owner record is not a JSON object", fix=_DAMAGED)
        fields = [doc.get(f) for f in ("owner_id", "host", "since")]
        if not all(isinstance(v, str) and v for v in fields):
            raise OwnerRecordError("the owner record lacks owner_id, host or since", fix=_DAMAGED)
        raw_lease = doc.get("lease")
        lease: dict[str, Any] = raw_lease if isinstance(raw_lease, dict) else {}
        how: How = lease["how"] if lease.get("how") in ("claim", "legacy", "takeover") else "claim"
        prev = lease.get("previous_host")
        return cls(
            owner_id=str(doc["owner_id"])[:200],
            host=_clean_host(str(doc["host"])),
            since=_UNPRINTABLE.sub("?", str(doc["since"]))[:64],
            akoshad_version=_clean_host(str(doc.get("akoshad_version", "?")))[:40],
            how=how,
            previous_host=_clean_host(prev) if isinstance(prev, str) else None,
        )


_DAMAGED = "run `akoshad takeover` on the machine that should own this system_id"


class Ownership:
    """Checks (and claims) the ownership of one system id in one target, with a cache."""

    def __init__(
        self,
        target: Target,
        system_id: str,
        machine: Machine,
        *,
        interval: float = CHECK_INTERVAL,
        settle: float = CLAIM_SETTLE,
        clock: Callable[[], float] = awake_or_asleep,
    ) -> None:
        self.target = target
        self.system_id = system_id
        self.key = owner_key(system_id)
        self.machine = machine
        self.interval = interval
        self.settle = settle
        self._clock = clock
        self._record: OwnerRecord | None = None
        self._checked_at: float | None = None
        self._checked_wall: str | None = None
        self._unreadable: str | None = None  # why the last read failed (None: it did not)
        # set once this machine's record is written and only the settle is left before it
        # is read back (a caller may prepare work that writes nothing to the target)
        self.settling = asyncio.Event()

    def _mine(self, record: OwnerRecord | None) -> bool:
        return record is not None and record.owner_id == self.machine.owner_id

    async def read(self) -> OwnerRecord | None:
        """The record in the target now (no cache), or None when there is none. A failure
        is remembered (``status``) and drops the cache (the next check reads again)."""
        try:
            try:
                data = await fetch_stored(self.target, self.key, MAX_RECORD_BYTES, "owner record")
            except DocumentMissing:
                return None
            except DocumentError:
                raise OwnerRecordError("the owner record is too large", fix=_DAMAGED) from None
            record = OwnerRecord.parse(data)
        except (PermanentError, TransientError, OSError) as exc:
            self._failed(str(exc))
            raise
        self._remember(record)
        return record

    def _remember(self, record: OwnerRecord | None) -> None:
        self._record = record
        self._checked_at = self._clock()
        self._checked_wall = _now_iso()
        self._unreadable = None

    def _failed(self, why: str) -> None:
        self._checked_at = None
        self._checked_wall = _now_iso()
        self._unreadable = why

    def _new_record(self, how: How, previous: OwnerRecord | None) -> OwnerRecord:
        return OwnerRecord(
            owner_id=self.machine.owner_id,
            host=self.machine.host,
            since=_now_iso(),
            akoshad_version=__version__,
            how=how,
            previous_host=previous.host if previous is not None else None,
        )

    async def _settle(self) -> None:
        if self.settle > 0:
            self.settling.set()
            await asyncio.sleep(self.settle)

    async def _write(self, how: How, previous: OwnerRecord | None) -> OwnerRecord:
        record = self._new_record(how, previous)
        await self.target.put_bytes(self.key, record.to_bytes(), "application/json")
        await self._settle()
        return record

    async def _claim(self, how: How) -> OwnerRecord | None:
        """Record this machine where no machine is recorded; the record found after.

        A target that stores an object only when its key is free (``ExclusiveCreate``)
        settles the race at once: the record is ours, or another machine's is read. Else
        (or when the target cannot tell) the record is written, and read back after the
        settle: the last writer wins."""
        if not isinstance(self.target, ExclusiveCreate):
            await self._write(how, None)
            return await self.read()
        record = self._new_record(how, None)
        made = await self.target.create_exclusive(self.key, record.to_bytes(), "application/json")
        if made == "created":
            self._remember(record)
            return record
        if made == "unchecked":
            await self._settle()
        return await self.read()

    async def _has_uploads(self) -> bool:
        prefix = f"systems/{self.system_id}/uploads/"
        async for _ in self.target.list_keys(prefix):
            return True
        return False

    async def check(self, *, claim: bool = True, force: bool = False) -> OwnerRecord | None:
        """The record, when this machine owns the id; raises :class:`NotOwner` otherwise.

        Re-reads the target when forced or after ``interval`` seconds. With no record: with
        ``claim``, records this machine (then reads it back); without, returns None.
        """
        fresh = self._checked_at is not None and self._clock() - self._checked_at < self.interval
        if force or not fresh:
            await self.read()
        record = self._record
        if record is None and claim:
            how: How = "legacy" if await self._has_uploads() else "claim"
            record = await self._claim(how)
        if record is not None and not self._mine(record):
            raise NotOwner(self.system_id, record, self.machine.host)
        return record

    async def takeover(self) -> OwnerRecord:
        """Make this machine the owner, whoever owned the id. The caller should rebuild its
        chunk ledger from the target afterwards: the old owner may have pruned meanwhile."""
        previous = None
        with contextlib.suppress(OwnerRecordError):
            previous = await self.read()
        if self._mine(previous) and previous is not None and previous.host == self.machine.host:
            return previous  # a record with another host name is written anew (a renamed host)
        await self._write("takeover", previous)
        record = await self.read()
        if record is None or not self._mine(record):
            raise NotOwner(self.system_id, record or _unknown(), self.machine.host)
        return record

    def status(self) -> dict[str, Any] | None:
        """The ``lease`` object for ``status``: owner host, since, ours; None before the
        first check or while no machine owns the id. The last read failed: ``unreadable``
        says why, the owner is unknown (``host``, ``since``, ``ours``, ``how`` null)."""
        record, why = self._record, self._unreadable
        if why is not None:
            return dict.fromkeys(("host", "since", "ours", "how")) | {
                "checked_at": self._checked_wall, "unreadable": why,
            }  # fmt: skip
        if record is None:
            return None
        return {
            "host": record.host,
            "since": record.since,
            "ours": self._mine(record),
            "how": record.how,
            "checked_at": self._checked_wall,
            "unreadable": None,
        }


def _unknown() -> OwnerRecord:
    return OwnerRecord("?", "?", "?", "?")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
