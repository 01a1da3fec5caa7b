"""The durable queue, the ledger and the upload history on a real SQLite file."""

from __future__ import annotations

import os
import resource
import sqlite3
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from akoshad.fileio import LiveStat
from akoshad.runtime.health import clock_went_back
from akoshad.storage.refs import ChunkRef
from akoshad.store.db import SCHEMA_VERSION, LedgerEntry, StateDB, StateError
from akoshad.store.records import encode_chunk_ids


@pytest.fixture
async def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    state = StateDB(tmp_path / "state.db")
    await state.open()
    yield state
    await state.close()


def entry(path: str, sha: str = "a" * 64, group: str | None = None) -> LedgerEntry:
    return LedgerEntry(
        target="local",
        path=path,
        group_path=group or path,
        size=10,
        live=LiveStat(11, 1, 2, 3),
        sha256=sha,
        key=f"systems/s/uploads/u1/{path}",
        name=path,
        stored_size=9,
        compression="gzip",
        kind="file",
        upload_id="u1",
    )


async def test_schema_version_and_wal(db: StateDB, tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "state.db")
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("earlier", [False, True])
async def test_the_state_database_is_private_whatever_the_umask(
    tmp_path: Path, earlier: bool
) -> None:
    """It names every store file with its plaintext SHA-256: in a state_dir that already
    existed 0755 (``mkdir -p``), it was 0644 with its -wal and -shm, readable by all."""
    state_dir = tmp_path / "state"
    state_dir.mkdir(mode=0o755)
    path = state_dir / "state.db"
    if earlier:  # made by an earlier version: its files 0644
        con = sqlite3.connect(path)
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("CREATE TABLE t (x)")
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            os.chmod(state_dir / name, 0o644)
    old = os.umask(0o022)
    try:
        state = StateDB(path)
        await state.open()
        await state.enqueue([("reflection.duckdb", "modified")])
    finally:
        os.umask(old)
    try:
        for name in ("state.db", "state.db-wal", "state.db-shm"):
            assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600, name
    finally:
        await state.close()
        if earlier:
            con.close()


async def test_newer_schema_refused(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "s.db")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
    con.close()
    state = StateDB(tmp_path / "s.db")
    with pytest.raises(StateError, match="newer"):
        await state.open()
    await state.close()


async def test_corrupt_state_detected(tmp_path: Path) -> None:
    (tmp_path / "bad.db").write_bytes(b"this is not sqlite at all" * 100)
    state = StateDB(tmp_path / "bad.db")
    with pytest.raises(StateError, match="unusable"):
        await state.open()
    await state.close()


async def test_upsert_keeps_one_row_per_path(db: StateDB) -> None:
    for i in range(5):
        await db.enqueue([("a.json", "modified")], now=100.0 + i)
    await db.enqueue([("b.json", "added")], now=200.0)
    items = await db.queue_items()
    assert [i.path for i in items] == ["a.json", "b.json"]
    a = items[0]
    assert (a.first_seen, a.last_seen, a.seq) == (100.0, 104.0, 5)


async def test_a_change_first_seen_by_a_clock_that_ran_ahead_ages_from_when_seen_again(
    db: StateDB,
) -> None:
    """A change queued while the clock ran a day ahead, and seen again (an event, the hourly
    rescan) once it is right: its wait counts from then, not from a day ahead (an age below
    zero, so ``status --check`` and the AkoshadBehind alert could not see it wait)."""
    now = 1_800_000_000.0
    await db.enqueue([("a.json", "modified")], now=now + 86400)
    await db.enqueue([("a.json", "modified")], now=now)
    (item,) = await db.queue_items()
    assert item.first_seen == now and await db.oldest_queued() == now


async def test_a_retry_is_never_set_further_ahead_than_the_clock_fix_horizon(
    db: StateDB,
) -> None:
    """A server asking to be left alone for two hours (Retry-After) is asked again after
    RETRY_WAIT_MAX: a row due beyond RETRY_HORIZON is taken for one a clock that ran ahead
    dated, and claimed at once, so no retry may be set that far."""
    import time

    from akoshad.store.queue import RETRY_HORIZON, RETRY_WAIT_MAX

    await db.enqueue([("a.json", "modified")], now=time.time() - 1)
    items = await db.claim(now=time.time())
    await db.release(items, retry_at=time.time() + 7200, error="Retry-After: 7200")
    (item,) = await db.queue_items()
    assert item.next_attempt <= time.time() + RETRY_WAIT_MAX < time.time() + RETRY_HORIZON
    assert await db.claim(now=time.time()) == []  # and it is not claimed before then


async def test_claim_counts_attempt_before_work(db: StateDB, tmp_path: Path) -> None:
    await db.enqueue([("a", "added")], now=1.0)
    claimed = await db.claim(now=2.0)
    assert [(c.path, c.attempts, c.state) for c in claimed] == [("a", 1, "in_flight")]
    # persisted: a second connection sees the attempt already
    con = sqlite3.connect(tmp_path / "state.db")
    assert con.execute("SELECT attempts, state FROM queue").fetchone() == (1, "in_flight")
    assert await db.claim(now=3.0) == []


async def test_a_claim_of_many_rows_holds_slotted_items_sharing_their_event_names(
    db: StateDB,
) -> None:
    """A first upload claims up to 100,000 rows at once: their items are slotted (a
    ``__dict__`` each took 100 bytes more) and share one string per event name."""
    await db.enqueue([(f"f{i}", "added") for i in range(3)], now=1.0)
    a, b, _ = await db.claim(now=2.0)
    assert not hasattr(a, "__dict__")
    assert a.event == "added" and a.event is b.event


async def test_release_done_deletes_unless_changed_meanwhile(db: StateDB) -> None:
    await db.enqueue([("a", "added"), ("b", "added")], now=1.0)
    claimed = await db.claim(now=2.0)
    await db.enqueue([("b", "modified")], now=3.0)  # b changed during the pass
    await db.release(claimed, retry_at=None)
    items = await db.queue_items()
    assert [(i.path, i.state, i.attempts) for i in items] == [("b", "pending", 0)]


async def test_release_retry_sets_next_attempt(db: StateDB) -> None:
    await db.enqueue([("a", "added")], now=1.0)
    claimed = await db.claim(now=2.0)
    await db.release(claimed, retry_at=50.0, error="boom")
    assert await db.claim(now=49.0) == []
    again = await db.claim(now=50.0)
    assert again[0].attempts == 2
    assert again[0].last_error == "boom"


async def test_recover_in_flight_after_crash(tmp_path: Path) -> None:
    first = StateDB(tmp_path / "s.db")
    await first.open()
    await first.enqueue([("a", "added")], now=1.0)
    await first.claim(now=2.0)
    await first.close()  # the process "dies" with a row in flight
    second = StateDB(tmp_path / "s.db")
    await second.open()
    assert await second.recover_in_flight() == 1
    assert [i.path for i in await second.claim(now=3.0)] == ["a"]
    await second.close()


async def test_ledger_write_and_remove(db: StateDB) -> None:
    await db.transaction(lambda c: StateDB.write_ledger(c, "local", [entry("a"), entry("b")], []))
    assert set(await db.ledger("local")) == {"a", "b"}
    assert await db.ledger("cloud") == {}
    await db.transaction(lambda c: StateDB.write_ledger(c, "local", [entry("a", "b" * 64)], ["b"]))
    ledger = await db.ledger("local")
    assert set(ledger) == {"a"} and ledger["a"].sha256 == "b" * 64
    assert ledger["a"].live == LiveStat(11, 1, 2, 3)


async def test_ledger_survives_restart(tmp_path: Path) -> None:
    s = StateDB(tmp_path / "s.db")
    await s.open()
    await s.transaction(lambda c: StateDB.write_ledger(c, "local", [entry("x")], []))
    await s.close()
    s2 = StateDB(tmp_path / "s.db")
    await s2.open()
    assert (await s2.ledger("local"))["x"] == entry("x")
    await s2.close()


async def test_upload_history(db: StateDB) -> None:
    await db.begin_upload("u1", "local", "local", {"new": ["a"]})
    assert [u for u, _, _ in await db.in_progress_uploads()] == ["u1"]
    await db.transaction(
        lambda c: StateDB.finish_upload(
            c, upload_id="u1", outcome="completed", files=1, bytes_sent=5
        )
    )
    last = await db.last_upload()
    assert last is not None and (last.upload_id, last.files, last.bytes_sent) == ("u1", 1, 5)
    assert await db.in_progress_uploads() == []
    await db.begin_upload("u2", "local", "local", {})
    await db.fail_upload("u2", "down")
    assert (await db.last_upload()).upload_id == "u1"  # type: ignore[union-attr]
    assert await db.latest_upload_id() == "u2"


async def test_skipped_cleared_when_path_changes(db: StateDB) -> None:
    await db.transaction(lambda c: StateDB.record_skipped(c, {"bad": "permission denied"}))
    assert await db.skipped() == {"bad": "permission denied"}
    await db.enqueue([("bad", "modified")])
    assert await db.skipped() == {}


async def test_integrity_check(db: StateDB) -> None:
    assert await db.integrity_check() == "ok"


async def test_history_is_pruned_to_the_newest(db: StateDB) -> None:
    for i in range(12):
        await db.begin_upload(f"u{i:02d}", "local", "local", {})
        await db.transaction(
            lambda c, i=i: StateDB.finish_upload(c, upload_id=f"u{i:02d}", outcome="completed")  # type: ignore[misc]
        )
    await db.begin_upload("u99", "local", "local", {})  # in progress: never pruned
    await db.transaction(lambda c: StateDB.prune_history(c, keep=5))
    ids = await db.transaction(
        lambda c: [r[0] for r in c.execute("SELECT upload_id FROM uploads ORDER BY upload_id")]
    )
    assert ids == ["u08", "u09", "u10", "u11", "u99"]


async def test_history_keeps_the_uploads_made_last_after_a_clock_ran_ahead(db: StateDB) -> None:
    """A clock that ran ahead dated ``keep`` uploads (ids from 2027); set right, the next
    ids sort before theirs. The history keeps the uploads begun last: before, it kept the
    greatest ids, and each upload made after the clock was set right went with its own
    commit (status and prune then took a day-old upload for the last one made)."""
    ahead = [f"20270101T0000{i:02d}000000Z-aaaaaa" for i in range(5)]
    now = [f"20261204T0000{i:02d}000000Z-bbbbbb" for i in range(3)]
    for upload_id in [*ahead, *now]:
        await db.begin_upload(upload_id, "local", "local", {})

        def commit(c: sqlite3.Connection, upload_id: str = upload_id) -> None:
            StateDB.finish_upload(c, upload_id=upload_id, outcome="completed")
            StateDB.prune_history(c, keep=5)

        await db.transaction(commit)
        last = await db.last_upload()
        assert last is not None and last.upload_id == upload_id
    assert await db.transaction(lambda c: StateDB.last_upload_in(c, "local")) == now[-1]
    ids = await db.transaction(
        lambda c: [r[0] for r in c.execute("SELECT upload_id FROM uploads ORDER BY rowid")]
    )
    assert ids == [*ahead[3:], *now]


async def test_an_upload_made_after_the_clock_went_back_is_named_in_a_warning(db: StateDB) -> None:
    """A clock set back a day: the next upload's id sorts before the one made before it,
    so `restore --latest` anywhere took that older store, and nothing said so (found with
    faketime on a real daemon: --latest restored the file as it was before the jump). The
    status now warns until an upload sorts after it again."""

    async def made(upload_id: str, target: str = "local") -> None:
        await db.begin_upload(upload_id, target, target, {})
        await db.transaction(
            lambda c: StateDB.finish_upload(c, upload_id=upload_id, outcome="completed")
        )

    before, back, right = (
        "20261205T070013000000Z-aaaaaa",
        "20261204T070043000000Z-bbbbbb",
        "20261205T070228000000Z-cccccc",
    )
    await made(before)
    assert clock_went_back(await db.sorts_after_last()) is None
    await made(back)
    warning = clock_went_back(await db.sorts_after_last())
    assert warning is not None
    assert f"the last upload {back} sorts before {before}, made earlier" in warning
    assert f"`restore --latest` takes {before}, the older store" in warning
    assert f"`--upload-id {back}`" in warning
    await made(right)  # the clock set right: the next upload sorts after every one
    assert await db.sorts_after_last() is None
    await made("20261201T000000000000Z-dddddd", "cloud")  # another target's ids: not compared
    assert await db.sorts_after_last() is None
    # what an upload compares its new id with: completed uploads to its target only (an
    # attempt that failed, or one to another target, is no upload `restore --latest` takes)
    await db.begin_upload("20270101T000000000000Z-eeeeee", "local", "local", {})
    assert await db.greatest_completed("local") == right
    assert await db.greatest_completed("cloud") == "20261201T000000000000Z-dddddd"


def _state_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))


async def test_failed_attempts_do_not_keep_their_plans(tmp_path: Path) -> None:
    """A target that refuses writes (its disk full) for weeks: an attempt every 10 minutes,
    each persisting the plan of every changed file before it starts. A finished attempt
    keeps no plan (only an upload in progress needs one, for its recovery): before, each
    failed row kept it, 0.5 MB for a 3,000-file store, and the history's 2,000 rows grew
    the state database by about 70 MB a day up to a GB."""
    plan = {
        "format": 2,
        "live": {f"sessions/s{i:05d}/state.json": [250, i, i, i] for i in range(3000)},
        "groups": {f"sessions/s{i:05d}/state.json": f"sessions/s{i:05d}" for i in range(3000)},
        "removed": [],
        "new": [f"sessions/s{i:05d}/state.json" for i in range(3000)],
    }
    db = StateDB(tmp_path / "state.db")
    await db.open()
    for i in range(60):
        await db.begin_upload(f"u{i:03d}", "local", "local", plan)
        await db.fail_upload(f"u{i:03d}", "local target write failed: No space left on device")
    await db.begin_upload("u999", "local", "local", plan)  # in progress: its plan stays
    assert await db.in_progress_uploads() == [("u999", "local", plan)]
    kept = await db.transaction(
        lambda c: c.execute("SELECT COUNT(*) FROM uploads WHERE manifest IS NOT NULL").fetchone()
    )
    assert kept == (1,)
    await db.close()  # checkpointed: the database file alone
    assert _state_bytes(tmp_path / "state.db") < 2 * 1024 * 1024  # 60 plans: 20 MB


async def test_plans_an_earlier_version_kept_go_at_open(tmp_path: Path) -> None:
    """The finished rows of an earlier akoshad still hold their plans: the next open
    forgets them, and keeps the plan of an upload still in progress."""
    state = StateDB(tmp_path / "state.db")
    await state.open()
    await state.begin_upload("u1", "local", "local", {"new": ["a"]})
    await state.begin_upload("u2", "local", "local", {"new": ["b"]})
    await state.transaction(
        lambda c: c.execute("UPDATE uploads SET outcome = 'failed' WHERE upload_id = 'u1'")
    )
    await state.close()
    state = StateDB(tmp_path / "state.db")
    await state.open()
    rows = await state.transaction(
        lambda c: c.execute("SELECT upload_id, manifest FROM uploads ORDER BY 1").fetchall()
    )
    await state.close()
    assert rows == [("u1", None), ("u2", '{"new": ["b"]}')]


# ---- the chunk table (format 2) ----------------------------------------------------------
PACK_A = "systems/s/packs/aa/" + "a" * 64
PACK_B = "systems/s/packs/bb/" + "b" * 64


def chunk(sha: str, key: str = PACK_A, offset: int = 0) -> ChunkRef:
    return ChunkRef(sha, 100, key, offset, 60, "zstd", "none")


async def test_a_chunk_table_load_shares_its_pack_keys(db: StateDB) -> None:
    """Every pass loads the chunk table whole: 200,000 chunks took 102 MB (126 at its
    peak, the rows fetched at once beside them). The chunks of a pack share one key
    string, the codecs one name each, the identity is the ref's own: 54 MB."""
    refs = [chunk("1" * 64), chunk("2" * 64, offset=60)]
    await db.transaction(lambda c: StateDB.write_chunks(c, "local", refs))
    table = await db.chunks_of("local")
    a, b = table["1" * 64], table["2" * 64]
    assert a.key is b.key and a.compression is b.compression and a.encryption is b.encryption
    assert next(iter(table)) is a.sha256


async def test_chunk_table_upsert_forget_and_orphan_packs(db: StateDB) -> None:
    c1, c2, c3 = chunk("1" * 64), chunk("2" * 64, offset=60), chunk("3" * 64, PACK_B)
    await db.transaction(lambda c: StateDB.write_chunks(c, "local", [c1, c2, c3]))
    assert await db.chunks_of("local") == {r.sha256: r for r in (c1, c2, c3)}
    assert await db.chunks_of("cloud") == {}  # per target
    moved = chunk("2" * 64, PACK_B, 60)
    await db.record_chunks("local", [moved])  # a repack moved c2
    assert (await db.chunks_of("local"))["2" * 64] == moved
    assert await db.forget_pack("local", PACK_A) == 1  # only c1 still lived there
    assert set(await db.chunks_of("local")) == {"2" * 64, "3" * 64}
    # the packs an attempt sealed: the ones no chunk lives in are its orphans
    await db.add_upload_pack("u1", PACK_A)
    await db.add_upload_pack("u1", PACK_B)
    assert await db.orphan_packs("local", "u1") == [PACK_A]
    await db.transaction(lambda c: StateDB.forget_upload_packs(c, "u1"))
    assert await db.orphan_packs("local", "u1") == []


async def test_known_documents_are_kept_per_target(db: StateDB) -> None:
    assert await db.known_documents("local") is None  # not known
    await db.transaction(lambda c: StateDB.set_documents(c, "local", ["k2", "k1"]))
    assert await db.known_documents("local") == {"k1", "k2"}
    assert await db.known_documents("cloud") is None
    await db.transaction(lambda c: StateDB.set_documents(c, "cloud", []))
    assert await db.known_documents("cloud") == frozenset()  # known: none
    await db.forget_documents("local")
    assert await db.known_documents("local") is None


async def test_a_chunked_ledger_row_keeps_its_chunk_ids(db: StateDB) -> None:
    row = replace(entry("big"), key="", chunks=encode_chunk_ids([("1" * 64, 5), ("2" * 64, 5)]))
    await db.transaction(lambda c: StateDB.write_ledger(c, "local", [row, entry("a")], []))
    ledger = await db.ledger("local")
    assert ledger["big"] == row and ledger["big"].chunk_ids == [("1" * 64, 5), ("2" * 64, 5)]
    assert ledger["a"].chunks is None


async def test_the_wal_shrinks_back_after_a_large_transaction(tmp_path: Path) -> None:
    """A first upload of a large store is one large transaction; the WAL it grew is cut
    back once checkpointed, not kept at that size while the daemon runs."""
    from akoshad.store.db import WAL_SIZE_LIMIT

    state = StateDB(tmp_path / "state.db")
    await state.open()
    try:
        big = [(f"k{i}", "v" * 2000) for i in range(6000)]  # ~12 MB of pages
        await state.transaction(lambda c: c.executemany("INSERT INTO kv VALUES (?, ?)", big))
        wal = tmp_path / "state.db-wal"
        assert wal.stat().st_size > 3 * WAL_SIZE_LIMIT

        def small(c: sqlite3.Connection) -> None:
            c.execute("INSERT OR REPLACE INTO kv VALUES ('x', 'y')")

        for _ in range(3):  # the next writes start the checkpointed WAL over
            await state.transaction(small)
        assert wal.stat().st_size <= WAL_SIZE_LIMIT
    finally:
        await state.close()


async def test_a_full_disk_at_open_keeps_the_state_as_it_is(tmp_path: Path) -> None:
    """The state's disk full when the daemon starts (SQLite: 'disk I/O error' making its
    -shm): the database was called unusable, set aside as state.db.corrupt-... and a new
    one begun, losing the queue and the ledger. Now it is left as it is, and said so."""
    path = tmp_path / "state.db"
    state = StateDB(path)
    await state.open()
    await state.enqueue([("a.json", "modified")], now=100.0)
    await state.close()
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, limits[1]))  # files stop at 1 KiB
    try:
        full = StateDB(path)
        with pytest.raises(StateError, match="cannot be opened") as info:
            await full.open()
        await full.close()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    assert not info.value.corrupt and "nothing was changed" in str(info.value)
    again = StateDB(path)
    await again.open()
    assert [i.path for i in await again.queue_items()] == ["a.json"]
    await again.close()


async def test_a_ledger_load_shares_its_repeating_strings(db: StateDB) -> None:
    """The daemon loads the ledger whole (reconcile, plan): a store of 200,000 files took
    231 MB for it, 13 objects a row, and the daemon's start peaked at 704 MB, past the
    service's MemoryMax=512M. Entries are slotted, and the values that repeat from row to
    row (target, compression, kind, upload id, facts) are one string per load: 138 MB."""
    rows = [replace(entry(f"f{i}.json"), facts='{"json_ok": true}') for i in range(3)]
    await db.transaction(lambda c: db.write_ledger(c, "local", rows, []))
    a, b, _ = (await db.ledger("local")).values()
    assert not hasattr(a, "__dict__") and not hasattr(a.live, "__dict__")
    for col in ("target", "compression", "kind", "upload_id", "facts"):
        assert getattr(a, col) is getattr(b, col), col
    assert a.group_path is a.path


async def test_a_ledger_load_shares_its_equal_ints(db: StateDB) -> None:
    """A small file's stored and live sizes are its size, and a store's files have a few
    modes: one int object each (three ints a row fewer: 100,000 rows took 8 MB less)."""
    big = 70_000  # ints past 256 are not cached by Python
    rows = [
        replace(entry(f"f{i}.json"), size=big + i, stored_size=big + i, mode=0o644)
        for i in range(2)
    ]
    rows = [replace(r, live=LiveStat(r.size, 1, 2, 3)) for r in rows]
    await db.transaction(lambda c: db.write_ledger(c, "local", rows, []))
    a, b = (await db.ledger("local")).values()
    assert a.stored_size is a.size and a.live.size is a.size
    assert a.mode == 0o644 and a.mode is b.mode
