"""reflection.duckdb replaced by a database of a newer DuckDB storage version (a
session-buddy upgrade): the file is still backed up, and the memories that cannot be read
are reported, not passed over in silence."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.akosha_fixtures import AkoshaServer
from tests.helpers import (
    akoshad,
    base_env,
    daemon_config,
    start_daemon,
    stop_daemon,
    wait_for,
    write_config,
)
from tests.integration.test_pipeline_local import Setup
from tests.s3server import WeedServer
from tests.storegen import make_store

pytest_plugins = ["tests.akosha_fixtures"]


def _checksum(buf: bytes) -> int:
    """DuckDB's block checksum (its main header's, over the bytes after the checksum)."""
    result = 5381
    for (word,) in struct.iter_unpack("<Q", buf[: len(buf) // 8 * 8]):
        result ^= (word * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    return result


def make_newer_storage(path: Path, version: int = 1000) -> None:
    """Rewrite ``path``'s header as a DuckDB storage version this DuckDB cannot read."""
    con = duckdb.connect(str(path))
    con.execute("CHECKPOINT")
    con.close()
    data = bytearray(path.read_bytes())
    assert data[8:12] == b"DUCK"
    data[12:20] = struct.pack("<Q", version)
    data[0:8] = struct.pack("<Q", _checksum(bytes(data[8:4096])))
    path.write_bytes(bytes(data))
    Path(f"{path}.wal").unlink(missing_ok=True)


def test_newer_storage_reflection_is_reported_not_silent(
    tmp_path: Path, akosha_server: AkoshaServer
) -> None:
    s = Setup(tmp_path, akosha_url=akosha_server.url)
    make_store(s.store)
    assert s.once().returncode == 0
    delivered = akosha_server.stored()
    assert delivered
    make_newer_storage(s.store / "reflection.duckdb")
    with duckdb.connect() as con:  # what this DuckDB says about it
        try:
            con.execute(f"ATTACH '{s.store / 'reflection.duckdb'}' (READ_ONLY)")
        except duckdb.Error as exc:
            assert "newer version" in str(exc)
    res = s.once()
    assert "Traceback" not in res.stderr
    # the file itself is backed up ("cannot validate")
    m = s.manifests()[-1]
    assert "reflection.duckdb" in {f["path"] for f in m["metadata"]["files"]}
    # no memory could be read: --once says so and fails, as for a skipped file
    assert res.returncode == 1, res.stderr
    assert "storage version" in res.stdout + res.stderr
    assert akosha_server.stored() == delivered


def test_a_reflection_file_that_is_no_duckdb_has_no_memories(
    tmp_path: Path, akosha_server: AkoshaServer
) -> None:
    """A reflection.duckdb that is empty (just created) is backed up as a plain file; there
    are no memories in it to read: no failure, no warning about an internal path."""
    s = Setup(tmp_path, akosha_url=akosha_server.url)
    make_store(s.store)
    (s.store / "reflection.duckdb").write_bytes(b"")
    Path(f"{s.store / 'reflection.duckdb'}.wal").unlink(missing_ok=True)
    res = s.once()
    assert res.returncode == 0, res.stderr
    assert "held-in-memory" not in res.stderr and "no memories read" not in res.stderr
    m = s.manifests()[-1]
    assert "reflection.duckdb" in {f["path"] for f in m["metadata"]["files"]}
    assert akosha_server.stored() == set()


def test_a_daemon_whose_memories_cannot_be_read_is_not_healthy(
    tmp_path: Path, akosha_server: AkoshaServer
) -> None:
    """The daemon's reflection.duckdb turns into one it cannot read (a session-buddy
    upgrade to a newer DuckDB): the file is still backed up, but no memory of it reaches
    Akosha. status says so (memories_unreadable, a warning) and --check fails, also after
    a restart (the file is not read again until it changes), until a copy reads again."""
    config, env = daemon_config(tmp_path, "unread", akosha_url=akosha_server.url)
    store = tmp_path / "store"
    db = store / "reflection.duckdb"
    good = tmp_path / "good.duckdb"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return akoshad(*args, "--config", str(config), env=env)

    def status() -> dict[str, Any]:
        return dict(json.loads(cli("status", "--json").stdout))

    assert cli("run", "--once").returncode == 0
    delivered = akosha_server.stored()
    assert delivered
    with duckdb.connect(str(db)) as con:
        con.execute("CHECKPOINT")
    Path(f"{db}.wal").unlink(missing_ok=True)
    shutil.copyfile(db, good)
    proc = start_daemon(config, env, tmp_path / "daemon.log")
    try:
        wait_for(lambda: cli("status").returncode == 0, 40)
        assert cli("status", "--check").returncode == 0
        make_newer_storage(db)
        wait_for(lambda: status()["memories_unreadable"], 30)
        found = status()
        assert "storage version" in found["memories_unreadable"]
        assert any("memories not read from reflection.duckdb" in w for w in found["warnings"])
        check = cli("status", "--check")
        assert check.returncode == 1 and "memories not read" in check.stdout, check.stdout
        stop_daemon(proc)
        proc = start_daemon(config, env, tmp_path / "daemon.log")
        wait_for(lambda: cli("status").returncode == 0, 40)
        assert cli("status", "--check").returncode == 1  # still: nothing read it since
        os.replace(good, db)  # readable again
        wait_for(lambda: status()["memories_unreadable"] is None, 30)
        assert cli("status", "--check").returncode == 0
    finally:
        stop_daemon(proc)
    assert akosha_server.stored() == delivered


@pytest.mark.s3
def test_memories_json_that_cannot_be_built_fails_run_once(
    tmp_path: Path, s3: WeedServer, system_id: str
) -> None:
    """A bucket without akosha_url: memories reach Akosha only in memories.json. When
    reflection.duckdb cannot be read for it, the file is still uploaded, but run --once
    exits 1 saying so (before: 0, a warning line only), as it does over HTTP."""
    store = tmp_path / "store"
    make_store(store)
    settings = {
        "data_dir": str(store),
        "state_dir": str(tmp_path / "state"),
        "drill_interval_hours": 0,
        **s3.config_dict(system_id),
    }
    config = write_config(tmp_path / "c.yaml", **settings)
    env = base_env(tmp_path)
    assert akoshad("run", "--once", "--config", str(config), env=env).returncode == 0
    make_newer_storage(store / "reflection.duckdb")
    res = akoshad("run", "--once", "--config", str(config), env=env)
    assert res.returncode == 1, res.stderr
    assert "memories not read from reflection.duckdb" in res.stderr
    assert "storage version" in res.stderr
