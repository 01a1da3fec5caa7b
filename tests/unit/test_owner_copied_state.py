"""A state directory copied to another host (a new laptop set up from the old one's home,
a cloned VM): both hold the same owner id, so both upload as the owner of the system id and
mix their uploads, and neither said a word. The owner record names the host that claimed
it; a check that finds this machine's owner id under another host name warns, once, and
``takeover`` records this host's name (a host renamed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from loguru import logger

from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.stats import Stats
from akoshad.storage import owner
from akoshad.targets.local import LocalTarget


async def test_a_copied_state_on_another_host_is_warned_and_takeover_records_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = LocalTarget(tmp_path / "outbox")
    monkeypatch.setattr(owner, "this_host", lambda: "alpha")
    alpha = OwnerGate(tmp_path / "a", "box", Stats(), settle=0)
    assert await alpha.refusal(target) is None  # claimed by alpha
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    monkeypatch.setattr(owner, "this_host", lambda: "beta")
    beta = OwnerGate(tmp_path / "b", "box", Stats(), settle=0)
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}", level="WARNING")
    try:
        assert await beta.refusal(target) is None  # the same owner id: not refused
        assert await beta.refusal(target, force=True) is None
        (line,) = lines  # said once
        assert "host 'alpha' (this host is 'beta')" in line
        assert str(tmp_path / "b" / "owner_id") in line and "akoshad takeover" in line
        record = await beta.takeover(target)  # a renamed host records its name
        assert record.host == "beta" and record.previous_host == "alpha"
        assert await beta.refusal(target, force=True) is None
        assert len(lines) == 1
    finally:
        logger.remove(sink)


async def test_a_host_named_after_its_network_is_the_same_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """macOS names a host after the network it joins (MacBook.local, macbook.lan): the
    names are compared without their domain, in any case, and no warning is given."""
    target = LocalTarget(tmp_path / "outbox")
    monkeypatch.setattr(owner, "this_host", lambda: "MacBook.local")
    gate = OwnerGate(tmp_path / "a", "box", Stats(), settle=0)
    assert await gate.refusal(target) is None
    monkeypatch.setattr(owner, "this_host", lambda: "macbook.lan")
    again = OwnerGate(tmp_path / "a", "box", Stats(), settle=0)
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}", level="WARNING")
    try:
        assert await again.refusal(target, force=True) is None
    finally:
        logger.remove(sink)
    assert lines == []
