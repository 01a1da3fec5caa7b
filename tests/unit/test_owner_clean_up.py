"""The clean-up of what a crash left, at the first pass to a target (``OwnerGate``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from akoshad.pipeline import ownership
from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.stats import Stats


class _Hanging:
    """A target whose start (bucket check, multipart clean-up) never answers."""

    name = "cloud"

    async def start(self, *, clean_up: bool = True) -> None:
        await asyncio.Event().wait()


async def test_a_clean_up_that_times_out_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, a server that did not answer the clean-up logged "cloud: clean-up of what a
    crash left did not run: " with nothing after the colon (a TimeoutError says nothing)."""
    monkeypatch.setattr(ownership, "CLEAN_UP_TIMEOUT", 0.05)
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}", level="WARNING")
    try:
        target: Any = _Hanging()
        await OwnerGate(tmp_path, "box", Stats())._clean_up(target)
    finally:
        logger.remove(sink)
    assert [line.rstrip("\n") for line in lines] == [
        "cloud: clean-up of what a crash left did not run: not finished within 0.05 s"
    ]
