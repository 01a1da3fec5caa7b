"""How the S3 target's exclusive create reads a server's answers (``targets.s3.exclusive``):
what it concludes from each sequence of replies, without a server (the real servers'
behaviour is in ``test_storage_owner.py`` and the target conformance suite)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
from botocore.exceptions import ClientError

from akoshad.targets.s3.exclusive import create_exclusive
from akoshad.targets.s3.target import S3Target


def reply(status: int, code: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


class Client:
    """Answers each conditional PutObject with the next scripted reply (None: stored)."""

    def __init__(self, replies: list[ClientError | None]) -> None:
        self.replies = replies
        self.calls: list[dict[str, Any]] = []

    async def put_object(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        answer = self.replies.pop(0)
        if answer is not None:
            raise answer
        return {}


class FakeTarget:
    """The parts of ``S3Target`` that ``create_exclusive`` uses."""

    bucket = "b"

    def __init__(self, replies: list[ClientError | None], learnt: bool | None = None) -> None:
        self.client = Client(replies)
        self.conditional_writes = learnt
        self.plain_puts: list[str] = []

    async def _call(self, op: Callable[[Any], Awaitable[Any]], *, what: str) -> Any:
        return await op(self.client)

    async def _checked(self, put: Callable[[str], Awaitable[Any]]) -> Any:
        return await put("crc32")

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        self.plain_puts.append(key)
        return len(data)


async def run(t: FakeTarget) -> str:
    return await create_exclusive(cast(S3Target, t), "systems/x/owner.json", b"{}", "a/j")


async def test_a_server_that_refuses_the_second_put_honours_the_condition() -> None:
    t = FakeTarget([None, reply(412, "PreconditionFailed")])
    assert await run(t) == "created"
    assert t.conditional_writes is True and t.plain_puts == []
    assert all(c["IfNoneMatch"] == "*" for c in t.client.calls) and len(t.client.calls) == 2


async def test_once_learnt_one_request_is_enough() -> None:
    t = FakeTarget([None], learnt=True)
    assert await run(t) == "created"
    assert len(t.client.calls) == 1


async def test_a_key_taken_is_exists_and_nothing_else_is_sent() -> None:
    t = FakeTarget([reply(412, "PreconditionFailed")])
    assert await run(t) == "exists"
    assert len(t.client.calls) == 1 and t.plain_puts == [] and t.conditional_writes is None


async def test_a_server_that_stores_both_ignores_the_condition() -> None:
    t = FakeTarget([None, None])
    assert await run(t) == "unchecked"
    assert t.conditional_writes is False


@pytest.mark.parametrize("status, code", [(501, "NotImplemented"), (400, "InvalidArgument")])
async def test_a_server_that_refuses_the_header_gets_a_plain_put(status: int, code: str) -> None:
    t = FakeTarget([reply(status, code)])
    assert await run(t) == "unchecked"
    assert t.conditional_writes is False and t.plain_puts == ["systems/x/owner.json"]


async def test_once_learnt_that_the_server_ignores_it_only_plain_puts_are_sent() -> None:
    t = FakeTarget([], learnt=False)
    assert await run(t) == "unchecked"
    assert t.client.calls == [] and t.plain_puts == ["systems/x/owner.json"]


async def test_other_errors_are_not_taken_for_an_answer() -> None:
    t = FakeTarget([reply(403, "AccessDenied")])
    with pytest.raises(ClientError):
        await run(t)
    assert t.plain_puts == [] and t.conditional_writes is None


async def test_a_concurrent_write_is_transient() -> None:
    from akoshad.errors import TransientError

    t = FakeTarget([reply(409, "ConditionalRequestConflict")])
    with pytest.raises(TransientError, match="409"):
        await run(t)
