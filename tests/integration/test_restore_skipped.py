"""A restore says which files its upload left out (``metadata.skipped``: here a name that
is not UTF-8): they are in no backup, and "restored N file(s)" alone let the user think
the store was whole. Encrypted, the list is in a sealed document, read with the identity."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

from akoshad.storage.crypto import write_new_identity
from tests.helpers import akoshad, daemon_config

pytestmark = pytest.mark.skipif(
    sys.platform == "darwin", reason="macOS file systems refuse names that are not UTF-8"
)


def _store_with_a_skip(store: Path) -> None:
    store.mkdir()
    (store / "notes.json").write_text('{"a": 1}')
    (store / "sessions").mkdir()
    (store / "sessions" / "s.json").write_text('{"s": 1}')
    with open(os.fsencode(store) + b"/bad\xff.json", "w") as f:
        f.write("{}")


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_restore_names_the_files_its_upload_left_out(tmp_path: Path, encrypted: bool) -> None:
    _store_with_a_skip(tmp_path / "store")
    extra: dict[str, Any] = {}
    if encrypted:
        public = write_new_identity(tmp_path / "id.txt")
        extra["encryption"] = {
            "recipients": [public],
            "identity_file": str(tmp_path / "id.txt"),
        }
    config, env = daemon_config(tmp_path, "skips", store=False, **extra)
    akoshad("run", "--once", "--config", str(config), env=env)  # exit 1: a file skipped
    dest = tmp_path / "back"
    proc = akoshad("restore", "--config", str(config), "--latest", "--dest", str(dest), env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("restored 2 file(s) of upload ")
    (line,) = proc.stderr.splitlines()
    assert line.startswith("akoshad: warning: upload ")
    assert "left out 1 file(s) it could not capture, so they are not restored: bad" in line
    assert line.endswith(".json (name is not valid UTF-8)")
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == ["notes.json", "s.json"]
    # a --path that does not reach it: nothing to say
    only = tmp_path / "only"
    args = ["--latest", "--dest", str(only), "--path", "sessions/*"]
    proc = akoshad("restore", "--config", str(config), *args, env=env)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
