"""A large file's chunk list is one document shared by every upload that keeps the file
unchanged. Lost, it made every such upload unrestorable as a whole, the other files
included, even with ``--path`` naming only them: the whole entry list was resolved first.
``--path`` now reads only the chosen files' chunk lists."""

from __future__ import annotations

import os
from pathlib import Path

from tests.helpers import akoshad, daemon_config


def test_path_restores_the_other_files_when_a_chunk_list_is_lost(tmp_path: Path) -> None:
    config, env = daemon_config(tmp_path, "lostlist", store=False)
    store = tmp_path / "store"
    (store / "sessions").mkdir(parents=True)
    (store / "notes.json").write_text('{"a": 1}')
    (store / "sessions" / "s.json").write_text('{"s": 1}')
    (store / "big.bin").write_bytes(os.urandom(24 << 20))  # past the inline chunk limit
    akoshad("run", "--once", "--config", str(config), env=env, check=True)
    lists = list((tmp_path / "outbox").rglob("chunklists/*/*"))
    assert len(lists) == 1, lists
    lists[0].unlink()

    args = ["--latest", "--dest", str(tmp_path / "w")]
    whole = akoshad("restore", "--config", str(config), *args, env=env)
    assert whole.returncode == 1 and "big.bin" in whole.stderr and "missing" in whole.stderr

    dest = tmp_path / "back"
    args = ["--latest", "--dest", str(dest), "--path", "*.json"]
    proc = akoshad("restore", "--config", str(config), *args, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("restored 2 file(s) of upload ")
    assert (dest / "notes.json").read_text() == '{"a": 1}'
    assert (dest / "sessions" / "s.json").read_text() == '{"s": 1}'
    assert not (dest / "big.bin").exists()
