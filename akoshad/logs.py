"""Logging with loguru: journald-friendly under systemd, text or JSON elsewhere.

Registered secrets are replaced by ``**********`` in every record. The stdlib loggers of
botocore, aiobotocore, aiohttp and friends are routed into loguru at WARNING. Repeated
identical errors are rate-limited, with a "recovered" line when they stop.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from loguru import logger

if TYPE_CHECKING:
    from loguru import Message, Record

    from akoshad.config import Settings

REDACTED = "**********"
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
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Never let ``value`` reach a log line (short values are ignored as too ambiguous)."""
    if value and len(value) >= 4:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _patch(record: Record) -> None:
    record["message"] = redact(record["message"])
    if record["exception"] is not None:
        exc = record["exception"]
        if exc.value is not None:
            text = str(exc.value)
            if redact(text) != text:  # keep the type, lose the secret
                record["exception"] = exc._replace(value=type(exc.value)(redact(text)))
    for key, value in list(record["extra"].items()):
        if isinstance(value, str):
            record["extra"][key] = redact(value)


class InterceptHandler(logging.Handler):
    """Sends stdlib logging records into loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


def _journald_format(record: Record) -> str:
    priority = SYSLOG_PRIORITY.get(record["level"].name, 6)
    return f"\\<{priority}>{{message}}\n{{exception}}"


def _json_sink(stream: Any) -> Callable[[Message], None]:
    def sink(message: Message) -> None:
        r = message.record
        line = {
            "time": r["time"].isoformat(),
            "level": r["level"].name,
            "message": r["message"],
            **{k: v for k, v in r["extra"].items() if isinstance(v, str | int | float | bool)},
        }
        if r["exception"] is not None and r["exception"].type is not None:
            line["exception"] = f"{r['exception'].type.__name__}: {r['exception'].value}"
        stream.write(json.dumps(line) + "\n")
        stream.flush()

    return sink


def setup_logging(settings: Settings, *, environ: Mapping[str, str], stream: Any = None) -> None:
    """Configure loguru once for the process (idempotent: replaces earlier sinks).
    ``stream`` defaults to standard error."""
    out = sys.stderr if stream is None else stream
    secret = settings.cloud_sync.secret_access_key
    register_secret(secret.get_secret_value() if secret is not None else None)
    logger.remove()
    logger.configure(patcher=_patch)
    level = settings.log_level
    if environ.get("JOURNAL_STREAM") or environ.get("INVOCATION_ID"):
        logger.add(out, level=level, format=_journald_format, backtrace=False, diagnose=False)
    elif settings.log_format == "json":
        logger.add(
            _json_sink(out), level=level, format="{message}", backtrace=False, diagnose=False
        )
    else:
        logger.add(
            out,
            level=level,
            backtrace=False,
            diagnose=False,
            format="{time:YYYY-MM-DD HH:mm:ss} {level:<7} {message}",
        )
    if settings.log_file is not None:
        settings.log_file.parent.mkdir(parents=True, exist_ok=True)
        logger.add(
            settings.log_file,
            level=level,
            rotation="10 MB",
            retention=5,
            backtrace=False,
            diagnose=False,
            enqueue=False,
            serialize=settings.log_format == "json",
        )
    logging.basicConfig(handlers=[InterceptHandler()], level=logging.WARNING, force=True)
    for name in ROUTED:
        logging.getLogger(name).setLevel(logging.WARNING)


class RateLimitedLog:
    """Logs the first of a run of identical errors, then a summary per ``interval``, and a
    "recovered" line once the condition clears."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._state: dict[str, tuple[float, int]] = {}  # key -> (last logged, suppressed)

    def error(self, key: str, message: str, *args: Any) -> bool:
        """Log unless the same key was logged within the interval. True when logged."""
        now = self.clock()
        last = self._state.get(key)
        if last is None:
            self._state[key] = (now, 0)
            logger.error(message, *args)
            return True
        logged_at, suppressed = last
        if now - logged_at >= self.interval:
            suffix = f" (repeated {suppressed} more time(s))" if suppressed else ""
            logger.error(message + suffix, *args)
            self._state[key] = (now, 0)
            return True
        self._state[key] = (logged_at, suppressed + 1)
        return False

    def ok(self, key: str, message: str, *args: Any) -> bool:
        """The condition behind ``key`` cleared: one INFO line if errors were logged."""
        if self._state.pop(key, None) is None:
            return False
        logger.info(message, *args)
        return True
