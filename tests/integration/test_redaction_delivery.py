"""Secrets never leave for Akosha: both delivery paths (HTTP and memories.json) redact,
count and log by kind, keep memory ids, and leave the backups alone."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import duckdb
import pytest
from loguru import logger

from akoshad.akosha.client import AkoshaClient
from akoshad.errors import TransientError
from akoshad.pipeline.memory_sync import MemorySync
from akoshad.pipeline.stats import Stats
from akoshad.store.db import StateDB
from tests.akosha_fixtures import AkoshaServer, add_rows, make_reflection_db

SYSTEM = "testbox"
GITHUB = "ghp_" + "1234567890abcdefghijABCDEFGHIJ123456"
AWS_ID = "AKIA" + "IOSFODNN7QWERTYZ"
URL_PASS = "s3cr3tP4ss"


async def no_sleep(_: float) -> None:
    return None


def store_with_secrets(tmp: Path) -> Path:
    db = make_reflection_db(tmp / "reflection.duckdb")
    add_rows(db, "conversations_v2", 0, 3)  # ordinary rows
    add_rows(
        db,
        "conversations_v2",
        3,
        4,
        content=f"'my token is {GITHUB} and the key id {AWS_ID}'",
    )
    add_rows(
        db,
        "reflections_v2",
        0,
        1,
        content=f"'connect with postgres://admin:{URL_PASS}@db.example.com/app'",
    )
    return db


@pytest.fixture
async def parts(
    tmp_path: Path, akosha_server: AkoshaServer
) -> AsyncIterator[tuple[StateDB, AkoshaClient]]:
    akosha_server.reset()
    state = StateDB(tmp_path / "state" / "state.db")
    await state.open()
    client = AkoshaClient(akosha_server.url, timeout=5)
    await client.start()
    try:
        yield state, client
    finally:
        await client.close()
        await state.close()


async def test_http_delivery_redacts_counts_and_logs(
    tmp_path: Path, akosha_server: AkoshaServer, parts: tuple[StateDB, AkoshaClient]
) -> None:
    state, client = parts
    db = store_with_secrets(tmp_path)
    stats = Stats()
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="INFO")
    try:
        sync = MemorySync(state, client, SYSTEM, sleep=no_sleep, stats=stats)
        await sync.deliver(db)
    finally:
        logger.remove(sink)
    texts = akosha_server.state()["texts"]
    assert len(texts) == 5  # every memory delivered, ids unchanged
    secret_row = texts[f"{SYSTEM}:c000003"]
    assert GITHUB not in secret_row and AWS_ID not in secret_row
    assert "[REDACTED:github-pat]" in secret_row
    assert "[REDACTED:aws-access-token]" in secret_row
    assert URL_PASS not in texts[f"{SYSTEM}:r000000"]
    assert "[REDACTED:url-password]" in texts[f"{SYSTEM}:r000000"]
    assert texts[f"{SYSTEM}:c000000"].startswith("memory 0 ")  # ordinary text untouched
    assert stats.counters.redactions == 3
    log = "\n".join(lines)
    assert f"{SYSTEM}:c000003" in log and "github-pat" in log
    for secret in (GITHUB, AWS_ID, URL_PASS):
        assert secret not in log
    # the backup itself is not altered
    con = duckdb.connect(str(db), read_only=True)
    try:
        row = con.execute("SELECT content FROM conversations_v2 WHERE id='c000003'").fetchone()
    finally:
        con.close()
    assert row is not None and GITHUB in row[0]


async def test_redacted_memories_are_not_sent_again(
    tmp_path: Path, akosha_server: AkoshaServer, parts: tuple[StateDB, AkoshaClient]
) -> None:
    state, client = parts
    db = store_with_secrets(tmp_path)
    await MemorySync(state, client, SYSTEM, sleep=no_sleep).deliver(db)
    report = await MemorySync(state, client, SYSTEM, sleep=no_sleep).deliver(db)
    assert report.already == 5 and report.pending == 0
    assert max(akosha_server.state()["attempts"].values()) == 1


async def test_memories_json_is_redacted(
    tmp_path: Path, parts: tuple[StateDB, AkoshaClient]
) -> None:
    state, _ = parts
    db = store_with_secrets(tmp_path)
    stats = Stats()
    sync = MemorySync(state, None, SYSTEM, stats=stats)
    built = await sync.conversations_for_cloud(db, "u1")
    assert built is not None
    path, count, _ = built
    data = path.read_bytes()
    assert count == 5
    text = data.decode()
    for secret in (GITHUB, AWS_ID, URL_PASS):
        assert secret not in text
    convs = {c["id"]: c["content"] for c in json.loads(data)["conversations"]}
    assert "[REDACTED:github-pat]" in convs[f"{SYSTEM}:c000003"]
    assert stats.counters.redactions == 0  # counted once they left: the upload committed
    assert await sync.commit_cloud("u1") == 5
    assert stats.counters.redactions == 3


async def test_a_failed_upload_s_secrets_are_counted_once(
    tmp_path: Path, parts: tuple[StateDB, AkoshaClient]
) -> None:
    state, _ = parts
    db = store_with_secrets(tmp_path)
    stats = Stats()
    sync = MemorySync(state, None, SYSTEM, stats=stats)
    assert await sync.conversations_for_cloud(db, "u1") is not None
    sync.forget_cloud("u1")  # that upload failed: its memories.json never counted
    assert await sync.conversations_for_cloud(db, "u2") is not None
    assert await sync.commit_cloud("u2") == 5
    assert stats.counters.redactions == 3 and sync.redactions_since_start == 3


async def test_a_failed_delivery_s_secrets_are_counted_once(
    tmp_path: Path, akosha_server: AkoshaServer, parts: tuple[StateDB, AkoshaClient]
) -> None:
    state, client = parts
    db = store_with_secrets(tmp_path)
    stats = Stats()
    sync = MemorySync(state, client, SYSTEM, sleep=no_sleep, stats=stats, item_retries=0)
    every = [f"{SYSTEM}:c00000{i}" for i in range(4)] + [f"{SYSTEM}:r000000"]
    akosha_server.fail(dict.fromkeys(every, 1))  # Akosha stores none of them, once
    with pytest.raises(TransientError):
        await sync.deliver(db)
    assert stats.counters.redactions == 0  # nothing left the machine
    report = await sync.deliver(db)
    assert report.delivered == 5
    assert stats.counters.redactions == 3 and sync.redactions_since_start == 3


async def test_redaction_can_be_turned_off(
    tmp_path: Path, parts: tuple[StateDB, AkoshaClient]
) -> None:
    state, _ = parts
    db = store_with_secrets(tmp_path)
    sync = MemorySync(state, None, SYSTEM, redact_secrets=False)
    built = await sync.conversations_for_cloud(db, "u1")
    assert built is not None and GITHUB.encode() in built[0].read_bytes()


def test_turning_redaction_on_by_a_reload_is_not_silently_ignored(
    tmp_path: Path, akosha_server: AkoshaServer
) -> None:
    """``redact_secrets`` switched from false to true by a reload (SIGHUP): the memories
    sent after it are redacted. Before, the reload said "configuration reloaded" and
    secrets kept leaving for Akosha. A new ``akosha_url`` waits for a restart, and says so."""
    import signal

    import yaml

    from tests.helpers import akoshad, daemon_config, start_daemon, stop_daemon, wait_for

    cfg, env = daemon_config(tmp_path, SYSTEM, akosha_url=akosha_server.url, redact_secrets=False)
    db = tmp_path / "store" / "reflection.duckdb"
    log = tmp_path / "d.log"
    proc = start_daemon(cfg, env, log)
    try:
        wait_for(lambda: len(akosha_server.stored()) >= 20, 30)
        settings = yaml.safe_load(cfg.read_text())
        settings["redact_secrets"] = True
        settings["akosha_url"] = "http://127.0.0.1:9/mcp"
        cfg.write_text(yaml.safe_dump(settings))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "configuration reloaded" in log.read_text(), 10)
        con = duckdb.connect(str(db))
        con.execute(
            "INSERT INTO conversations_v2 (id, content, embedding, category) SELECT 'leak', "
            f"'my token is {GITHUB}', embedding, 'facts' FROM conversations_v2 LIMIT 1"
        )
        con.close()
        akoshad("sync", "--wait", "--config", str(cfg), env=env, check=True)
        sent = akosha_server.state()["texts"].get(f"{SYSTEM}:leak")
        assert sent == "my token is [REDACTED:github-pat]"
        assert "akosha_url changed: it takes effect after a restart" in log.read_text()
    finally:
        stop_daemon(proc)
