"""Listing keys page by page: every page followed, and a listing that cannot be followed
is an error, never taken for the whole (prune decides what to delete from it)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from akoshad.errors import TransientError
from akoshad.targets.s3.objects import list_keys
from akoshad.targets.s3.target import S3Target


class Pages:
    """Stands in for the S3 target: ``list_objects_v2`` answers these pages in turn."""

    bucket = "b"

    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.tokens: list[str | None] = []

    async def _op(self, name: str, what: str, **kwargs: Any) -> dict[str, Any]:
        assert name == "list_objects_v2"
        self.tokens.append(kwargs.get("ContinuationToken"))
        return self.pages.pop(0)


async def _keys(pages: Pages) -> list[str]:
    return [k async for k in list_keys(cast(S3Target, pages), "p/")]


async def test_every_page_is_followed() -> None:
    pages = Pages(
        [
            {"Contents": [{"Key": "p/a"}], "IsTruncated": True, "NextContinuationToken": "t1"},
            {"Contents": [{"Key": "p/b"}], "IsTruncated": False},
        ]
    )
    assert await _keys(pages) == ["p/a", "p/b"]
    assert pages.tokens == [None, "t1"]


async def test_a_truncated_page_without_a_token_is_an_error() -> None:
    pages = Pages([{"Contents": [{"Key": "p/a"}], "IsTruncated": True}])
    with pytest.raises(TransientError, match="gives no continuation token"):
        await _keys(pages)
