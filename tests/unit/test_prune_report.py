"""What a prune that failed before it read the uploads reports: not "kept 0"."""

from __future__ import annotations

import io
from typing import Any

from loguru import logger

from akoshad.cli.prune import render_prune
from akoshad.runtime.prune_report import last_prune, log_result

FAILED: dict[str, Any] = {  # run_prune's result when reading the owner record failed
    "enabled": True,
    "dry_run": False,
    "policy": "keep 3 latest",
    "ok": False,
    "problems": ["read systems/x/owner.json: cannot reach http://127.0.0.1:1"],
    "at": 1_700_000_000.0,
}


def test_a_prune_that_read_nothing_does_not_say_it_kept_nothing() -> None:
    assert last_prune(FAILED)["uploads_kept"] is None  # null in status, webhooks
    sink = io.StringIO()
    handler = logger.add(sink, format="{message}")
    try:
        log_result(FAILED)
    finally:
        logger.remove(handler)
    line = sink.getvalue()
    assert "kept every upload (the prune read none)" in line and "kept 0" not in line
    assert "kept every upload (the prune read none)" in render_prune(FAILED)


def test_a_prune_that_read_the_uploads_says_how_many_it_kept() -> None:
    done = {**FAILED, "ok": True, "problems": [], "uploads_kept": 3, "uploads_removed": ["a"]}
    assert last_prune(done)["uploads_kept"] == 3
    assert last_prune(done)["upload_id"] is None  # not known: null, as the contract has it
    assert last_prune({**done, "upload_id": "u9"})["upload_id"] == "u9"
    assert "removed 1 upload(s), kept 3;" in render_prune(done)
