"""An outbox other users can change (another user's, or shared): it was used without a
word, though they could delete or replace its uploads. It is still used (a backup disk
mounted with another owner is common) but the start says so."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from loguru import logger

from akoshad.targets.local import LocalTarget


def started(root: Path) -> list[str]:
    warnings: list[str] = []
    sink = logger.add(lambda m: warnings.append(str(m)), format="{message}", level="WARNING")
    try:
        asyncio.run(LocalTarget(root).start())
    finally:
        logger.remove(sink)
    return warnings


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_an_outbox_of_another_user_is_warned_of(tmp_path: Path) -> None:
    root = tmp_path / "outbox"
    root.mkdir(mode=0o777)
    os.chown(root, 65534, 65534)
    (line,) = started(root)
    assert line.startswith(f"local target {root} (mode ")
    assert "owned by uid 65534) can be changed by other users" in line
    os.chown(root, os.geteuid(), -1)
    assert started(root) == []  # ours: made 0700, as before, and nothing to warn of
    assert root.stat().st_mode & 0o777 == 0o700
