"""The HTTP path end to end: memories reach Akosha exactly once; files stay safe.

No bucket here: HTTP is the primary method for memories and the local target keeps the
file backups (the cloud cases are in test_chain_cloud.py).
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from tests.akosha_fixtures import AkoshaServer
from tests.integration.test_pipeline_local import SYSTEM, Setup
from tests.storegen import make_store


def _setup(tmp_path: Path, url: str, **extra: object) -> Setup:
    s = Setup(tmp_path, akosha_url=url, **extra)
    make_store(s.store, conversations=30)
    return s


def _add_rows(db: Path, ids: list[str], *, embedding: bool = True) -> None:
    con = duckdb.connect(str(db))
    for rid in ids:
        con.execute(
            "INSERT INTO conversations_v2 (id, content, embedding, category) VALUES (?, ?, ?, 'c')",
            [rid, f"text {rid}", [0.5] * 384 if embedding else None],
        )
    con.close()


def test_memories_delivered_once_across_restarts(
    tmp_path: Path, akosha_server: AkoshaServer
) -> None:
    s = _setup(tmp_path, akosha_server.url)
    res = s.once()
    assert res.returncode == 0, res.stderr
    stored = akosha_server.stored()
    assert len(stored) == 35 and all(i.startswith(f"{SYSTEM}:") for i in stored)
    assert len(s.manifests()) == 1  # the local target still got the file backup
    _add_rows(s.store / "reflection.duckdb", ["new-1", "new-2"])
    assert s.once().returncode == 0
    assert akosha_server.stored() >= {f"{SYSTEM}:new-1", f"{SYSTEM}:new-2"}
    assert s.once().returncode == 0  # a restart: nothing sent again
    counts = akosha_server.sent_counts()
    assert counts and max(counts.values()) == 1, counts
    assert len(counts) == 37


def test_rows_without_embedding_are_skipped_and_counted(
    tmp_path: Path, akosha_server: AkoshaServer
) -> None:
    s = _setup(tmp_path, akosha_server.url)
    _add_rows(s.store / "reflection.duckdb", ["no-emb"], embedding=False)
    assert s.once().returncode == 0
    assert f"{SYSTEM}:no-emb" not in akosha_server.stored()
    s.once()
    assert akosha_server.sent_counts()[f"{SYSTEM}:no-emb"] == 0


def test_akosha_down_then_back_loses_nothing(tmp_path: Path, akosha_server: AkoshaServer) -> None:
    s = _setup(tmp_path, akosha_server.url)
    akosha_server.stop()
    res = s.once()
    assert res.returncode == 1  # the memories could not be delivered
    assert len(s.manifests()) == 1  # the file backup did not wait for Akosha
    res = s.once()  # still down, across a restart: still queued
    assert res.returncode == 1
    akosha_server.start()
    res = s.once()
    assert res.returncode == 0, res.stderr
    assert len(akosha_server.stored()) == 35


def test_an_akosha_that_never_answers_does_not_hold_up_the_file_upload(
    tmp_path: Path, akosha_server: AkoshaServer
) -> None:
    """Akosha takes the tool call and answers only after 20 s: the pass's files land in
    the target first; the memories are tried after them (and stay queued: exit 1)."""
    import subprocess
    import sys
    import time

    s = _setup(tmp_path, akosha_server.url)
    akosha_server.delay(20)
    try:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "akoshad", "run", "--once", "--config", str(s.config)],
            env=s.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            while not s.manifests():
                assert proc.poll() is None, "run --once ended before any upload"
                assert time.monotonic() - t0 < 18, "the file upload waited for Akosha"
                time.sleep(0.1)
            assert proc.poll() is None  # the memories are still on their way
        finally:
            proc.kill()
            proc.wait()
    finally:
        akosha_server.delay(0)


def test_a_memory_akosha_did_not_store_fails_the_run_and_goes_out_later(
    tmp_path: Path, akosha_server: AkoshaServer
) -> None:
    """A per-item error that is no rejection of the row: the memory is not dropped.
    ``run --once`` exits 1 and its last lines name it; the next run sends it again."""
    s = _setup(tmp_path, akosha_server.url)
    _add_rows(s.store / "reflection.duckdb", ["locked"])
    mid = f"{SYSTEM}:locked"
    akosha_server.fail({mid: 3}, error="database is locked")
    res = s.once()
    assert res.returncode == 1
    assert "memories not stored by Akosha yet" in res.stderr and mid in res.stderr
    assert mid not in akosha_server.stored()
    res = s.once()
    assert res.returncode == 0, res.stderr
    assert mid in akosha_server.stored()
    assert len(akosha_server.stored()) == 36


def test_a_memory_skipped_for_good_is_a_warning_naming_it(
    tmp_path: Path, akosha_server: AkoshaServer
) -> None:
    s = _setup(tmp_path, akosha_server.url)
    _add_rows(s.store / "reflection.duckdb", ["bad-vec"])
    mid = f"{SYSTEM}:bad-vec"
    akosha_server.fail({mid: 1}, error="Embedding dim mismatch: expected 384, got 3")
    res = s.once()
    warned = [line for line in res.stderr.splitlines() if "skipped for good" in line]
    assert len(warned) == 1 and "WARNING" in warned[0], res.stderr
    assert mid in warned[0] and "dim mismatch" in warned[0]
    assert mid not in akosha_server.stored()
