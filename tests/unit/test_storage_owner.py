"""One writer per system id, against the real local target (and once against SeaweedFS)."""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from pathlib import Path
from typing import cast

import pytest

from akoshad.errors import PermanentError
from akoshad.storage.owner import (
    MAX_RECORD_BYTES,
    Machine,
    NotOwner,
    OwnerRecord,
    OwnerRecordError,
    Ownership,
    load_owner_id,
    owner_key,
)
from akoshad.targets.base import ExclusiveCreate, Target
from akoshad.targets.local import LocalTarget
from tests.rclone_s3 import RcloneS3
from tests.s3server import WeedServer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def machine(state: Path, host: str) -> Machine:
    return Machine(load_owner_id(state), host)


def own(target: Target, system_id: str, m: Machine, clock: Clock | None = None) -> Ownership:
    return Ownership(target, system_id, m, settle=0, clock=clock or Clock())


def test_owner_id_is_created_private_once_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = load_owner_id(state)
    assert load_owner_id(state) == first
    assert stat.S_IMODE(os.stat(state / "owner_id").st_mode) == 0o600
    assert load_owner_id(tmp_path / "other") != first  # another state dir: another machine
    (state / "owner_id").write_text("not an id\n")
    with pytest.raises(OwnerRecordError, match="damaged"):
        load_owner_id(state)


async def test_second_machine_is_refused_with_the_owner_host_and_takeover_hands_over(
    tmp_path: Path,
) -> None:
    target = LocalTarget(tmp_path / "outbox")
    a = own(target, "box", machine(tmp_path / "a", "alpha"))
    b = own(target, "box", machine(tmp_path / "b", "beta"))
    record = await a.check()
    assert record is not None and record.host == "alpha" and record.how == "claim"
    with pytest.raises(NotOwner) as refused:
        await b.check()
    line = str(refused.value)
    assert "'alpha'" in line and "akoshad takeover" in line and "system_id" in line
    assert "\n" not in line and isinstance(refused.value, PermanentError)
    assert b.status() == {
        "host": "alpha",
        "since": record.since,
        "ours": False,
        "how": "claim",
        "checked_at": b.status()["checked_at"],  # type: ignore[index]
        "unreadable": None,
    }
    taken = await b.takeover()
    assert taken.host == "beta" and taken.how == "takeover" and taken.previous_host == "alpha"
    with pytest.raises(NotOwner, match="'beta'"):
        await a.check(force=True)
    assert (await b.check()) is not None
    assert b.status() is not None and b.status()["ours"] is True  # type: ignore[index]
    doc = json.loads((tmp_path / "outbox" / owner_key("box")).read_bytes())
    assert {"owner_id", "host", "since", "akoshad_version", "lease"} <= set(doc)


async def test_cache_rereads_only_after_the_interval(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "outbox")
    clock = Clock()
    a = own(target, "box", machine(tmp_path / "a", "alpha"), clock)
    b = own(target, "box", machine(tmp_path / "b", "beta"))
    await a.check()
    await b.takeover()
    clock.now = 59.0
    assert await a.check() is not None  # still cached: no read yet
    clock.now = 61.0
    with pytest.raises(NotOwner):
        await a.check()


async def test_a_check_made_before_a_suspend_is_read_again_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A laptop that checked the record, then slept for two hours while another machine
    took the id over: ``time.monotonic`` does not count a suspend, so the check still
    counted as fresh on waking, and the first upload (and the check before its manifest)
    went ahead. The age of a check is counted on a clock that goes on during sleep."""
    target = LocalTarget(tmp_path / "outbox")
    asleep = {"for": 0.0}
    real = time.clock_gettime
    monkeypatch.setattr(time, "clock_gettime", lambda which: real(which) + asleep["for"])
    a = Ownership(target, "box", machine(tmp_path / "a", "alpha"), settle=0)
    b = own(target, "box", machine(tmp_path / "b", "beta"))
    await a.check()
    await b.takeover()  # while alpha sleeps
    asleep["for"] = 7200.0  # two hours, which time.monotonic does not see
    with pytest.raises(NotOwner, match="'beta'"):
        await a.check()


async def test_same_host_lost_state_is_told_apart(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "outbox")
    await own(target, "box", machine(tmp_path / "a", "alpha")).check()
    with pytest.raises(NotOwner, match="state was lost"):
        await own(target, "box", machine(tmp_path / "a2", "alpha")).check()


async def test_legacy_target_with_uploads_is_claimed_by_the_first_writer(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "outbox")
    await target.put_bytes("systems/box/uploads/u1/manifest.json", b"{}", "application/json")
    a = own(target, "box", machine(tmp_path / "a", "alpha"))
    assert await a.check(claim=False) is None  # a read-only check claims nothing
    assert await target.head(owner_key("box")) is None
    record = await a.check()
    assert record is not None and record.how == "legacy"
    with pytest.raises(NotOwner):
        await own(target, "box", machine(tmp_path / "b", "beta")).check()


class WithoutExclusive:
    """A target that cannot store an object only when its key is free (the old way)."""

    def __init__(self, inner: Target) -> None:
        self._inner = inner
        self.name = inner.name

    def __getattr__(self, name: str) -> object:
        if name == "create_exclusive":
            raise AttributeError(name)
        return getattr(self._inner, name)


async def test_claim_race_loser_sees_the_other_owner(tmp_path: Path) -> None:
    """Both saw no record; b wrote last: a's read-back shows b, so a stops."""
    target = cast(Target, WithoutExclusive(LocalTarget(tmp_path / "outbox")))
    assert not isinstance(target, ExclusiveCreate)
    a = own(target, "box", machine(tmp_path / "a", "alpha"))
    b = own(target, "box", machine(tmp_path / "b", "beta"))
    original = a._write

    async def slow_write(how: str, previous: object) -> object:
        out = await original(how, None)  # type: ignore[arg-type]
        await b._write("claim", None)  # b, which also saw no record, writes last
        return out

    a._write = slow_write  # type: ignore[assignment,method-assign]
    with pytest.raises(NotOwner, match="'beta'"):
        await a.check()
    assert (await b.check()) is not None  # the last writer owns it


async def test_a_damaged_record_names_the_fix(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "outbox")
    await target.put_bytes(owner_key("box"), b"[1, 2]", "application/json")
    a = own(target, "box", machine(tmp_path / "a", "alpha"))
    with pytest.raises(OwnerRecordError, match="takeover"):
        await a.check()
    assert (await a.takeover()).host == "alpha"


async def test_an_oversized_record_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "outbox")
    huge = b'{"owner_id": "' + b"0" * MAX_RECORD_BYTES + b'"}'
    await target.put_bytes(owner_key("box"), huge, "application/json")
    a = own(target, "box", machine(tmp_path / "a", "alpha"))
    with pytest.raises(OwnerRecordError, match="too large"):
        await a.check()
    assert (await a.takeover()).host == "alpha"


async def test_two_machines_on_seaweedfs(s3: WeedServer, system_id: str, tmp_path: Path) -> None:
    target = s3.s3_target(system_id, retry_backoff=0.1, max_retries=1)
    await target.start(clean_up=False)
    try:
        a = own(target, system_id, machine(tmp_path / "a", "alpha"))
        b = own(target, system_id, machine(tmp_path / "b", "beta"))
        assert (await a.check()) is not None
        with pytest.raises(NotOwner, match="'alpha'"):
            await b.check()
        await b.takeover()
        with pytest.raises(NotOwner, match="'beta'"):
            await a.check(force=True)
        assert s3.keys(f"systems/{system_id}/") == [owner_key(system_id)]
    finally:
        await target.close()


async def race_at_the_create(a: Ownership, b: Ownership) -> None:
    """Run ``a.check()`` where b claims between a's read (no record) and a's own write."""
    original = a._has_uploads

    async def b_claims_first() -> bool:
        assert (await b.check()) is not None
        return await original()

    a._has_uploads = b_claims_first  # type: ignore[method-assign]
    await a.check()


async def test_a_claim_is_settled_at_once_where_a_key_can_be_created_only_when_free(
    tmp_path: Path,
) -> None:
    """The local target creates the record only when no other is there: the claim waits
    no settle, and a machine that lost the race stops at once, naming the winner."""
    target = LocalTarget(tmp_path / "outbox")
    a = Ownership(target, "box", machine(tmp_path / "a", "alpha"), settle=30)
    b = Ownership(target, "box", machine(tmp_path / "b", "beta"), settle=30)
    start = time.monotonic()
    with pytest.raises(NotOwner, match="'beta'"):
        await race_at_the_create(a, b)
    assert time.monotonic() - start < 5  # not the 30 s settle
    assert not a.settling.is_set() and not b.settling.is_set()
    record = json.loads((tmp_path / "outbox" / owner_key("box")).read_bytes())
    assert record["host"] == "beta"
    assert (await b.check(force=True)) is not None  # the winner keeps it
    assert [p.name for p in (tmp_path / "outbox" / "systems" / "box").iterdir()] == ["owner.json"]


async def test_a_claim_on_seaweedfs_creates_the_record_only_when_free(
    s3: WeedServer, system_id: str, tmp_path: Path
) -> None:
    """SeaweedFS honours If-None-Match: the first claim learns it with one more small PUT
    (refused: 412) and waits no settle; the loser of a race stops at once."""
    target = s3.s3_target(system_id, retry_backoff=0.1, max_retries=1)
    await target.start(clean_up=False)
    try:
        a = Ownership(target, system_id, machine(tmp_path / "a", "alpha"), settle=30)
        b = Ownership(target, system_id, machine(tmp_path / "b", "beta"), settle=30)
        start = time.monotonic()
        with pytest.raises(NotOwner, match="'beta'"):
            await race_at_the_create(a, b)
        assert time.monotonic() - start < 10
        assert target.conditional_writes is True
        assert not a.settling.is_set() and not b.settling.is_set()
        assert (await b.check(force=True)) is not None
        assert s3.keys(f"systems/{system_id}/") == [owner_key(system_id)]
    finally:
        await target.close()


async def test_a_server_that_ignores_the_condition_gets_the_settle_and_the_read_back(
    tmp_path: Path,
) -> None:
    """rclone's S3 server stores a conditional PUT whatever is there: akoshad finds that out
    (its check PUT is stored too), waits the settle and reads the record back, so the last
    writer still wins and the other machine stops."""
    server = RcloneS3(tmp_path / "rclone")
    server.start()
    target = server.s3_target("box")
    try:
        await target.start(clean_up=False)
        a = Ownership(target, "box", machine(tmp_path / "a", "alpha"), settle=0.2)
        b = Ownership(target, "box", machine(tmp_path / "b", "beta"), settle=0.2)
        original = a._settle

        async def b_writes_during_the_settle() -> None:
            await original()
            await b._write("claim", None)  # b, which also saw no record, writes last

        a._settle = b_writes_during_the_settle  # type: ignore[method-assign]
        with pytest.raises(NotOwner, match="'beta'"):
            await a.check()
        assert target.conditional_writes is False
        assert a.settling.is_set()
        assert (await b.check(force=True)) is not None
        c = Ownership(target, "box", machine(tmp_path / "c", "gamma"), settle=0.2)
        with pytest.raises(NotOwner, match="'beta'"):
            await c.check()
    finally:
        await target.close()
        server.stop()


def test_the_quiet_time_after_a_takeover_outlasts_a_clock_set_back() -> None:
    """A machine whose clock ran 10 minutes ahead took the id over (``since`` dated by it);
    NTP set the clock right a minute later, and its ``prune`` deleted at once (found with
    faketime: the record 10 min ahead counted as long ago), though the previous owner's
    upload let through by its last check may still be landing. The quiet time now runs
    until 5 minutes after the time recorded; a record days ahead still counts as long ago."""
    from datetime import UTC, datetime, timedelta

    from akoshad.storage.owner_takeover import TakeoverSettling, settle_takeover

    now = datetime.now(UTC)

    def record(since: datetime) -> OwnerRecord:
        return OwnerRecord("id", "host", since.isoformat(timespec="seconds"), "0", "takeover")

    for ahead in (timedelta(minutes=10), timedelta(minutes=1), timedelta(minutes=-2)):
        with pytest.raises(TakeoverSettling, match="deletes nothing until"):
            settle_takeover(record(now + ahead), "box", now)
    for long_ago in (timedelta(minutes=-6), timedelta(days=2)):
        settle_takeover(record(now + long_ago), "box", now)


async def test_an_outbox_without_hard_links_is_claimed_and_defended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAT, exFAT, some network and FUSE mounts refuse a hard link (EPERM): the claim was
    refused as 'local target ... is not writable', so nothing was ever uploaded there. It
    now writes the record where none is (``unchecked``) and reads it back."""

    def no_links(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    alpha, beta = machine(tmp_path / "a", "alpha"), machine(tmp_path / "b", "beta")
    monkeypatch.setattr(os, "link", no_links)
    target = LocalTarget(tmp_path / "outbox")
    k = "systems/box/owner.json"
    assert await target.create_exclusive(k, b"{}", "application/json") == "unchecked"
    assert await target.create_exclusive(k, b'{"x": 1}', "application/json") == "exists"
    await target.delete_keys([k])
    record = await own(target, "box", alpha).check()
    assert record is not None and record.host == "alpha" and record.how == "claim"
    with pytest.raises(NotOwner, match="'alpha'"):
        await own(target, "box", beta).check()
    assert [p.name for p in (tmp_path / "outbox" / "systems" / "box").iterdir()] == ["owner.json"]
