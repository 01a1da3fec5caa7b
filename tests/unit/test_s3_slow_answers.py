"""Requests that wait long for an answer are told in the log (``targets/s3/slow``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from loguru import logger

from akoshad.errors import TransientError
from akoshad.targets.s3.slow import SlowAnswers
from akoshad.targets.s3.target import S3Target


@pytest.fixture
def lines() -> Iterator[list[str]]:
    said: list[str] = []
    sink = logger.add(lambda m: said.append(str(m).strip()), format="{level} {message}")
    yield said
    logger.remove(sink)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _wait(slow: SlowAnswers, seconds: float, limit: float = 0.2) -> None:
    with slow.watch("upload part", "http://s3.example", limit):
        await asyncio.sleep(seconds)


def test_a_prompt_answer_logs_nothing(lines: list[str]) -> None:
    asyncio.run(_wait(SlowAnswers(), 0.01))
    assert lines == []


def test_a_long_wait_is_warned_once_then_the_answer_told(lines: list[str]) -> None:
    asyncio.run(_wait(SlowAnswers(), 0.3))
    assert len(lines) == 2, lines
    assert lines[0].startswith("WARNING S3: upload part has had no answer from http://s3.example")
    assert "a try is given up after 0 s" in lines[0]
    assert lines[1].startswith("INFO S3: upload part answered after")


def test_many_waits_make_one_line_per_interval_with_a_count(lines: list[str]) -> None:
    clock = _Clock()
    slow = SlowAnswers(interval=300.0, clock=clock)

    async def main() -> None:
        await asyncio.gather(*(_wait(slow, 0.15, limit=0.1) for _ in range(4)))
        clock.now += 301
        await _wait(slow, 0.15, limit=0.1)

    asyncio.run(main())
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings) == 2, lines
    assert "more requests" not in warnings[0]
    assert warnings[1].endswith("; 3 more requests waited as long")
    # one "answered" line per warned episode, not one per request
    assert len([line for line in lines if line.startswith("INFO")]) == 2, lines


def test_a_wait_that_fails_tells_no_answer(lines: list[str]) -> None:
    async def main() -> None:
        slow = SlowAnswers()
        with pytest.raises(TimeoutError), slow.watch("get", "x", 0.1):
            async with asyncio.timeout(0.1):
                await asyncio.sleep(1)

    asyncio.run(main())
    assert [line.split(" ")[0] for line in lines] == ["WARNING"]


def test_a_server_that_takes_the_request_and_never_answers_is_told_before_the_try_ends(
    lines: list[str],
) -> None:
    """A real client against a socket that accepts and stays silent: the warning comes at
    half the try's time, the try then fails as no answer, and no secret is in either."""
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"

    async def main() -> None:
        held: list[asyncio.StreamWriter] = []

        async def silent(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            held.append(w)

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        target = S3Target(
            bucket="b",
            endpoint=f"http://127.0.0.1:{port}",
            access_key_id="AKIAEXAMPLE",
            secret_access_key=secret,
            timeout=1.0,
            max_retries=0,
        )
        try:
            with pytest.raises(TransientError, match="no answer from"):
                await target.check()
        finally:
            await target.close()
            for w in held:
                w.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())
    warnings = [line for line in lines if line.startswith("WARNING")]
    assert len(warnings) == 1, lines
    assert "check the bucket has had no answer from http://127.0.0.1:" in warnings[0]
    assert not any(secret in line for line in lines)
