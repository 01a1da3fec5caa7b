"""Webhook signing, URL redaction, the backoff/drop rule, the outbox and the health watch."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from akoshad.config import Webhook
from akoshad.events import EventBus
from akoshad.names import EXIT_DEGRADED
from akoshad.pipeline.stats import Stats
from akoshad.redaction import redact_webhook_url, webhook_url_secrets
from akoshad.runtime import webhooks as webhooks_module
from akoshad.runtime.health_watch import HealthWatch
from akoshad.runtime.logs import redact
from akoshad.runtime.webhook_wire import (
    WEBHOOK_MAX_DELAY_SECONDS,
    encode_event,
    retry_delay,
    should_drop,
    sign,
    signature_ok,
)
from akoshad.runtime.webhooks import WebhookSink
from akoshad.store.db import StateDB
from akoshad.store.webhook_outbox import WebhookStore
from tests.webhook_receiver import Receiver


def test_signature_is_hmac_sha256_of_the_body() -> None:
    # RFC 4231 test case 2
    body = b"what do ya want for nothing?"
    want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert sign(body, "Jefe") == f"sha256={want}"
    assert signature_ok(body, "Jefe", f"sha256={want}")
    assert not signature_ok(body + b" ", "Jefe", f"sha256={want}")
    assert not signature_ok(body, "jefe", f"sha256={want}")
    assert not signature_ok(body, "Jefe", None)


def test_redact_url_hides_userinfo_query_values_and_token_paths() -> None:
    assert redact_webhook_url("https://u:p4ss@example.com:8443/a/b?token=abc&x=1") == (
        "https://example.com:8443/a/b?token=**********&x=**********"
    )
    slack = "https://hooks.slack.com/services/T0000/B0000/XXXXXXXXxxxxxxxx1234"
    assert redact_webhook_url(slack) == "https://hooks.slack.com/services/T0000/B0000/**********"
    assert redact_webhook_url("http://[::1]:9000/hook") == "http://[::1]:9000/hook"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        # a Slack token of letters only (Slack's own example has no digit)
        (
            "https://hooks.slack.com/services/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",
            "https://hooks.slack.com/services/TQ3E8AHJB/BQ6S0MAQ1/**********",
        ),
        (
            "https://hooks.slack.com/services/T0/B0/abcdefghijklmnopqrstuvwx",
            "https://hooks.slack.com/services/T0/B0/**********",
        ),
        ("https://ntfy.sh/mysecrettopicnamexyz", "https://ntfy.sh/**********"),  # a topic
        # a ntfy server's path is the topic, however short or plain
        ("https://ntfy.sh/mybackupalerts", "https://ntfy.sh/**********"),
        (
            "https://ntfy.example.com:8080/alerts/json",
            "https://ntfy.example.com:8080/**********/**********",
        ),
        ("http://127.0.0.1:9/hook", "http://127.0.0.1:9/hook"),  # elsewhere, a short word stays
        (
            "https://example.com/notify;jsessionid=AB12cd;v=2/x",
            "https://example.com/notify;jsessionid=**********;v=**********/x",
        ),
        # words joined by separators are no credential: shown
        (
            "https://example.com/hooks/alert-manager-receiver",
            "https://example.com/hooks/alert-manager-receiver",
        ),
    ],
)
def test_redact_url_hides_tokens_without_digits_and_path_parameters(url: str, shown: str) -> None:
    assert redact_webhook_url(url) == shown
    hidden = set(webhook_url_secrets(url))
    assert all(part not in shown for part in hidden)
    assert bool(hidden) == (shown != url)


def test_a_short_ntfy_topic_is_hidden_in_its_url_and_the_word_elsewhere_stays() -> None:
    """A ntfy topic under 16 characters (anyone knowing it reads the alerts) was shown in
    the log and status; hidden now, in its URL only: the same word elsewhere stays."""
    from akoshad.runtime.logs import redact, register_secret

    url = "https://alice:pw@ntfy.sh/nightlybackups"
    for part in webhook_url_secrets(url):
        register_secret(part)
    assert redact(f"POST to {url} failed") == "POST to https://**********@********** failed"
    assert redact("nightlybackups of /srv are done") == "nightlybackups of /srv are done"
    assert "nightlybackups" not in redact_webhook_url(url)


def test_a_percent_encoded_query_value_is_hidden_as_written_too() -> None:
    """A webhook's query value was registered decoded only (ab/cd...): a URL printed as
    configured (ab%2Fcd..., Zz%40...) showed it."""
    from akoshad.runtime.logs import redact, register_secret

    url = "https://hooks.example/h?c=ab%2Fcd12345678&x=Zz%40Yy99"
    for part in webhook_url_secrets(url):
        register_secret(part)
    said = redact(f"POST to {url} failed")
    assert "cd12345678" not in said and "Yy99" not in said, said
    assert redact("c=ab/cd12345678") == "c=**********"


def test_backoff_grows_is_jittered_and_capped() -> None:
    rng = random.Random(7)
    for attempt in range(1, 30):
        ceiling = min(WEBHOOK_MAX_DELAY_SECONDS, 0.5 * 2 ** (attempt - 1))
        delays = [retry_delay(attempt, 0.5, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spans the range, not a constant
    assert max(retry_delay(50, 0.5, rng) for _ in range(100)) <= WEBHOOK_MAX_DELAY_SECONDS


def test_drop_rule_needs_age_and_an_attempt() -> None:
    assert not should_drop(created_at=0, now=3599, attempts=5, give_up=3600)
    assert should_drop(created_at=0, now=3600, attempts=1, give_up=3600)
    # an old event (the daemon was down) still gets one attempt before it is dropped
    assert not should_drop(created_at=0, now=10_000, attempts=0, give_up=3600)
    assert should_drop(created_at=90_000, now=10_000, attempts=1, give_up=3600)  # clock set back
    assert not should_drop(created_at=10_060, now=10_000, attempts=1, give_up=3600)


def test_encoded_event_is_compact_json_without_registered_secrets() -> None:
    from akoshad.runtime.logs import register_secret

    register_secret("s3cr3t-in-an-error")
    body = encode_event({"event": "failure", "error": "denied for s3cr3t-in-an-error", "n": 1})
    assert json.loads(body) == {"event": "failure", "error": "denied for **********", "n": 1}
    assert b'","error":"denied' in body  # compact: no blanks between items


async def _open_state(tmp_path: Path) -> StateDB:
    state = StateDB(tmp_path / "state.db")
    await state.open()
    return state


async def test_outbox_keeps_order_counts_drops_and_forgets_unknown_hooks(tmp_path: Path) -> None:
    state = await _open_state(tmp_path)
    try:
        store = WebhookStore(state)
        await store.add([("a", "upload", b"1", 1.0), ("b", "upload", b"x", 1.0)])
        await store.add([("a", "failure", b"2", 2.0)])
        head = await store.head("a")
        assert head is not None and head.body == b"1" and head.event == "upload"
        await store.delete(head.id)
        head = await store.head("a")
        assert head is not None and head.body == b"2"
        assert await store.pending() == {"a": 1, "b": 1}
        assert await store.drop(head.id, "a") == 1
        assert await store.dropped() == {"a": 1}
        assert await store.head("a") is None
        assert await store.forget_others(["a"]) == 1
        assert await store.pending() == {}
    finally:
        await state.close()


def _sink(state: StateDB, url: str, **kw: Any) -> WebhookSink:
    hook = Webhook(url=url, secret=SecretStr("k3y-for-tests"))
    return WebhookSink([hook], state, base_delay=0.01, **kw)


async def _until(predicate: Any, limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.02)


async def test_an_answer_that_is_not_http_is_named_in_status(tmp_path: Path) -> None:
    """A receiver answering something that is not HTTP (a bad status line, headers over
    aiohttp's limit) showed only ``ClientResponseError`` in status and the log."""

    async def bad_status_line(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"HTTP/1.1 abc OK\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(bad_status_line, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    state = await _open_state(tmp_path)
    sink = _sink(state, f"http://127.0.0.1:{port}/hook?token=s3cr3t-t0ken-value")
    try:
        sink.emit("upload", {"event": "upload", "at": time.time()})
        await sink.deliver_queued(5)
        (st,) = await sink.status()
        assert st["last_error"].startswith("not an HTTP answer: Bad status line:"), st
        assert "s3cr3t" not in st["last_error"]
    finally:
        server.close()
        await server.wait_closed()
        await state.close()


async def test_failing_webhook_is_retried_then_dropped_and_counted(tmp_path: Path) -> None:
    rx = await asyncio.to_thread(Receiver(secret="k3y-for-tests", mode="fail").start)
    state = await _open_state(tmp_path)
    sink = _sink(state, rx.url(), give_up=0.5)
    task = asyncio.create_task(sink.run())
    try:
        bus = EventBus("box")
        bus.subscribe(sink)
        bus.emit("upload", upload_id="u1")

        async def dropped() -> bool:
            return (await sink.status())[0]["dropped"] == 1

        await _until(dropped)
        (st,) = await sink.status()
        assert st["pending"] == 0 and st["last_error"] == "HTTP 500" and st["delivered"] == 0
        assert len(rx.events()) >= 2  # retried before it was given up
        assert all(r.signature_ok for r in rx.events())
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sink.close()
        await state.close()
        await asyncio.to_thread(rx.stop)
    # the drop count survives a restart
    state = await _open_state(tmp_path)
    try:
        sink = _sink(state, rx.url())
        task = asyncio.create_task(sink.run())
        await asyncio.sleep(0.2)
        assert (await sink.status())[0]["dropped"] == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    finally:
        await state.close()


async def test_an_event_dated_by_a_clock_that_ran_ahead_is_given_up_too(tmp_path: Path) -> None:
    """An event emitted while the clock ran a day ahead, to a webhook that no longer
    answers: once the clock is right it is given up like any other, instead of staying at
    the head of the queue (every later event piling up behind it) until the clock caught
    up."""
    rx = await asyncio.to_thread(Receiver(secret="k3y-for-tests", mode="fail").start)
    state = await _open_state(tmp_path)
    sink = _sink(state, rx.url(), give_up=0.5)
    sink.emit("upload", {"event": "upload", "system_id": "box", "at": time.time() + 86400})
    task = asyncio.create_task(sink.run())
    try:

        async def dropped() -> bool:
            return (await sink.status())[0]["dropped"] == 1

        await _until(dropped)
        assert (await sink.status())[0]["pending"] == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sink.close()
        await state.close()
        await asyncio.to_thread(rx.stop)


async def test_events_emitted_before_a_stop_are_kept_and_sent_in_order(tmp_path: Path) -> None:
    rx = Receiver(secret="k3y-for-tests")
    state = await _open_state(tmp_path)
    sink = _sink(state, rx.url())
    for i in range(5):  # no delivery task yet: only close() persists them
        sink.emit("upload", {"event": "upload", "system_id": "box", "at": time.time(), "n": i})
    await sink.close()
    await state.close()
    await asyncio.to_thread(rx.start)
    state = await _open_state(tmp_path)
    sink = _sink(state, rx.url())
    task = asyncio.create_task(sink.run())
    try:

        async def all_in() -> bool:
            return len(rx.events()) == 5

        await _until(all_in)
        assert [r.payload["n"] for r in rx.events()] == [0, 1, 2, 3, 4]
        assert all(r.signature_ok for r in rx.events())
        assert len({r.payload["id"] for r in rx.events()}) == 5
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await state.close()
        await asyncio.to_thread(rx.stop)


def test_events_filter_per_webhook(tmp_path: Path) -> None:
    hook = Webhook(url="http://127.0.0.1:9/x", events=["drill"])
    sink = WebhookSink([hook], StateDB(tmp_path / "s.db"), base_delay=1)
    sink.emit("upload", {"event": "upload"})
    assert sink._pending == []
    sink.emit("drill", {"event": "drill", "ok": False})
    assert len(sink._pending) == 1


def test_webhook_secrets_are_registered_for_the_log() -> None:
    hook = Webhook(
        url="https://bob:pw-9f8e7d@example.com/h?t=tok-1234", secret=SecretStr("sEcR3t!")
    )
    WebhookSink([hook], None, base_delay=1)  # type: ignore[arg-type]
    line = redact(f"{hook.url} signed with sEcR3t!")
    assert "pw-9f8e7d" not in line and "sEcR3t!" not in line and "tok-1234" not in line


def test_webhook_reprs_show_no_secret() -> None:
    hook = Webhook(
        url="https://bob:pw-5a4b3c@example.com/services/T0/B0/Hook0Path0Tok3n99?t=tok-5678",
        secret=SecretStr("rEpR-s3cret"),
    )
    sink = WebhookSink([hook], None, base_delay=1)  # type: ignore[arg-type]
    for text in (repr(hook), str(hook), repr(sink.hooks), repr(sink.hooks[0])):
        for secret in ("pw-5a4b3c", "Hook0Path0Tok3n99", "tok-5678", "rEpR-s3cret"):
            assert secret not in text, text
    assert "example.com/services/T0/B0/" in repr(sink.hooks[0])


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_health_watch_emits_transitions_and_times_degradation() -> None:
    stats, bus, clock = Stats(), EventBus("box"), _Clock()
    heard: list[tuple[str, dict[str, Any]]] = []

    class Sink:
        def emit(self, event: str, fields: dict[str, Any]) -> None:
            heard.append((event, fields))

    bus.subscribe(Sink())  # type: ignore[arg-type]
    watch = HealthWatch(stats, bus, fail_after_seconds=60, clock=clock)
    stats.target("cloud").ok()
    watch.check()
    assert heard == [] and not watch.fail_due()
    stats.target("cloud").failed("bucket missing")
    watch.check()
    watch.check()  # no second event for the same outage
    assert [(e, f["target"], f["error"]) for e, f in heard] == [
        ("degraded", "cloud", "bucket missing")
    ]
    clock.now += 59
    watch.check()
    assert not watch.fail_due()
    clock.now += 1
    assert watch.fail_due()
    stats.target("cloud").ok()
    watch.check()
    assert heard[-1][0] == "recovered" and heard[-1][1]["after_seconds"] == 60
    assert not watch.fail_due() and watch.degraded_for() == 0
    # off by default
    never = HealthWatch(stats, bus, clock=clock)
    stats.target("cloud").failed("again")
    never.check()
    clock.now += 10**6
    assert not never.fail_due()


def test_health_watch_says_since_when_a_target_is_down() -> None:
    """``down_since`` (status ``degraded_since``, the safety line's UNSAFE since): the wall
    time the target down longest went down; None when all are up."""
    stats, clock, wall = Stats(), _Clock(), _Clock()
    wall.now = 1_800_000_000.0
    watch = HealthWatch(stats, EventBus("box"), clock=clock, wall=wall)
    stats.target("cloud").ok()
    watch.check()
    assert watch.down_since() is None
    stats.target("cloud").failed("connection refused")
    watch.check()
    clock.now += 3600
    wall.now += 3600
    assert watch.down_since() == 1_800_000_000.0
    stats.target("cloud").ok()
    watch.check()
    assert watch.down_since() is None


async def test_health_watch_run_asks_to_stop_with_exit_degraded() -> None:
    stats = Stats()
    stats.target("cloud").failed("no such bucket")
    watch = HealthWatch(stats, EventBus("box"), fail_after_seconds=0.05)
    stop = asyncio.Event()
    codes: list[int] = []

    def on_fail(code: int) -> None:
        codes.append(code)
        stop.set()

    await asyncio.wait_for(watch.run(stop, on_fail), 5)
    assert codes == [EXIT_DEGRADED]


@pytest.mark.parametrize("url", ["http://127.0.0.1:1/x"])
def test_status_shows_no_userinfo(url: str, tmp_path: Path) -> None:
    hook = Webhook(url=url.replace("//", "//carol:pw-77aa@"))
    sink = WebhookSink([hook], StateDB(tmp_path / "s.db"), base_delay=1)
    assert sink.hooks[0].shown == url


async def test_events_of_removed_webhooks_are_forgotten_at_start(tmp_path: Path) -> None:
    state = await _open_state(tmp_path)
    try:
        old = _sink(state, "http://127.0.0.1:1/old")
        old.emit("upload", {"event": "upload", "at": time.time()})
        await old.close()
        assert sum((await old.store.pending()).values()) == 1
        none = WebhookSink([], state, base_delay=1)
        await asyncio.wait_for(none.run(), 5)  # nothing configured: returns after cleaning
        assert await old.store.pending() == {}
    finally:
        await state.close()


async def test_a_hanging_webhook_gives_up_every_expired_event_at_once(tmp_path: Path) -> None:
    """A webhook that accepts and never answers costs one timeout per attempt. Dropping
    one expired event per attempt drained the queue at one event per timeout (360 an hour
    at the real 10 s), fewer than a busy store emits: the outbox in the state database
    grew without bound for as long as the receiver hung. Every event past its give-up age
    goes with the failed attempt."""
    rx = await asyncio.to_thread(Receiver(secret="k3y-for-tests", mode="hang").start)
    state = await _open_state(tmp_path)
    sink = _sink(state, rx.url(), give_up=60.0, timeout=0.5)
    old = time.time() - 3600
    for i in range(40):  # an hour of events that never got through
        sink.emit("upload", {"event": "upload", "system_id": "box", "at": old + i, "n": i})
    sink.emit("upload", {"event": "upload", "system_id": "box", "at": time.time(), "n": 40})
    task = asyncio.create_task(sink.run())
    try:

        async def expired_gone() -> bool:
            return (await sink.status())[0]["dropped"] == 40

        await _until(expired_gone, limit=4.0)  # 40 timeouts would take 20 s
        (st,) = await sink.status()
        assert st["pending"] == 1  # the fresh event still waits for its hour
        assert st["last_error"].startswith("no answer within")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sink.close()
        await state.close()
        await asyncio.to_thread(rx.stop)


async def test_a_restart_during_an_outage_neither_announces_it_again_nor_loses_its_start(
    tmp_path: Path,
) -> None:
    """The target went down 100 s before a stop: the next daemon emits no second
    ``degraded`` while it is still down, and ``recovered`` counts from when it began."""
    clock, wall = _Clock(), _Clock()
    wall.now = 1_000_000.0
    heard: list[tuple[str, dict[str, Any]]] = []

    class Sink:
        def emit(self, event: str, fields: dict[str, Any]) -> None:
            heard.append((event, fields))

    state = StateDB(tmp_path / "state.db")
    await state.open()
    try:
        stats = Stats()
        bus = EventBus("box")
        bus.subscribe(Sink())  # type: ignore[arg-type]
        first = HealthWatch(stats, bus, clock=clock, state=state, wall=wall)
        await first.restore()
        stats.target("cloud").failed("connection refused")
        first.check()
        await first.save()
        assert [e for e, _ in heard] == ["degraded"]
        clock.now += 100
        wall.now += 100
        # a new daemon: new stats, a clock of its own
        stats, clock2 = Stats(), _Clock()
        second = HealthWatch(stats, bus, clock=clock2, state=state, wall=wall)
        await second.restore()
        stats.target("cloud")  # known, not tried yet
        second.check()
        stats.target("cloud").failed("connection refused")  # its start's check failed
        second.check()
        assert [e for e, _ in heard] == ["degraded"]  # not announced again
        clock2.now += 20
        wall.now += 20
        stats.target("cloud").ok()
        second.check()
        await second.save()
        event, fields = heard[-1]
        assert (event, fields["target"], fields["after_seconds"]) == ("recovered", "cloud", 120.0)
        third = HealthWatch(Stats(), bus, clock=_Clock(), state=state, wall=wall)
        await third.restore()
        assert third._down_since == {}  # the recovery was kept too
    finally:
        await state.close()


def _full(*args: Any, **kwargs: Any) -> Any:
    raise sqlite3.OperationalError("database or disk is full")


async def test_events_go_out_from_memory_while_the_outbox_takes_no_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The state's disk full: a ``failure`` event cannot be queued in the outbox, and is
    delivered from memory all the same, once; a row queued before goes out first."""
    monkeypatch.setattr(webhooks_module, "_STORE_RETRY_SECONDS", 0.05)
    rx = await asyncio.to_thread(Receiver(secret="k3y-for-tests").start)
    state = await _open_state(tmp_path)
    sink = _sink(state, rx.url())
    await sink.store.add([(sink.hooks[0].id, "upload", b'{"event":"upload"}', time.time())])
    monkeypatch.setattr(sink.store, "add", _full)
    monkeypatch.setattr(sink.store, "delete", _full)
    task = asyncio.create_task(sink.run())
    try:
        bus = EventBus("box")
        bus.subscribe(sink)
        bus.emit("failure", error="state disk full")

        async def both() -> bool:
            return len(rx.events()) >= 2

        await _until(both)
        await asyncio.sleep(0.5)  # several store retries: nothing is sent twice
        assert [r.payload["event"] for r in rx.events()] == ["upload", "failure"]
        (st,) = await sink.status()
        assert st["pending"] == 0 and st["delivered"] == 2 and st["last_error"] is None
        monkeypatch.undo()  # the disk has room again: the delivered row is forgotten
        await _until(lambda: _no_rows(sink))
        assert len(rx.events()) == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sink.close()
        await state.close()
        await asyncio.to_thread(rx.stop)


async def _no_rows(sink: WebhookSink) -> bool:
    sink._flush_wake.set()
    for h in sink.hooks:
        h.wake.set()
    return not await sink.store.pending()


def test_a_pass_a_store_file_s_change_stopped_is_no_failure_event() -> None:
    """A file that changed while it was sent is the store's doing: the pass is sent again
    (a WARNING), no ``failure`` event (webhook) and no failed target."""
    from akoshad.pipeline.report import PassReport
    from akoshad.runtime.pass_metrics import NoMetrics
    from akoshad.runtime.wiring import PassEvents

    stats, bus = Stats(), EventBus("box")
    heard: list[str] = []

    class Sink:
        def emit(self, event: str, fields: dict[str, Any]) -> None:
            heard.append(event)

    bus.subscribe(Sink())  # type: ignore[arg-type]
    passes = PassEvents(bus, NoMetrics(), HealthWatch(stats, bus))
    moved = PassReport("local", claimed=1, error="big.bin changed while it was being uploaded")
    moved.source_changed = True
    passes.pass_done(moved, 0.1)
    assert heard == []
    passes.pass_done(PassReport("local", claimed=1, error="disk full"), 0.1)
    assert heard == ["failure"]


async def test_a_new_kind_of_webhook_error_is_logged_at_once(tmp_path: Path) -> None:
    """The log's line for a failing webhook was rate-limited per webhook (5 min) whatever
    the error: a receiver that went from HTTP 500 to refusing connections was still 'HTTP
    500' in the log. Each kind of error is logged when it starts; the same kind is paced."""
    import io

    from loguru import logger

    rx = await asyncio.to_thread(Receiver(mode="fail").start)
    state = await _open_state(tmp_path)
    sink = _sink(state, rx.url())
    text = io.StringIO()
    handler = logger.add(text, format="{message}", level="INFO")
    task = asyncio.create_task(sink.run())
    try:
        sink.emit("upload", {"event": "upload", "at": time.time()})

        async def failed_twice() -> bool:
            return len(rx.events()) >= 3

        await _until(failed_twice)
        await asyncio.to_thread(rx.stop)

        async def refused() -> bool:
            return "cannot connect" in str((await sink.status())[0]["last_error"])

        await _until(refused)
        await asyncio.sleep(0.2)  # a few more refused attempts
        await asyncio.to_thread(rx.start)
        rx.mode = "ok"

        async def delivered() -> bool:
            return (await sink.status())[0]["delivered"] == 1

        await _until(delivered)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        logger.remove(handler)
        await sink.close()
        await state.close()
        await asyncio.to_thread(rx.stop)
    lines = text.getvalue().splitlines()
    assert len([line for line in lines if "HTTP 500; retrying" in line]) == 1, lines
    assert len([line for line in lines if "cannot connect" in line]) == 1, lines
    assert len([line for line in lines if "answers again" in line]) == 1, lines
