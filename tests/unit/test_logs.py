"""Log formats, secret redaction, stdlib routing and rate limiting."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from loguru import logger

from akoshad import logs
from akoshad.config import load_settings
from akoshad.logs import RateLimitedLog, register_secret, setup_logging

SECRET = "planted-secret-value-9f8e7d"


@pytest.fixture
def captured() -> io.StringIO:
    return io.StringIO()


def settings(tmp_path: Path, **extra: object):  # type: ignore[no-untyped-def]
    return load_settings(
        environ={"HOME": str(tmp_path)},
        overrides={
            "cloud_sync": {"access_key_id": "AKIAEXAMPLE", "secret_access_key": SECRET},
            **extra,
        },
    )


def test_journald_lines_have_priorities(tmp_path: Path, captured: io.StringIO) -> None:
    setup_logging(settings(tmp_path), environ={"JOURNAL_STREAM": "8:1"}, stream=captured)
    logger.info("hello")
    logger.warning("careful")
    logger.error("broken")
    assert captured.getvalue().splitlines()[:3] == ["<6>hello", "<4>careful", "<3>broken"]


def test_json_lines(tmp_path: Path, captured: io.StringIO) -> None:
    setup_logging(settings(tmp_path, log_format="json"), environ={}, stream=captured)
    logger.info("structured")
    line = json.loads(captured.getvalue().splitlines()[0])
    assert line["level"] == "INFO" and line["message"] == "structured" and "time" in line


def test_secret_never_logged(tmp_path: Path, captured: io.StringIO) -> None:
    setup_logging(settings(tmp_path, log_file=str(tmp_path / "a.log")), environ={}, stream=captured)
    logger.error("request failed with key {}", SECRET)
    logging.getLogger("botocore").warning("botocore says %s", SECRET)
    try:
        raise RuntimeError(f"bad {SECRET}")
    except RuntimeError:
        logger.exception("boom")
    out = captured.getvalue() + (tmp_path / "a.log").read_text()
    assert SECRET not in out
    assert out.count("**********") >= 3


def test_stdlib_routed_at_warning(tmp_path: Path, captured: io.StringIO) -> None:
    setup_logging(settings(tmp_path), environ={}, stream=captured)
    logging.getLogger("aiohttp").info("chatty detail")
    logging.getLogger("aiohttp").warning("worth seeing")
    text = captured.getvalue()
    assert "chatty detail" not in text and "worth seeing" in text


def test_rate_limited_errors_and_recovery(tmp_path: Path, captured: io.StringIO) -> None:
    setup_logging(settings(tmp_path), environ={}, stream=captured)
    now = [0.0]
    rl = RateLimitedLog(60, clock=lambda: now[0])
    assert rl.error("s3", "cloud down")
    for _ in range(10):
        now[0] += 1
        assert not rl.error("s3", "cloud down")
    now[0] += 60
    assert rl.error("s3", "cloud down")
    assert rl.ok("s3", "cloud recovered")
    assert not rl.ok("s3", "cloud recovered")  # only once
    lines = captured.getvalue().splitlines()
    assert sum("cloud down" in line for line in lines) == 2
    assert any("repeated 10 more time(s)" in line for line in lines)
    assert sum("recovered" in line for line in lines) == 1


def test_short_secrets_ignored() -> None:
    register_secret("ab")
    assert logs.redact("abc") == "abc"
