"""Log formats, secret redaction, stdlib routing and rate limiting."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loguru import logger

from akoshad.config import Settings, load_settings
from akoshad.ratelog import ReasonLog
from akoshad.runtime import logs
from akoshad.runtime.logs import RateLimitedLog, register_secret, setup_logging

SECRET = "planted-secret-value-9f8e7d"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    yield io.StringIO()
    logger.remove()
    logger.add(io.StringIO())  # leave no sink pointing at a closed test stream


def settings(tmp_path: Path, **extra: Any) -> Settings:
    return load_settings(
        environ={"HOME": str(tmp_path)},
        overrides={
            "cloud_sync": {"access_key_id": "AKIAEXAMPLE", "secret_access_key": SECRET},
            **extra,
        },
    )


@pytest.mark.parametrize("var", ["JOURNAL_STREAM", "INVOCATION_ID"])
def test_journald_lines_have_priorities(tmp_path: Path, captured: io.StringIO, var: str) -> None:
    setup_logging(settings(tmp_path, log_level="DEBUG"), environ={var: "8:1"}, stream=captured)
    logger.debug("d")
    logger.info("hello")
    logger.success("done")
    logger.warning("careful")
    logger.error("broken")
    logger.critical("fatal")
    logger.info("two\nlines")
    assert captured.getvalue().splitlines() == [
        "<7>d",
        "<6>hello",
        "<5>done",
        "<4>careful",
        "<3>broken",
        "<2>fatal",
        "<6>two\\nlines",  # one record, one line: a name with a newline forges none
    ]


def test_control_characters_of_a_message_are_escaped(tmp_path: Path, captured: io.StringIO) -> None:
    setup_logging(settings(tmp_path), environ={}, stream=captured)
    logger.warning("skipped {}: unreadable", "evil\nakoshad OK: idle\x1b[31m.json")
    (line,) = captured.getvalue().splitlines()
    assert line.endswith("skipped evil\\nakoshad OK: idle\\x1b[31m.json: unreadable")
    assert "\x1b" not in captured.getvalue()


def test_journald_traceback_lines_keep_the_priority(tmp_path: Path, captured: io.StringIO) -> None:
    setup_logging(settings(tmp_path), environ={"JOURNAL_STREAM": "8:1"}, stream=captured)
    try:
        raise ValueError("bad value")
    except ValueError:
        logger.exception("failed")
    lines = captured.getvalue().splitlines()
    assert lines[0] == "<3>failed" and lines[-1] == "<3>ValueError: bad value"
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines)


def test_text_lines(tmp_path: Path, captured: io.StringIO) -> None:
    setup_logging(settings(tmp_path), environ={}, stream=captured)
    logger.info("plain {}", 42)
    logger.debug("hidden at INFO")
    (line,) = captured.getvalue().splitlines()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO    plain 42", line), line


def test_json_lines(tmp_path: Path, captured: io.StringIO) -> None:
    setup_logging(settings(tmp_path, log_format="json"), environ={}, stream=captured)
    logger.bind(upload_id="u1", files=3, detail={"k": SECRET}).info("structured")
    line = json.loads(captured.getvalue().splitlines()[0])
    assert line["level"] == "INFO" and line["message"] == "structured" and "T" in line["time"]
    assert line["upload_id"] == "u1" and line["files"] == 3
    assert line["detail"] == {"k": "**********"}


def test_secret_never_logged(tmp_path: Path, captured: io.StringIO) -> None:
    log_file = tmp_path / "logs" / "a.log"
    setup_logging(settings(tmp_path, log_file=str(log_file)), environ={}, stream=captured)
    logger.error("request failed with key {}", SECRET)
    logger.bind(key=SECRET).warning("bound")
    logging.getLogger("botocore").warning("botocore says %s", SECRET)
    try:
        raise RuntimeError(f"bad {SECRET}")
    except RuntimeError:
        logger.exception("boom")
    try:
        try:
            raise KeyError(SECRET)
        except KeyError as exc:
            raise OSError("outer") from exc  # the secret is only in the cause
    except OSError:
        logger.exception("chained")
    out = captured.getvalue() + log_file.read_text()
    assert SECRET not in out
    assert out.count("**********") >= 8
    assert "RuntimeError: bad **********" in out and "OSError: outer" in out


def test_json_log_file(tmp_path: Path, captured: io.StringIO) -> None:
    log_file = tmp_path / "a.log"
    setup_logging(
        settings(tmp_path, log_file=str(log_file), log_format="json"), environ={}, stream=captured
    )
    logger.info("to file {}", SECRET)
    record = json.loads(log_file.read_text().splitlines()[0])
    assert record["record"]["message"] == "to file **********"


class NeedsArgs(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code}: {text}")


def test_redaction_never_breaks_the_log_call(tmp_path: Path, captured: io.StringIO) -> None:
    setup_logging(settings(tmp_path), environ={}, stream=captured)
    try:
        raise NeedsArgs(403, f"denied for {SECRET}")  # cannot be rebuilt from one string
    except NeedsArgs:
        logger.exception("denied")
    out = captured.getvalue()
    assert SECRET not in out and "403: denied for **********" in out


def test_stdlib_routed_at_warning(tmp_path: Path, captured: io.StringIO) -> None:
    setup_logging(settings(tmp_path, log_level="DEBUG"), environ={}, stream=captured)
    for name in ("botocore", "aiobotocore", "aiohttp", "urllib3", "asyncio"):
        logging.getLogger(name).info(f"{name} chatty")
        logging.getLogger(name).warning(f"{name} worth seeing")
    text = captured.getvalue()
    assert "chatty" not in text
    assert text.count("worth seeing") == 5 and "WARNING" in text


def test_setup_again_replaces_the_sinks(tmp_path: Path, captured: io.StringIO) -> None:
    second = io.StringIO()
    setup_logging(settings(tmp_path), environ={}, stream=captured)
    setup_logging(settings(tmp_path), environ={}, stream=second)
    logger.info("once")
    assert captured.getvalue() == "" and second.getvalue().count("once") == 1


def test_rate_limited_errors_and_recovery(tmp_path: Path, captured: io.StringIO) -> None:
    setup_logging(settings(tmp_path), environ={}, stream=captured)
    now = [0.0]
    rl = RateLimitedLog(60, clock=lambda: now[0])
    assert not rl.ok("s3", "cloud recovered")  # nothing was logged: no recovery line
    assert rl.error("s3", "cloud down: {}", "503")
    assert rl.error("http", "akosha down")  # other keys are independent
    for _ in range(10):
        now[0] += 1
        assert not rl.error("s3", "cloud down: {}", "503")
    now[0] += 60
    assert rl.error("s3", "cloud down: {}", "503")
    now[0] += 61
    assert rl.error("s3", "cloud down: {}", "503")  # nothing suppressed: no count
    assert rl.ok("s3", "cloud recovered")
    assert not rl.ok("s3", "cloud recovered")  # only once
    assert rl.error("s3", "cloud down: {}", "503")  # a new run starts fresh
    lines = captured.getvalue().splitlines()
    down = [line for line in lines if "cloud down" in line]
    assert len(down) == 4 and all(line.split()[2] == "ERROR" for line in down)
    assert down[0].endswith("cloud down: 503")
    assert down[1].endswith("cloud down: 503 (repeated 10 times)")
    assert down[2].endswith("cloud down: 503") and down[3].endswith("cloud down: 503")
    assert [line.split()[2] for line in lines if "recovered" in line] == ["INFO"]


def test_reason_log_repeats_hourly_and_at_once_for_another_reason(
    tmp_path: Path, captured: io.StringIO
) -> None:
    """A standing condition (an unreadable reflection.duckdb) is logged when it starts, at
    most once per interval while its reason stays (with the count left out), at once when
    the reason changes, and once when it clears."""
    setup_logging(settings(tmp_path), environ={}, stream=captured)
    now = [0.0]
    log = ReasonLog(3600, clock=lambda: now[0])
    assert not log.ok("read again")  # nothing was logged: no line
    assert log.warning("v1000", "unreadable: {}", "v1000")
    for _ in range(100):  # a pass every 30 s
        now[0] += 30
        assert not log.warning("v1000", "unreadable: {}", "v1000")
    now[0] += 600  # an hour after the first line
    assert log.warning("v1000", "unreadable: {}", "v1000")
    now[0] += 1
    assert log.warning("full", "unreadable: {}", "full")  # another reason: at once
    assert log.ok("read again")
    assert not log.ok("read again")  # only once
    lines = [line.split(maxsplit=3)[2:] for line in captured.getvalue().splitlines()]
    assert lines == [
        ["WARNING", "unreadable: v1000"],
        ["WARNING", "unreadable: v1000 (repeated 100 times)"],
        ["WARNING", "unreadable: full"],
        ["INFO", "read again"],
    ]


def test_short_secrets_ignored() -> None:
    register_secret("ab")
    register_secret(None)
    assert logs.redact("abc") == "abc"
    register_secret("zz-long-secret")
    assert logs.redact("x zz-long-secret y") == "x ********** y"


def test_stdlib_records_name_their_logger(tmp_path: Path, captured: io.StringIO) -> None:
    setup_logging(settings(tmp_path), environ={}, stream=captured)
    logging.getLogger("aiohttp.client").error("odd {braces} and %s", "args")
    assert "ERROR   aiohttp.client: odd {braces} and args" in captured.getvalue()
