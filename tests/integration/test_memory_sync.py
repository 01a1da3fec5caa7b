"""MemorySync with a real state DB, a real snapshot file and the fake Akosha (subprocess)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
import pytest

from akoshad.akosha.client import AkoshaClient
from akoshad.akosha.vectors import EMBED_DIM, REASON_NO_EMBEDDING
from akoshad.errors import PermanentError, TransientError
from akoshad.pipeline.chain import BreakerState, CircuitBreaker
from akoshad.pipeline.memory_sync import REJECTED_PREFIX, DeliveryInterrupted, MemorySync
from akoshad.store.db import StateDB
from tests.akosha_fixtures import (
    EMB_SQL,
    AkoshaServer,
    add_rows,
    free_port,
    insert_sql,
    make_reflection_db,
)

SYSTEM = "testbox"


async def no_sleep(_: float) -> None:
    return None


class Rig:
    """A state DB, a snapshot file, and MemorySync instances over them (one per 'run')."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp = tmp
        self.url = url
        self.snapshot = make_reflection_db(tmp / "reflection.duckdb")
        self.state_path = tmp / "state" / "state.db"
        self.opened: list[tuple[StateDB, AkoshaClient]] = []

    async def sync(self, client_timeout: float = 5, **kwargs: object) -> MemorySync:
        """A fresh 'daemon run': new StateDB connection, new client, new MemorySync."""
        state = StateDB(self.state_path)
        await state.open()
        client = AkoshaClient(self.url, timeout=client_timeout, connect_timeout=client_timeout)
        await client.start()
        self.opened.append((state, client))
        kwargs.setdefault("sleep", no_sleep)
        return MemorySync(state, client, SYSTEM, **kwargs)  # type: ignore[arg-type]

    async def close(self) -> None:
        for state, client in self.opened:
            await client.close()
            await state.close()
        self.opened.clear()


@pytest.fixture
async def rig(tmp_path: Path, akosha_server: AkoshaServer) -> AsyncIterator[Rig]:
    r = Rig(tmp_path, akosha_server.url)
    try:
        yield r
    finally:
        await r.close()


def remove_db(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def ids(prefix: str, start: int, stop: int) -> set[str]:
    return {f"{SYSTEM}:{prefix}{i:06d}" for i in range(start, stop)}


async def test_exactly_once_across_restarts(rig: Rig, akosha_server: AkoshaServer) -> None:
    add_rows(rig.snapshot, "conversations_v2", 0, 30)
    add_rows(rig.snapshot, "reflections_v2", 0, 10)
    add_rows(rig.snapshot, "conversations_v2", 30, 33, embedding="null")

    sync = await rig.sync(max_items=7)
    report = await sync.deliver(rig.snapshot)
    assert report.delivered == 40 and report.duplicates == 0
    assert report.requests == 6  # 40 rows in batches of 7
    assert set(report.skipped) == ids("c", 30, 33)
    assert akosha_server.stored() == ids("c", 0, 30) | ids("r", 0, 10)
    status = await sync.status()
    assert (status["delivered"], status["skipped"]) == (40, 3)
    assert status["last_error"] is None
    await rig.close()

    # a new run on the same state: nothing is sent again
    sync = await rig.sync(max_items=7)
    report = await sync.deliver(rig.snapshot)
    assert (report.delivered, report.requests, report.already) == (0, 0, 40)
    assert report.skipped == {}  # already recorded, not counted again
    assert (await sync.status())["skipped"] == 3

    # new rows: exactly those go
    add_rows(rig.snapshot, "conversations_v2", 33, 38)
    report = await sync.deliver(rig.snapshot)
    assert report.delivered == 5 and report.requests == 1
    sent = akosha_server.sent_counts()
    assert set(sent) == ids("c", 0, 30) | ids("r", 0, 10) | ids("c", 33, 38)
    assert set(sent.values()) == {1}, "a memory was sent twice"
    # the skipped rows never went out
    assert not set(sent) & ids("c", 30, 33)


async def test_stored_memories_look_like_akosha_expects(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    add_rows(rig.snapshot, "conversations_v2", 0, 1)
    add_rows(rig.snapshot, "reflections_v2", 5, 6)
    sync = await rig.sync()
    await sync.deliver(rig.snapshot)
    calls = akosha_server.calls()
    assert len(calls) == 1 and calls[0]["status"] == "completed"
    assert sorted(calls[0]["ids"]) == ["testbox:c000000", "testbox:r000005"]


async def test_skipped_rows_are_counted_and_reconsidered_when_fixed(
    tmp_path: Path, akosha_server: AkoshaServer
) -> None:
    rig = Rig(tmp_path, akosha_server.url)
    rig.snapshot.unlink()
    make_reflection_db(rig.snapshot, embedding_type="FLOAT[]")
    add_rows(rig.snapshot, "conversations_v2", 0, 3)
    add_rows(rig.snapshot, "conversations_v2", 3, 5, embedding="null")
    add_rows(rig.snapshot, "conversations_v2", 5, 6, embedding="short")
    add_rows(rig.snapshot, "reflections_v2", 0, 1, embedding="nan")
    try:
        sync = await rig.sync()
        report = await sync.deliver(rig.snapshot)
        assert report.delivered == 3
        assert report.skipped == {
            "testbox:c000003": REASON_NO_EMBEDDING,
            "testbox:c000004": REASON_NO_EMBEDDING,
            "testbox:c000005": f"embedding has 10 dimensions, expected {EMBED_DIM}",
            "testbox:r000000": "embedding has non-finite values",
        }
        assert (await sync.status())["skipped"] == 4
        assert sync.skipped_since_start == 4
        # skipped rows are not retried: a second pass sends nothing and counts nothing new
        again = await sync.deliver(rig.snapshot)
        assert (again.requests, again.skipped) == (0, {})
        # session-buddy fills in the missing embedding later: the row goes out then
        con = duckdb.connect(str(rig.snapshot))
        con.execute(
            f"UPDATE conversations_v2 SET embedding = {EMB_SQL.format(dim=384)} "
            "FROM range(1) t(i) WHERE id = 'c000003'"
        )
        con.close()
        fixed = await sync.deliver(rig.snapshot)
        assert fixed.delivered == 1
        assert "testbox:c000003" in akosha_server.stored()
        assert (await sync.status())["skipped"] == 3
    finally:
        await rig.close()


async def test_one_unconvertible_vector_does_not_block_the_others(
    tmp_path: Path, akosha_server: AkoshaServer
) -> None:
    """An embedding column of text lists (a session-buddy upgrade or a hand-made store)
    with one value that is no number: that row is skipped; the others still go."""
    rig = Rig(tmp_path, akosha_server.url)
    rig.snapshot.unlink()
    make_reflection_db(rig.snapshot, embedding_type="VARCHAR[]")
    add_rows(rig.snapshot, "conversations_v2", 0, 3)
    con = duckdb.connect(str(rig.snapshot))
    con.execute(
        "UPDATE conversations_v2 SET embedding = list_transform(range(384), "
        "lambda x: CASE WHEN x = 3 THEN 'n/a' ELSE '0.5' END) WHERE id = 'c000001'"
    )
    con.close()
    try:
        sync = await rig.sync()
        report = await sync.deliver(rig.snapshot)
        assert report.delivered == 2
        assert report.skipped == {"testbox:c000001": "embedding has non-finite values"}
        assert akosha_server.stored() == {"testbox:c000000", "testbox:c000002"}
    finally:
        await rig.close()


async def test_a_vector_with_a_null_value_is_skipped_once(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    """A NULL inside the vector is caught when the rows are listed, as NaN is: not found
    only when the row is loaded, so that every pass lists it as sendable, loads it, skips
    it again and counts it again."""
    add_rows(rig.snapshot, "conversations_v2", 0, 2)
    con = duckdb.connect(str(rig.snapshot))
    con.execute(
        "UPDATE conversations_v2 SET embedding = list_transform(range(384), "
        "lambda x: CASE WHEN x = 3 THEN NULL ELSE 0.5::FLOAT END) WHERE id = 'c000001'"
    )
    con.close()
    sync = await rig.sync()
    report = await sync.deliver(rig.snapshot)
    assert report.delivered == 1
    assert report.skipped == {"testbox:c000001": "embedding has non-finite values"}
    again = await sync.deliver(rig.snapshot)
    assert (again.pending, again.requests, again.skipped) == (0, 0, {})
    assert sync.skipped_since_start == 1


def same_id_in_both_tables(snapshot: Path, conversation: str, reflection: str) -> None:
    """Row ``dup`` in both tables, with these embedding SQL expressions."""
    con = duckdb.connect(str(snapshot))
    con.execute(insert_sql("conversations_v2", 0, 1, conversation, "'said'"))
    con.execute(insert_sql("reflections_v2", 0, 1, reflection, "'thought'"))
    for table in ("conversations_v2", "reflections_v2"):
        con.execute(f"UPDATE {table} SET id = 'dup'")
    con.close()


async def test_an_id_in_both_tables_goes_out_from_the_row_that_has_an_embedding(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    """The conversation has no vector, the reflection with the same id has one: the
    reflection is that memory (it is the only row of the id that can be stored)."""
    same_id_in_both_tables(rig.snapshot, "NULL", EMB_SQL.format(dim=384))
    sync = await rig.sync()
    report = await sync.deliver(rig.snapshot)
    assert report.delivered == 1
    assert akosha_server.state()["texts"] == {"testbox:dup": "thought"}
    again = await sync.deliver(rig.snapshot)
    assert (again.requests, again.skipped) == (0, {})


async def test_an_id_in_both_tables_that_neither_can_send_is_skipped_once(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    """Two rows of one id, neither sendable: one skip record, not rewritten every pass
    with the other row's reason (counted anew each time)."""
    nan = "list_transform(range(384), lambda x: 'nan'::FLOAT)"
    same_id_in_both_tables(rig.snapshot, "NULL", nan)
    sync = await rig.sync()
    first = await sync.deliver(rig.snapshot)
    assert first.skipped == {"testbox:dup": REASON_NO_EMBEDDING}
    for _ in range(2):
        again = await sync.deliver(rig.snapshot)
        assert (again.requests, again.skipped) == (0, {})
    assert sync.skipped_since_start == 1


async def test_partial_result_resends_only_the_failed_ids(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    add_rows(rig.snapshot, "conversations_v2", 0, 10)
    akosha_server.fail({"testbox:c000002": 1, "testbox:c000007": 2})
    sync = await rig.sync()
    report = await sync.deliver(rig.snapshot)
    assert report.delivered == 10
    assert report.requests == 3  # all, then the 2 failed, then the 1 still failing
    assert report.retried == 3
    sent = akosha_server.sent_counts()
    assert sent["testbox:c000002"] == 2
    assert sent["testbox:c000007"] == 3
    assert all(n == 1 for k, n in sent.items() if k not in ("testbox:c000002", "testbox:c000007"))
    assert [len(c["ids"]) for c in akosha_server.calls()] == [10, 2, 1]


async def test_a_row_that_keeps_failing_stays_pending_and_is_sent_again(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    """An error that is no rejection of the row (a lock, a write conflict) leaves the
    memory pending after the quick retries: held back, shown in status, sent again at the
    next delivery (also by a new run) until Akosha stores it; never recorded as skipped."""
    add_rows(rig.snapshot, "conversations_v2", 0, 5)
    error = "TransactionContext Error: Catalog write-write conflict"
    akosha_server.fail({"testbox:c000001": 4}, error=error)
    sync = await rig.sync(item_retries=2)
    report = await sync.deliver(rig.snapshot)
    assert report.delivered == 4 and report.skipped == {}
    assert report.held == {"testbox:c000001": error}
    assert akosha_server.sent_counts()["testbox:c000001"] == 3
    status = await sync.status()
    assert (status["held"], status["skipped"]) == (1, 0)
    assert status["held_first"] == f"testbox:c000001: {error}"
    assert report.as_dict()["held"] == 1
    await rig.close()

    sync = await rig.sync(item_retries=2)  # a restart: the memory is still pending
    again = await sync.deliver(rig.snapshot)
    assert (again.pending, again.delivered, again.held, again.skipped) == (1, 1, {}, {})
    assert akosha_server.sent_counts()["testbox:c000001"] == 5
    assert "testbox:c000001" in akosha_server.stored()
    status = await sync.status()
    assert (status["held"], status["held_first"], status["delivered"]) == (0, None, 5)


@pytest.mark.parametrize(
    "error",
    [
        "Invalid Input Error: storage temporarily unavailable",
        "ingestion backlog too large, try again later",
        "value must be retried",
    ],
)
async def test_free_text_that_looks_like_a_rejection_is_transient(
    rig: Rig, akosha_server: AkoshaServer, error: str
) -> None:
    """A batch Akosha stored none of stays transient whatever its error says; a word
    such as "invalid" or "too large" does not drop the memories."""
    add_rows(rig.snapshot, "conversations_v2", 0, 2)
    akosha_server.fail({i: 1 for i in ids("c", 0, 2)}, error=error)
    sync = await rig.sync(item_retries=0)
    with pytest.raises(DeliveryInterrupted, match="stored none"):
        await sync.deliver(rig.snapshot)
    assert (await sync.status())["skipped"] == 0
    report = await sync.deliver(rig.snapshot)
    assert (report.delivered, report.skipped) == (2, {})
    assert akosha_server.stored() == ids("c", 0, 2)


async def test_a_memory_an_older_akoshad_gave_up_on_is_sent_again(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    """A skip recorded for a passing error (``... (after 3 attempts)``) by an akoshad that
    dropped such memories is no rejection: the memory goes out again. A real rejection
    and a memory too large stay skipped."""
    add_rows(rig.snapshot, "conversations_v2", 0, 3)
    sync = await rig.sync()
    await sync.state.mark_memories_skipped(
        {
            "testbox:c000000": REJECTED_PREFIX + "database is locked (after 3 attempts)",
            "testbox:c000001": REJECTED_PREFIX + "Embedding dim mismatch: expected 384",
            "testbox:c000002": REJECTED_PREFIX + "Akosha answered tools/call with HTTP 413: x",
        }
    )
    report = await sync.deliver(rig.snapshot)
    assert (report.pending, report.delivered) == (1, 1)
    assert akosha_server.stored() == {"testbox:c000000"}
    assert (await sync.status())["skipped"] == 2


async def test_rows_akosha_rejects_outright_are_skipped_at_once(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    add_rows(rig.snapshot, "conversations_v2", 0, 3)
    akosha_server.fail({"testbox:c000000": 100}, error="Embedding dim mismatch: expected 384")
    sync = await rig.sync()
    report = await sync.deliver(rig.snapshot)
    assert report.delivered == 2 and report.requests == 1
    assert report.skipped == {
        "testbox:c000000": REJECTED_PREFIX + "Embedding dim mismatch: expected 384"
    }


async def test_akosha_that_rejects_every_memory_is_failing_not_the_rows(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    """An Akosha set up for another embedding size rejects every memory ('embedding dim
    mismatch (expected 768, got 384)'): that is Akosha failing, not rows to skip for good.
    Nothing is skipped, the delivery fails (run --once exit 1, degraded), and once Akosha
    is set right every memory is delivered."""
    add_rows(rig.snapshot, "conversations_v2", 0, 5)
    error = "HotStore.insert: embedding dim mismatch (expected 768, got 384)"
    akosha_server.fail({i: 3 for i in ids("c", 0, 5)}, error=error)
    sync = await rig.sync(item_retries=2)
    with pytest.raises(DeliveryInterrupted, match="stored none of 5 memories: HotStore"):
        await sync.deliver(rig.snapshot)
    status = await sync.status()
    assert (status["delivered"], status["skipped"]) == (0, 0)
    report = await sync.deliver(rig.snapshot)  # Akosha set right
    assert report.delivered == 5 and not report.skipped
    assert akosha_server.stored() == ids("c", 0, 5)


async def test_duplicate_key_counts_as_delivered(rig: Rig, akosha_server: AkoshaServer) -> None:
    add_rows(rig.snapshot, "conversations_v2", 0, 6)
    # Akosha already holds three of them (e.g. the state DB was lost)
    sync = await rig.sync()
    first = await sync.deliver(rig.snapshot)
    assert first.delivered == 6
    await rig.close()
    await asyncio.to_thread(remove_db, rig.state_path)
    sync = await rig.sync()
    report = await sync.deliver(rig.snapshot)
    assert report.delivered == 6 and report.duplicates == 6
    assert (await sync.status())["delivered"] == 6
    again = await sync.deliver(rig.snapshot)
    assert again.requests == 0


async def test_whole_batch_failure_keeps_progress_and_raises(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    add_rows(rig.snapshot, "conversations_v2", 0, 30)
    # the third batch fails as a whole (3 attempts: first try + 2 retries)
    akosha_server.fail({f"testbox:c{i:06d}": 3 for i in range(20, 30)}, error="database locked")
    sync = await rig.sync(max_items=10, item_retries=2)
    with pytest.raises(DeliveryInterrupted) as info:
        await sync.deliver(rig.snapshot)
    assert isinstance(info.value, TransientError)
    assert info.value.report.delivered == 20
    assert "database locked" in str(info.value)
    status = await sync.status()
    assert status["delivered"] == 20 and status["skipped"] == 0
    assert status["last_error"] and "database locked" in status["last_error"]
    # the next pass sends only the 10 that are missing
    report = await sync.deliver(rig.snapshot)
    assert report.delivered == 10 and report.already == 20
    sent = akosha_server.sent_counts()
    assert all(sent[i] == 1 for i in ids("c", 0, 20))
    assert all(sent[i] == 4 for i in ids("c", 20, 30))
    assert (await sync.status())["last_error"] is None


async def test_server_killed_mid_delivery_loses_nothing(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    add_rows(rig.snapshot, "conversations_v2", 0, 60)
    akosha_server.delay(0.15)
    sync = await rig.sync(max_items=10)

    async def kill_after_two_batches() -> None:
        for _ in range(1000):  # 10 s at most
            if (await sync.state.memory_counts())[0] >= 20:
                break
            await asyncio.sleep(0.01)
        await asyncio.to_thread(akosha_server.kill)

    killer = asyncio.create_task(kill_after_two_batches())
    try:
        with pytest.raises(DeliveryInterrupted) as info:
            await sync.deliver(rig.snapshot)
    finally:
        await killer
    done = info.value.report.delivered
    assert 20 <= done < 60
    assert (await sync.status())["delivered"] == done

    await asyncio.to_thread(akosha_server.start)  # same port, empty store (like Akosha)
    report = await sync.deliver(rig.snapshot)
    assert report.delivered == 60 - done
    assert len(akosha_server.stored()) == 60 - done  # the confirmed ones were not resent
    sent = akosha_server.sent_counts()
    confirmed = await sync.state.delivered_ids(ids("c", 0, 60))
    assert len(confirmed) == 60
    assert sum(sent.values()) <= 60 + 10  # at most the batch in flight went twice


async def test_server_down_fails_fast_and_the_breaker_saves_the_next_calls(
    tmp_path: Path, akosha_server: AkoshaServer
) -> None:
    now = [100.0]
    breaker = CircuitBreaker("http", failure_threshold=1, reset_timeout=30, clock=lambda: now[0])
    await asyncio.to_thread(akosha_server.stop)
    rig = Rig(tmp_path, akosha_server.url)
    add_rows(rig.snapshot, "conversations_v2", 0, 5)
    try:
        sync = await rig.sync(breaker=breaker, client_timeout=30)  # a hang would take 30 s
        started = time.monotonic()
        with pytest.raises(DeliveryInterrupted, match="cannot connect"):
            await sync.deliver(rig.snapshot)
        dead_s = time.monotonic() - started
        assert state_of(breaker) is BreakerState.OPEN
        started = time.monotonic()
        with pytest.raises(DeliveryInterrupted, match="circuit open"):
            await sync.deliver(rig.snapshot)
        open_s = time.monotonic() - started
        status = await sync.status()
        assert status["circuit"]["state"] == "open"
        assert "cannot connect" in status["last_error"]
        print(
            f"\ndeliver to a dead endpoint: {dead_s * 1000:.0f} ms; circuit open: "
            f"{open_s * 1000:.1f} ms"
        )
        # refused at once, not waited out (the client's timeouts are 30 s); a slow CI machine
        # takes about a second here for opening the snapshot and the state
        assert dead_s < 10 and open_s < 2

        # Akosha comes back; after the interval one probe closes the circuit
        await asyncio.to_thread(akosha_server.start)
        assert state_of(breaker) is BreakerState.OPEN
        now[0] += 30
        assert state_of(breaker) is BreakerState.HALF_OPEN
        report = await sync.deliver(rig.snapshot)
        assert report.delivered == 5
        assert state_of(breaker) is BreakerState.CLOSED
        assert akosha_server.stored() == ids("c", 0, 5)
    finally:
        await rig.close()


async def test_the_circuit_closes_again_behind_a_proxy_without_healthz(
    tmp_path: Path, akosha_server: AkoshaServer
) -> None:
    """Akosha published under a path by a reverse proxy that forwards only its MCP
    endpoint: ``/healthz`` on the origin answers 404. After an outage the half-open probe
    must not take that 404 for "down" forever (no memory would reach Akosha again until
    akoshad restarts): the call itself decides."""
    from aiohttp import ClientSession, web

    from tests.helpers import served

    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        try:
            async with (
                ClientSession() as up,
                up.request(
                    request.method, akosha_server.url, data=await request.read(), headers=headers
                ) as resp,
            ):
                body = await resp.read()
                keep = ("content-type", "mcp-session-id")
                out = {k: v for k, v in resp.headers.items() if k.lower() in keep}
                return web.Response(status=resp.status, body=body, headers=out)
        except OSError:
            return web.Response(status=502, text="Bad Gateway")

    app = web.Application()
    app.router.add_route("*", "/akosha/mcp", forward)
    now = [100.0]
    breaker = CircuitBreaker("http", failure_threshold=1, reset_timeout=30, clock=lambda: now[0])
    async with served(app) as base:
        rig = Rig(tmp_path, f"{base}/akosha/mcp")
        add_rows(rig.snapshot, "conversations_v2", 0, 3)
        try:
            sync = await rig.sync(breaker=breaker)
            assert (await sync.deliver(rig.snapshot)).delivered == 3
            add_rows(rig.snapshot, "conversations_v2", 3, 5)
            await asyncio.to_thread(akosha_server.stop)
            with pytest.raises(DeliveryInterrupted, match="502"):
                await sync.deliver(rig.snapshot)
            assert state_of(breaker) is BreakerState.OPEN
            await asyncio.to_thread(akosha_server.start)
            now[0] += 30
            report = await sync.deliver(rig.snapshot)
            assert report.delivered == 2
            assert state_of(breaker) is BreakerState.CLOSED
        finally:
            await rig.close()


async def test_akosha_that_stores_nothing_opens_the_circuit(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    """Akosha answers every call, but stores none of the memories (status failed): that is
    Akosha failing. The circuit opens after its threshold of such passes instead of being
    closed again by each answer, which had every pass resend at the base retry interval."""
    now = [100.0]
    breaker = CircuitBreaker("http", failure_threshold=3, reset_timeout=30, clock=lambda: now[0])
    add_rows(rig.snapshot, "conversations_v2", 0, 5)
    akosha_server.fail({i: 100 for i in ids("c", 0, 5)}, error="temporary storage error")
    sync = await rig.sync(breaker=breaker, item_retries=2)
    for _ in range(3):
        with pytest.raises(DeliveryInterrupted, match="temporary storage error"):
            await sync.deliver(rig.snapshot)
    assert state_of(breaker) is BreakerState.OPEN
    calls = len(akosha_server.calls())
    with pytest.raises(DeliveryInterrupted, match="circuit open"):
        await sync.deliver(rig.snapshot)
    assert len(akosha_server.calls()) == calls
    # a probe that stores nothing does not close it either
    now[0] += 30
    with pytest.raises(DeliveryInterrupted, match="temporary storage error"):
        await sync.deliver(rig.snapshot)
    assert state_of(breaker) is BreakerState.OPEN


def state_of(breaker: CircuitBreaker) -> BreakerState:
    return breaker.state


async def test_half_open_probe_failure_reopens_without_sending(tmp_path: Path) -> None:
    now = [0.0]
    breaker = CircuitBreaker("http", failure_threshold=1, reset_timeout=10, clock=lambda: now[0])
    rig = Rig(tmp_path, f"http://127.0.0.1:{free_port()}/mcp")
    add_rows(rig.snapshot, "conversations_v2", 0, 2)
    try:
        sync = await rig.sync(breaker=breaker)
        breaker.record_failure("down", permanent=True)
        now[0] += 10
        with pytest.raises(DeliveryInterrupted, match="still unavailable"):
            await sync.deliver(rig.snapshot)
        assert state_of(breaker) is BreakerState.OPEN
        assert breaker.interval == 20
    finally:
        await rig.close()


async def test_a_batch_too_large_for_the_transport_is_split(
    rig: Rig, akosha_server: AkoshaServer
) -> None:
    add_rows(rig.snapshot, "conversations_v2", 0, 120, pad=40_000)  # ~5.6 MB as one batch
    sync = await rig.sync(max_bytes=64 * 1024 * 1024)
    report = await sync.deliver(rig.snapshot)
    assert report.delivered == 120
    assert report.requests >= 3  # one 413, then halves
    assert akosha_server.stored() == ids("c", 0, 120)


async def test_conversations_for_cloud(rig: Rig) -> None:
    add_rows(rig.snapshot, "conversations_v2", 0, 4)
    add_rows(rig.snapshot, "reflections_v2", 0, 2)
    add_rows(rig.snapshot, "conversations_v2", 4, 5, embedding="null")
    sync = await rig.sync(load_chunk=3)
    got = await sync.conversations_for_cloud(rig.snapshot, "u1")
    assert got is not None
    path, count, memory_ids = got
    assert path.parent == rig.snapshot.parent and path.stat().st_mode & 0o077 == 0
    data = path.read_bytes()
    assert count == 6 and set(memory_ids) == ids("c", 0, 4) | ids("r", 0, 2)
    doc = json.loads(data)
    assert [c["id"] for c in doc["conversations"]] == memory_ids
    assert all(len(c["embedding"]) == EMBED_DIM for c in doc["conversations"])
    assert {c["metadata"]["type"] for c in doc["conversations"]} == {"conversation", "reflection"}

    # not committed yet (upload failed): the next upload carries them again
    sync.forget_cloud("u1")
    again = await sync.conversations_for_cloud(rig.snapshot, "u2")
    assert again is not None and again[1] == 6
    assert await sync.commit_cloud("u2") == 6
    assert await sync.state.memories_uploaded_count() == 6
    assert await sync.conversations_for_cloud(rig.snapshot, "u3") is None

    add_rows(rig.snapshot, "conversations_v2", 10, 12)
    newer = await sync.conversations_for_cloud(rig.snapshot, "u4")
    assert newer is not None and newer[1] == 2 and set(newer[2]) == ids("c", 10, 12)
    # HTTP delivery is independent of cloud uploads
    assert (await sync.status())["delivered"] == 0


async def test_without_akosha_url_delivery_is_refused_but_cloud_json_works(
    tmp_path: Path,
) -> None:
    snapshot = make_reflection_db(tmp_path / "reflection.duckdb")
    add_rows(snapshot, "conversations_v2", 0, 2)
    state = StateDB(tmp_path / "state.db")
    await state.open()
    try:
        sync = MemorySync(state, None, SYSTEM)
        with pytest.raises(PermanentError, match="akosha_url"):
            await sync.deliver(snapshot)
        got = await sync.conversations_for_cloud(snapshot, "u1")
        assert got is not None and got[1] == 2
        assert (await sync.status())["circuit"] is None
    finally:
        await state.close()


async def test_akosha_asking_to_come_back_later_is_not_asked_again_sooner(
    tmp_path: Path,
) -> None:
    """Akosha (or the proxy before it) answers 503 / 429 with ``Retry-After: 120``: the
    memories are tried again no sooner than that, as the file uploads honour it, not after
    the 2 s retry backoff."""
    from aiohttp import web

    from akoshad.pipeline.routes import AkoshaRoute
    from akoshad.pipeline.stats import Stats
    from tests.helpers import served

    async def busy(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=503, text="busy", headers={"Retry-After": "120"})

    app = web.Application()
    app.router.add_post("/mcp", busy)
    async with served(app) as base:
        rig = Rig(tmp_path, f"{base}/mcp")
        add_rows(rig.snapshot, "conversations_v2", 0, 3)
        try:
            breaker = CircuitBreaker("http", reset_timeout=8)
            sync = await rig.sync(breaker=breaker)
            route = AkoshaRoute(sync, breaker, Stats(), retry_backoff=2.0)
            before = time.time()
            outcome = await route.deliver(rig.snapshot)
            assert outcome.error is not None and "503" in outcome.error
            assert outcome.retry_at is not None and outcome.retry_at >= before + 120
        finally:
            await rig.close()
