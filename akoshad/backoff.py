"""The one backoff: exponential delays (plain, full jitter, half jitter), the one
``Retry-After`` parser, and the retry loop.

Only ``TransientError`` is retried; a ``PermanentError`` goes straight to the caller.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from akoshad.errors import TransientError

T = TypeVar("T")
DEFAULT_CAP = 60.0


def exponential(attempt: int, base: float, cap: float = math.inf) -> float:
    """``min(cap, base * 2**attempt)`` for attempt 0, 1, 2, ... (no jitter)."""
    return float(min(cap, base * (2 ** max(0, attempt))))


def backoff_delay(
    attempt: int, base: float, cap: float = DEFAULT_CAP, rng: random.Random | None = None
) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)] for attempt 0, 1, 2, ..."""
    return (rng or random).uniform(0, exponential(attempt, base, cap))


def half_jitter_delay(
    attempt: int, base: float, cap: float = DEFAULT_CAP, rng: random.Random | None = None
) -> float:
    """Equal jitter: uniform in [ceiling / 2, ceiling] (never retries at once)."""
    ceiling = exponential(attempt, base, cap)
    return (rng or random).uniform(ceiling / 2, ceiling)


def parse_retry_after(raw: str | None) -> float | None:
    """A ``Retry-After`` header in seconds; None when absent, not a number, negative,
    infinite or NaN (an HTTP date is not honoured: None)."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None


def next_delay(
    exc: TransientError,
    attempt: int,
    base: float,
    cap: float = DEFAULT_CAP,
    rng: random.Random | None = None,
) -> float:
    """The wait before the next attempt: backoff, but never less than a Retry-After hint."""
    delay = backoff_delay(attempt, base, cap, rng)
    if exc.retry_after is not None:
        delay = max(delay, min(exc.retry_after, cap))
    return delay


async def with_retries(
    op: Callable[[], Awaitable[T]],
    *,
    max_retries: int,
    base: float,
    cap: float = DEFAULT_CAP,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    on_retry: Callable[[TransientError, int, float], None] | None = None,
    rng: random.Random | None = None,
    retryable: Callable[[TransientError], bool] | None = None,
) -> T:
    """Run ``op``; on ``TransientError`` wait and try again, at most ``max_retries`` times.

    ``retryable`` can refuse a particular transient error (it then goes to the caller at
    once, still transient: worth another try later, not now). ``on_retry(exc, attempt,
    delay)`` is told of each retry before the wait. The error that ends a loop that tried
    more than once says how often and over how long (:func:`say_tries`).
    """
    attempt = 0
    started = time.monotonic()
    while True:
        try:
            return await op()
        except TransientError as exc:
            if attempt >= max_retries or (retryable is not None and not retryable(exc)):
                if attempt:
                    say_tries(exc, attempt + 1, time.monotonic() - started)
                raise
            delay = next_delay(exc, attempt, base, cap, rng)
            if on_retry is not None:
                on_retry(exc, attempt + 1, delay)
            await sleep(delay)
            attempt += 1


def say_tries(exc: TransientError, tries: int, seconds: float) -> None:
    """Add to a request's last failure how often it was sent and how long that took in
    all: a request that timed out after 30 s each time kept its caller waiting longer."""
    if exc.args and isinstance(exc.args[0], str):
        exc.args = (f"{exc.args[0]} (sent {tries} times over {seconds:.0f} s)", *exc.args[1:])
