"""What a webhook receives and how its deliveries are paced: the signed JSON body
(``encode_event``, ``sign``; a receiver checks with ``signature_ok``), the retry delay and
when an event is given up, the webhook's key in the state, and the status warning of one
that fails. Pure functions; :mod:`akoshad.runtime.webhooks` delivers."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from typing import Any

from akoshad.backoff import backoff_delay
from akoshad.runtime.logs import redact

SIGNATURE_HEADER = "X-Akoshad-Signature"
WEBHOOK_TIMEOUT_SECONDS = 10.0
WEBHOOK_GIVE_UP_SECONDS = 3600.0  # an event still undelivered this long after it happened
WEBHOOK_MAX_DELAY_SECONDS = 60.0  # the backoff's cap between two attempts
WEBHOOK_ONCE_SECONDS = 15.0  # what ``run --once`` spends at most on queued events


def sign(body: bytes, secret: str) -> str:
    """The signature header's value: ``sha256=<hex HMAC-SHA256 of body with secret>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def signature_ok(body: bytes, secret: str, header: str | None) -> bool:
    """What a receiver checks (constant-time compare)."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)


def hook_id(url: str) -> str:
    """The key of a webhook in the state database (a hash: the URL may hold credentials)."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def retry_delay(attempt: int, base: float, rng: random.Random | None = None) -> float:
    """The wait after failed attempt number ``attempt`` (1, 2, ...): full-jitter backoff."""
    return backoff_delay(attempt - 1, base, WEBHOOK_MAX_DELAY_SECONDS, rng)


def should_drop(created_at: float, now: float, attempts: int, give_up: float) -> bool:
    """Give an event up once it is ``give_up`` seconds old, after at least one attempt; one
    dated ``give_up`` or more ahead (by a clock that ran ahead and was set right since) has
    no age to wait for: it would hold its webhook's queue until the clock caught up."""
    return attempts > 0 and abs(now - created_at) >= give_up


def encode_event(payload: dict[str, Any]) -> bytes:
    """The exact body bytes: compact JSON, registered secrets redacted in every string."""

    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(payload), separators=(",", ":"), default=str).encode()


def failing_webhooks(rows: list[dict[str, Any]]) -> list[str]:
    """A status warning per webhook (``WebhookSink.status`` rows) whose last delivery
    failed, until one succeeds: alerting that is itself broken must show."""
    return [
        f"webhook {row['url']}: {row['last_error']} (its events are not delivered; "
        f"{row['pending']} waiting)"
        for row in rows
        if row.get("last_error")
    ]
