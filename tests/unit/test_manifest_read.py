"""Reading a manifest back costs one request: its size is asked for only to name it when
it is refused."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from akoshad.manifest.layout import MAX_MANIFEST_BYTES, ManifestError
from akoshad.manifest.read import read_manifest_bytes

PIECE = 1 << 20


class Counted:
    """A target holding one object, counting what it is asked."""

    name = "cloud"

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.asked: list[str] = []

    async def head(self, key: str) -> int | None:
        self.asked.append("head")
        return len(self.data)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        self.asked.append("read")
        for i in range(0, len(self.data), PIECE):
            yield self.data[i : i + PIECE]


async def test_a_manifest_is_read_with_one_request() -> None:
    target = Counted(b'{"metadata": {}}')
    t: Any = target
    assert await read_manifest_bytes(t, "m") == b'{"metadata": {}}'
    assert target.asked == ["read"]


async def test_a_manifest_over_the_limit_is_refused_with_its_size() -> None:
    target = Counted(b" " * (MAX_MANIFEST_BYTES + 1))
    t: Any = target
    with pytest.raises(ManifestError) as err:
        await read_manifest_bytes(t, "m")
    assert str(err.value) == (
        f"manifest is {MAX_MANIFEST_BYTES + 1} bytes, over the {MAX_MANIFEST_BYTES} limit"
    )
