"""Logging with loguru: journald-friendly under systemd, text or JSON elsewhere.

Registered secrets and URL credentials are replaced by ``**********`` in every record
(message, extra values, exception text): see ``akoshad.redaction``. The log file is 0600
(its directory 0700 when akoshad creates it), whatever the umask, rotated by size
(:mod:`~akoshad.runtime.logfile`). The stdlib loggers of
botocore, aiobotocore, aiohttp and friends are routed into loguru at WARNING. Repeated
identical errors are rate-limited, with a "recovered" line when they stop.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from loguru import logger

from akoshad.errors import ConfigError
from akoshad.names import printable
from akoshad.private import make_private_dirs
from akoshad.ratelog import RateLimitedLog
from akoshad.redaction import REDACTED, redact, register_secret, register_settings
from akoshad.runtime.logfile import LogFile

__all__ = ["RateLimitedLog", "setup_logging"]

__all__ = ["REDACTED", "RateLimitedLog", "redact", "register_secret", "setup_logging"]

if TYPE_CHECKING:
    from loguru import Message, Record

    from akoshad.config import Settings

SYSLOG_PRIORITY = {
    "TRACE": 7,
    "DEBUG": 7,
    "INFO": 6,
    "SUCCESS": 5,
    "WARNING": 4,
    "ERROR": 3,
    "CRITICAL": 2,
}
ROUTED = (
    "botocore",
    "aiobotocore",
    "aioboto3",
    "boto3",
    "s3transfer",
    "aiohttp",
    "urllib3",
    "asyncio",
    "watchfiles",
)
TEXT_FORMAT = "{time:YYYY-MM-DD HH:mm:ss} {level:<7} {message}"


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = str(value)  # any other object: its text, if that would show a secret
    return redact(text) if redact(text) != text else value


def _patch(record: Record) -> None:
    """Redact the message, the extra values and the exception text, and write the message's
    control characters as escapes (a file name with a newline makes no second log line,
    a terminal escape reaches no terminal). Never raises."""
    try:
        record["message"] = printable(redact(record["message"]))
        for key, value in list(record["extra"].items()):
            record["extra"][key] = _redact_value(value)
        exc = record["exception"]
        if exc is not None and exc.type is not None:
            text = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
            if redact(text) != text:
                # Exceptions cannot be rebuilt safely (constructors vary): log the redacted
                # traceback as text instead, chained causes included.
                record["message"] += "\n" + redact(text).rstrip("\n")
                record["exception"] = None
    except Exception:  # a patcher that raises would break the caller's log call
        record["message"] = REDACTED + " (log record could not be redacted)"
        record["extra"].clear()
        record["exception"] = None


class InterceptHandler(logging.Handler):
    """Sends stdlib logging records into loguru, prefixed with the stdlib logger's name."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame: FrameType | None = logging.currentframe()
        depth = 0  # find the caller outside the logging package, for loguru's record
        while frame is not None and (depth == 0 or frame.f_code.co_filename == logging.__file__):
            frame, depth = frame.f_back, depth + 1
        message = f"{record.name}: {record.getMessage()}"
        logger.opt(depth=depth, exception=record.exc_info).log(level, "{}", message)


def _journald_sink(stream: Any) -> Callable[[Message], None]:
    """Every line (tracebacks included) prefixed with its ``<N>`` syslog priority."""

    def sink(message: Message) -> None:
        prefix = f"<{SYSLOG_PRIORITY.get(message.record['level'].name, 6)}>"
        text = redact(str(message)).rstrip("\n")
        stream.write("".join(f"{prefix}{line}\n" for line in text.split("\n")))
        stream.flush()

    return sink


def _text_sink(stream: Any) -> Callable[[Message], None]:
    def sink(message: Message) -> None:
        stream.write(redact(str(message)))
        stream.flush()

    return sink


def _json_sink(stream: Any) -> Callable[[Message], None]:
    """One JSON object per line: ``time``, ``level``, ``message``, then the extra values."""

    def sink(message: Message) -> None:
        r = message.record
        line: dict[str, Any] = {
            "time": r["time"].isoformat(),
            "level": r["level"].name,
            "message": r["message"],
        }
        for key, value in r["extra"].items():
            line.setdefault(key, value)
        if r["exception"] is not None and r["exception"].type is not None:
            exc = r["exception"]
            line["exception"] = "".join(
                traceback.format_exception(exc.type, exc.value, exc.traceback)
            ).rstrip("\n")
        stream.write(redact(json.dumps(line, default=str)) + "\n")
        stream.flush()

    return sink


def _notice(stream: Any, journald: bool, as_json: bool) -> Callable[[str], None]:
    """A warning line written straight to ``stream`` in its sink's form (a sink that fails
    cannot log through loguru: its handler is busy with the record)."""

    def say(line: str) -> None:
        now = datetime.now().astimezone()
        if journald:
            text = f"<4>{line}"
        elif as_json:
            text = json.dumps({"time": now.isoformat(), "level": "WARNING", "message": line})
        else:
            text = f"{now:%Y-%m-%d %H:%M:%S} {'WARNING':<7} {line}"
        try:
            stream.write(printable(redact(text)) + "\n")
            stream.flush()
        except (OSError, ValueError):
            pass  # standard error gone too: nothing is left to tell

    return say


def _add_log_file(
    path: Path, as_json: bool, common: dict[str, Any], notice: Callable[[str], None]
) -> None:
    """The ``log_file`` sink; ``ConfigError`` (exit 78, one line) when it cannot be opened:
    a service manager restarting the daemon would not make it writable."""
    try:
        make_private_dirs(path.parent)
        sink = LogFile(path, notice)
    except OSError as exc:
        raise ConfigError(f"log_file {path} cannot be written: {exc.strerror or exc}") from None
    if as_json:
        logger.add(sink, serialize=True, **common)
    else:
        logger.add(sink, format=TEXT_FORMAT, **common)


def setup_logging(settings: Settings, *, environ: Mapping[str, str], stream: Any = None) -> None:
    """Configure loguru for the process; calling it again (a reload) replaces the sinks.

    Journald lines when ``JOURNAL_STREAM`` or ``INVOCATION_ID`` is set, else ``log_format``
    (text or JSON) on ``stream`` (standard error by default); plus ``log_file`` when set.
    """
    out = sys.stderr if stream is None else stream
    register_settings(settings)
    logger.remove()
    logger.configure(patcher=_patch)
    level = settings.log_level
    common: dict[str, Any] = {"level": level, "backtrace": False, "diagnose": False}
    journald = bool(environ.get("JOURNAL_STREAM") or environ.get("INVOCATION_ID"))
    as_json = settings.log_format == "json"
    if journald:
        logger.add(_journald_sink(out), format="{message}", **common)  # + traceback
    elif as_json:
        logger.add(_json_sink(out), format="{message}", **common)
    else:
        logger.add(_text_sink(out), format=TEXT_FORMAT, **common)
    if settings.log_file is not None:
        notice = _notice(out, journald, as_json)
        _add_log_file(settings.log_file, as_json, common, notice)
    logging.basicConfig(handlers=[InterceptHandler()], level=logging.WARNING, force=True)
    for name in ROUTED:
        logging.getLogger(name).setLevel(logging.WARNING)
