"""Webhooks: events POSTed as signed JSON, at least once, durable across restarts.

``WebhookSink.emit`` (an ``EventBus`` sink) only appends to a list in memory; the
daemon-owned ``run`` task writes those rows to the outbox in the state database at once
(and ``close`` on shutdown), and one worker per webhook delivers its rows in order. A row
is deleted only after a 2xx answer; failures are retried with the project's jittered
backoff and dropped (with a warning, counted in status) once the event is
``WEBHOOK_GIVE_UP_SECONDS`` old. A slow or dead webhook holds up only its own worker.

While the outbox takes no writes (the state's disk full), events are still delivered: from
memory, once the outbox holds none older for that webhook; a row delivered whose delete
fails is never sent again (its id is kept until the state takes the delete).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from loguru import logger

from akoshad import __version__
from akoshad.errors import AkoshadError
from akoshad.events import EventName
from akoshad.redaction import redact_webhook_url, webhook_url_secrets
from akoshad.runtime.failure_notices import MAX_KINDS, failure_kind
from akoshad.runtime.logs import RateLimitedLog, redact, register_secret
from akoshad.runtime.webhook_wire import (
    SIGNATURE_HEADER,
    WEBHOOK_GIVE_UP_SECONDS,
    WEBHOOK_TIMEOUT_SECONDS,
    encode_event,
    hook_id,
    retry_delay,
    should_drop,
    sign,
)
from akoshad.store.webhook_outbox import OutboxRow, WebhookStore

if TYPE_CHECKING:
    from akoshad.config import Webhook
    from akoshad.store.db import StateDB

_STORE_ERRORS = (sqlite3.Error, OSError, AkoshadError)
_STORE_RETRY_SECONDS = 2.0


def _describe(exc: BaseException) -> str:
    """An error line without the URL (aiohttp's messages may carry it)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        reason = exc.os_error.strerror or type(exc.os_error).__name__
        return f"cannot connect: {reason}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientResponseError) and exc.message:  # no URL in its message
        said = " ".join(str(exc.message).split())
        return f"not an HTTP answer: {said[:100]}{'...' if len(said) > 100 else ''}"
    return type(exc).__name__


@dataclass
class _Hook:
    """One configured webhook and what status says about it."""

    config: Webhook
    id: str
    shown: str
    secret: str | None = field(repr=False)  # the HMAC key
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    attempts: int = 0
    last_error: str | None = None
    last_success_at: float | None = None
    dropped: int = 0
    delivered: int = 0
    sent: list[int] = field(default_factory=list)  # delivered rows the outbox could not delete
    logged: set[str] = field(default_factory=set)  # the rate-limited log's keys of its errors


class WebhookSink:
    """Queues events for the webhooks that want them and delivers them (``run``)."""

    def __init__(
        self,
        hooks: Sequence[Webhook],
        state: StateDB,
        *,
        base_delay: float,
        give_up: float = WEBHOOK_GIVE_UP_SECONDS,
        timeout: float = WEBHOOK_TIMEOUT_SECONDS,
    ) -> None:
        self.store = WebhookStore(state)
        self.base_delay = base_delay
        self.give_up = give_up
        self.timeout = timeout
        self.hooks: list[_Hook] = []
        for hook in hooks:
            secret = hook.secret.get_secret_value() if hook.secret is not None else None
            register_secret(secret)
            for part in webhook_url_secrets(hook.url):
                register_secret(part)
            self.hooks.append(_Hook(hook, hook_id(hook.url), redact_webhook_url(hook.url), secret))
        self._pending: list[tuple[str, str, bytes, float]] = []
        self._pending_lock = threading.Lock()  # a sink may hear events from a worker thread
        self._flush_wake = asyncio.Event()
        self._store_failing = False  # the outbox takes no writes: deliver from memory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._log = RateLimitedLog(300.0)

    # ---- in: the event bus ------------------------------------------------------------
    def emit(self, event: EventName, fields: dict[str, Any]) -> None:
        """Queue ``fields`` (the bus payload) for every webhook that wants ``event``."""
        wanting = [h for h in self.hooks if event in h.config.events]
        if not wanting:
            return
        body = encode_event({**fields, "id": uuid.uuid4().hex})
        at = float(fields.get("at") or time.time())
        with self._pending_lock:
            self._pending.extend((h.id, event, body, at) for h in wanting)
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._flush_wake.set)
        else:
            self._flush_wake.set()

    async def flush(self) -> None:
        """Write the events emitted so far to the outbox (kept in memory if that fails)."""
        with self._pending_lock:
            rows, self._pending = self._pending, []
        if not rows:
            return
        try:
            await self.store.add(rows)
        except BaseException:
            with self._pending_lock:
                self._pending[:0] = rows
            raise
        self._store_failing = False
        woken = {r[0] for r in rows}
        for h in self.hooks:
            if h.id in woken:
                h.wake.set()

    async def close(self) -> None:
        """Shutdown: flush what is still in memory (before the state database closes)."""
        try:
            await self.flush()
        except _STORE_ERRORS as exc:
            logger.error("{} webhook event(s) could not be queued: {}", len(self._pending), exc)

    # ---- out: delivery -------------------------------------------------------------------
    async def run(self) -> None:
        """Flush and deliver until cancelled (the daemon owns this task)."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        await self._start()
        if not self.hooks:
            return
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
            asyncio.TaskGroup() as tg,
        ):
            tg.create_task(self._flusher(), name="webhook-flush")
            for h in self.hooks:
                tg.create_task(self._worker(h, session), name=f"webhook-{h.id}")

    async def _start(self) -> None:
        try:
            dropped = await self.store.dropped()
            stale = await self.store.forget_others([h.id for h in self.hooks])
        except _STORE_ERRORS as exc:
            logger.error("webhook outbox unreadable: {}", exc)
            return
        for h in self.hooks:
            h.dropped = dropped.get(h.id, 0)
        if stale:
            logger.warning("{} queued event(s) of webhooks no longer configured forgotten", stale)

    async def _flusher(self) -> None:
        while True:
            await self._flush_wake.wait()
            self._flush_wake.clear()
            try:
                await self.flush()
            except _STORE_ERRORS as exc:
                self._log.error(
                    "webhook-flush", "cannot queue webhook events (sent from memory): {}", exc
                )
                self._from_memory()
                await asyncio.sleep(_STORE_RETRY_SECONDS)
                self._flush_wake.set()

    def _from_memory(self) -> None:
        """The outbox takes no writes: the workers deliver the events held in memory."""
        self._store_failing = True
        with self._pending_lock:
            waiting = {row[0] for row in self._pending}
        for h in self.hooks:
            if h.id in waiting:
                h.wake.set()

    async def _worker(self, h: _Hook, session: aiohttp.ClientSession) -> None:
        while True:
            h.wake.clear()
            try:
                outcome = await self._step(h, session)
            except _STORE_ERRORS as exc:
                self._log.error(f"webhook-store-{h.id}", "webhook outbox: {}", exc)
                await asyncio.sleep(_STORE_RETRY_SECONDS)
                continue
            if outcome is None:
                await h.wake.wait()
            elif not outcome:
                await asyncio.sleep(retry_delay(h.attempts, self.base_delay))

    async def _step(self, h: _Hook, session: aiohttp.ClientSession) -> bool | None:
        """Try the oldest event of ``h``: None when there is none, True when it went out (or
        was given up), False when it failed and waits for another attempt."""
        if h.sent:  # delivered before: forgotten once the state takes the delete
            with contextlib.suppress(*_STORE_ERRORS):
                await self.store.delete_many(h.sent)
                h.sent.clear()
        row = await self.store.head(h.id, after=max(h.sent, default=0))
        if row is None:
            return await self._step_from_memory(h, session)
        error = await self._post(session, h, row)
        if error is None:
            try:
                await self.store.delete(row.id)
            except _STORE_ERRORS:  # never sent again: kept until the state takes writes
                h.sent.append(row.id)
            self._delivered(h)
            return True
        if not self._failed(h, error, row.created_at):
            return self._retrying(h, error)
        # every event as old goes too: one attempt each would drain a hanging webhook's
        # queue at one event per timeout, slower than a busy store fills it
        now = time.time()
        age = now - row.created_at
        gone, h.dropped = await self.store.drop_expired(
            row.id, h.id, now - self.give_up, now + self.give_up
        )
        h.attempts = 0
        logger.warning(
            "webhook {}: {} event dropped, {}{} (last error: {})",
            h.shown,
            row.event,
            f"undelivered for {age:.0f}s" if age >= 0 else "dated ahead of the clock",
            f"; {gone - 1} more as old with it" if gone > 1 else "",
            error,
        )
        return True

    def _delivered(self, h: _Hook) -> None:
        h.attempts, h.last_error, h.last_success_at = 0, None, time.time()
        h.delivered += 1
        if [key for key in h.logged if self._log.forget(key)]:
            logger.info("webhook {} answers again", h.shown)
        h.logged.clear()

    def _failed(self, h: _Hook, error: str, created_at: float) -> bool:
        """A failed attempt of ``h`` on an event made at ``created_at``, counted: True when
        that event is to be given up (``should_drop``)."""
        h.attempts += 1
        h.last_error = error
        return should_drop(created_at, time.time(), h.attempts, self.give_up)

    def _retrying(self, h: _Hook, error: str) -> bool:
        """Log (rate-limited) that ``h`` failed and its event waits: False, as :meth:`_step`
        answers for it."""
        key = f"webhook-{h.id}:{failure_kind(error)}"  # a new kind of error is logged at once
        if key not in h.logged and len(h.logged) >= MAX_KINDS:
            key = f"webhook-{h.id}:more"  # past that, any other kind is paced as one
        h.logged.add(key)
        self._log.error(key, "webhook {}: {}; retrying (events wait, none lost)", h.shown, error)
        return False

    async def _step_from_memory(self, h: _Hook, session: aiohttp.ClientSession) -> bool | None:
        """While the outbox takes no writes: the oldest event of ``h`` held in memory,
        delivered from there (an alert that the state's disk is full must go out). As
        :meth:`_step` answers; an event that fails is put back, or dropped once too old."""
        if not self._store_failing:
            return None
        with self._pending_lock:
            at = next((i for i, item in enumerate(self._pending) if item[0] == h.id), None)
            item = None if at is None else self._pending.pop(at)
        if item is None:
            return None
        error = await self._post(session, h, OutboxRow(0, h.id, item[1], item[2], item[3]))
        if error is None:
            self._delivered(h)
            return True
        if not self._failed(h, error, item[3]):
            with self._pending_lock:
                self._pending.insert(0, item)  # first again: the events of ``h`` stay in order
            return self._retrying(h, error)
        h.attempts, h.dropped = 0, h.dropped + 1
        logger.warning("webhook {}: {} event dropped (last error: {})", h.shown, item[1], error)
        return True

    async def deliver_queued(self, limit: float) -> None:
        """``run --once``: send what is queued, in order, until a webhook fails or ``limit``
        seconds pass; the rest waits for the next run."""
        if not self.hooks:
            return
        try:
            await self.flush()
        except _STORE_ERRORS as exc:
            logger.warning("webhook events cannot be queued (sent from memory): {}", exc)
            self._store_failing = True

        async def one(h: _Hook, session: aiohttp.ClientSession) -> None:
            while await self._step(h, session):
                pass

        timeout = aiohttp.ClientTimeout(total=min(self.timeout, limit))
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
                asyncio.timeout(limit),
            ):
                await asyncio.gather(*(one(h, session) for h in self.hooks))
        except (TimeoutError, *_STORE_ERRORS) as exc:
            why = "time limit reached" if isinstance(exc, TimeoutError) else str(exc)
            logger.warning("webhook events stay queued for the next run: {}", why)

    async def _post(self, session: aiohttp.ClientSession, h: _Hook, row: OutboxRow) -> str | None:
        """POST one event; None on a 2xx answer, else a line saying why (no URL in it)."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"akoshad/{__version__}",
            "X-Akoshad-Event": row.event,
        }
        if h.secret is not None:
            headers[SIGNATURE_HEADER] = sign(row.body, h.secret)
        try:
            async with session.post(
                h.config.url, data=row.body, headers=headers, allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except TimeoutError:
            return f"no answer within {self.timeout:.0f}s"
        except (aiohttp.ClientError, ValueError) as exc:
            return redact(_describe(exc))

    # ---- status ---------------------------------------------------------------------------
    async def status(self) -> list[dict[str, Any]]:
        """Per webhook: redacted URL, pending, last_error, last_success_at, dropped, delivered."""
        if not self.hooks:
            return []
        queued = await self.store.pending()
        in_memory: dict[str, int] = {}
        with self._pending_lock:
            waiting = list(self._pending)
        for hid, *_ in waiting:
            in_memory[hid] = in_memory.get(hid, 0) + 1
        return [
            {
                "url": h.shown,
                "events": list(h.config.events),
                "pending": queued.get(h.id, 0) - len(h.sent) + in_memory.get(h.id, 0),
                "last_error": h.last_error,
                "last_success_at": h.last_success_at,
                "dropped": h.dropped,
                "delivered": h.delivered,
            }
            for h in self.hooks
        ]
