"""Power loss: a file linked or renamed into ``state_dir`` is there after the crash only
once the directory itself is fsynced. ``owner_id`` was not: a power loss after the first
claim could take it away while the target's owner record (fsynced) names it, and the
machine was then a stranger to its own system id (`run akoshad takeover`). Nor was
``name_keys.json``, whose loss renames every object of an encrypted target."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from akoshad.storage.name_key import KEY_BYTES, NameKey, NameKeyCache
from akoshad.storage.owner import load_owner_id
from tests.unit.test_local_target_durable import fsynced_dirs

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")


def test_a_new_owner_id_is_fsynced_into_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    seen = fsynced_dirs(monkeypatch)
    owner_id = load_owner_id(state)
    assert str(state) in seen
    seen.clear()
    assert load_owner_id(state) == owner_id and seen == []  # kept: nothing written


def test_a_cached_name_key_is_fsynced_into_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    seen = fsynced_dirs(monkeypatch)
    key = NameKey("box", "f" * 16, "k1", "2026-12-05T00:00:00+00:00", b"\1" * KEY_BYTES)
    NameKeyCache(state).add(key)
    assert str(state) in seen
