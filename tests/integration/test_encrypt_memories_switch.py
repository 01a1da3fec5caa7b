"""``encrypt_memories`` turned on (or off) with the store untouched: the next run makes an
upload whose memories.json carries every memory in the new form (before: no upload until
the store changed, and even then only the new memories went up in it; the others stayed
readable in the bucket). The run after it sends nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from akoshad.storage.crypto import load_identity, open_sealed, write_new_identity
from tests.akosha_fixtures import add_rows, make_reflection_db
from tests.helpers import akoshad, base_env
from tests.integration.test_encryption_uploads import encryption_config
from tests.s3server import WeedServer

pytestmark = pytest.mark.s3


def test_a_change_of_encrypt_memories_sends_every_memory_again(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    db = make_reflection_db(store / "reflection.duckdb")
    ids = add_rows(db, "conversations_v2", 0, 5)
    (store / "notes.md").write_text("kept as it is\n")
    public = write_new_identity(tmp_path / "id.txt")
    identity = load_identity(tmp_path / "id.txt")
    env = base_env(tmp_path)
    client = s3.client()

    def run(sealed: bool) -> list[str]:
        """run --once with encrypt_memories ``sealed``: the manifests' keys after it."""
        enc = {"recipients": [public], "encrypt_memories": sealed}
        cfg = encryption_config(
            tmp_path, system_id, [public], encryption=enc, cloud_sync=s3.cloud_sync(system_id)
        )
        res = akoshad("run", "--once", "--config", str(cfg), env=env, timeout=300)
        assert res.returncode == 0, res.stderr
        return sorted(k for k in s3.keys(f"systems/{system_id}/") if k.endswith("manifest.json"))

    def memories(manifest_key: str) -> list[str]:
        """The ids the upload's memories.json carries (opened with the identity when sealed)."""
        body = client.get_object(Bucket=s3.bucket, Key=manifest_key)["Body"].read()
        manifest: dict[str, Any] = json.loads(body)
        (name,) = manifest["files"]
        folder = manifest_key.rsplit("/", 1)[0]
        data = client.get_object(Bucket=s3.bucket, Key=f"{folder}/{name}")["Body"].read()
        if name == "memories.json.age":
            data = open_sealed(data, identity, 1 << 24)
        else:
            assert name == "memories.json"
        return sorted(c["id"].rsplit(":", 1)[-1] for c in json.loads(data)["conversations"])

    (plain,) = run(False)
    assert memories(plain) == sorted(ids)
    assert run(False) == [plain]  # nothing changed, nothing sent
    made = run(True)
    assert len(made) == 2, made
    sealed = made[-1]
    assert memories(sealed) == sorted(ids)  # every memory, sealed
    assert run(True) == made
    again = run(False)
    assert len(again) == 3 and memories(again[-1]) == sorted(ids)


def test_an_upgrade_with_encrypt_memories_on_sends_no_memory_again(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """A state of an earlier akoshad records no form: its memories went up as the
    configuration said, so the form configured now is taken as theirs (before: taken as
    readable, and every memory went up again, sealed, with a log line saying so)."""
    import sqlite3

    from akoshad.pipeline.routes import KV_MEMORIES_AS

    store = tmp_path / "store"
    store.mkdir()
    db = make_reflection_db(store / "reflection.duckdb")
    add_rows(db, "conversations_v2", 0, 5)
    public = write_new_identity(tmp_path / "id.txt")
    enc = {"recipients": [public], "encrypt_memories": True}
    cfg = encryption_config(
        tmp_path, system_id, [public], encryption=enc, cloud_sync=s3.cloud_sync(system_id)
    )
    env = base_env(tmp_path)

    def manifests() -> list[str]:
        return sorted(k for k in s3.keys(f"systems/{system_id}/") if k.endswith("manifest.json"))

    assert akoshad("run", "--once", "--config", str(cfg), env=env, timeout=300).returncode == 0
    first = manifests()
    assert len(first) == 1
    (state_db,) = (tmp_path / "state").glob("*.db")
    with sqlite3.connect(state_db) as con:  # as an earlier akoshad left it
        assert con.execute("DELETE FROM kv WHERE key = ?", (KV_MEMORIES_AS,)).rowcount == 1
    res = akoshad("run", "--once", "--config", str(cfg), env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert manifests() == first
    assert "every memory goes up again" not in res.stderr + res.stdout
