"""The retry policy: full jitter within bounds, caps, server hints, transient only."""

from __future__ import annotations

import random

import pytest

from akoshad.backoff import (
    backoff_delay,
    exponential,
    half_jitter_delay,
    next_delay,
    parse_retry_after,
    with_retries,
)
from akoshad.errors import PermanentError, TransientError


def test_full_jitter_bounds() -> None:
    rng = random.Random(1)
    for attempt in range(8):
        ceiling = min(60.0, 2.0 * 2**attempt)
        samples = [backoff_delay(attempt, 2.0, rng=rng) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.8  # really spread over the range
        assert min(samples) < ceiling * 0.2


def test_cap() -> None:
    assert all(backoff_delay(30, 2.0, cap=5.0) <= 5.0 for _ in range(100))


def test_retry_after_is_a_floor() -> None:
    exc = TransientError("slow down", retry_after=7.0)
    assert all(next_delay(exc, 0, 0.1) >= 7.0 for _ in range(50))
    assert next_delay(TransientError("x", retry_after=500), 0, 0.1, cap=30) <= 30


async def test_retries_transient_then_succeeds() -> None:
    calls = 0
    slept: list[float] = []

    async def op() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise TransientError("503")
        return "done"

    async def sleep(s: float) -> None:
        slept.append(s)

    assert await with_retries(op, max_retries=3, base=1.0, sleep=sleep) == "done"
    assert calls == 3 and len(slept) == 2


async def test_gives_up_after_max_retries() -> None:
    calls = 0

    async def op() -> None:
        nonlocal calls
        calls += 1
        raise TransientError("down")

    async def sleep(_s: float) -> None:
        return None

    with pytest.raises(TransientError) as info:
        await with_retries(op, max_retries=3, base=0.1, sleep=sleep)
    assert calls == 4
    assert str(info.value) == "down (sent 4 times over 0 s)"  # the wait it cost, in all


async def test_permanent_not_retried() -> None:
    calls = 0

    async def op() -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("bad credentials", fix="check keys")

    with pytest.raises(PermanentError, match="check keys"):
        await with_retries(op, max_retries=5, base=0.1)
    assert calls == 1


async def test_zero_retries_means_one_attempt() -> None:
    calls = 0

    async def op() -> None:
        nonlocal calls
        calls += 1
        raise TransientError("x")

    with pytest.raises(TransientError) as info:
        await with_retries(op, max_retries=0, base=0.1)
    assert calls == 1
    assert str(info.value) == "x"  # sent once: nothing to add


async def test_retry_after_is_waited_and_reported() -> None:
    calls = 0
    slept: list[float] = []
    told: list[tuple[int, float]] = []

    async def op() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise TransientError("SlowDown", retry_after=4.0)
        return "ok"

    async def sleep(s: float) -> None:
        slept.append(s)

    result = await with_retries(
        op,
        max_retries=3,
        base=0.01,
        sleep=sleep,
        on_retry=lambda _e, attempt, delay: told.append((attempt, delay)),
    )
    assert result == "ok"
    assert slept == [4.0] and told == [(1, 4.0)]


async def test_retryable_can_refuse_a_transient_error() -> None:
    calls = 0

    class Lost(TransientError):
        pass

    async def op() -> None:
        nonlocal calls
        calls += 1
        raise Lost("NoSuchUpload")

    with pytest.raises(Lost):
        await with_retries(
            op, max_retries=5, base=10.0, retryable=lambda e: not isinstance(e, Lost)
        )
    assert calls == 1  # and no 10 s wait


async def test_delays_grow_exponentially_on_average() -> None:
    slept: list[float] = []

    async def op() -> None:
        raise TransientError("503")

    async def sleep(s: float) -> None:
        slept.append(s)

    for seed in range(200):
        with pytest.raises(TransientError):
            await with_retries(op, max_retries=4, base=1.0, sleep=sleep, rng=random.Random(seed))
    per_attempt = [slept[i::4] for i in range(4)]
    means = [sum(d) / len(d) for d in per_attempt]
    # full jitter: the mean of uniform(0, base * 2**n) is base * 2**n / 2
    for n, mean in enumerate(means):
        assert 0.8 * 2**n / 2 < mean < 1.2 * 2**n / 2


def test_one_exponential_formula() -> None:
    assert [exponential(a, 0.5) for a in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert exponential(10, 0.5, cap=3.0) == 3.0
    assert exponential(-1, 0.5) == 0.5  # attempts before the first count as the first


def test_half_jitter_never_retries_at_once() -> None:
    rng = random.Random(3)
    samples = [half_jitter_delay(2, 1.0, rng=rng) for _ in range(200)]
    assert all(2.0 <= s <= 4.0 for s in samples)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("3", 3.0),
        ("0.5", 0.5),
        ("0", 0.0),
        ("-1", None),
        ("inf", None),
        ("Infinity", None),
        ("nan", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", None),
        ("", None),
    ],
)
def test_retry_after_parser(raw: str | None, expected: float | None) -> None:
    assert parse_retry_after(raw) == expected
