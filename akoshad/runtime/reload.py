"""SIGHUP: the configuration read again, and what of it a running daemon can apply.

:data:`RESTART_KEYS` are read once at start (the targets, the log sinks, the watchdog
policy...): a reload that changes them keeps the running values, logs a warning for each
and shows them in ``status`` until a restart. Everything else applies at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from loguru import logger

from akoshad.config import Settings
from akoshad.errors import ConfigError
from akoshad.redaction import redact

RESTART_KEYS = (
    "data_dir",
    "encryption",
    "state_dir",
    "socket_path",
    "local_target_dir",
    "cloud_sync",
    "webhooks",
    "metrics_listen",
    "akosha_url",  # the client, its breaker and route are built at start
    "log_level",  # the log sinks are set up once, at start
    "log_format",
    "log_file",
    "watchdog_stall_seconds",  # the watchdog policy is made at start
    "degraded_fail_after_minutes",  # so is the health watch
)


def waiting_for_restart(old: Settings, new: Settings) -> list[str]:
    """The settings ``new`` changes that a reload cannot apply (:data:`RESTART_KEYS`: read
    once at start); the running values stay until a restart."""
    return [key for key in RESTART_KEYS if getattr(new, key) != getattr(old, key)]


async def read_again(load: Callable[[], Settings]) -> Settings | str:
    """The configuration loaded and validated again (in a thread), or the line saying why
    it was refused (logged): a reload never takes the daemon down."""
    try:
        return await asyncio.to_thread(load)
    except ConfigError as exc:
        why = str(exc)
    except Exception as exc:
        why = f"{type(exc).__name__}: {redact(str(exc))}"
    line = f"reload refused, keeping the running configuration: {why}"
    logger.error(line)
    return line


def applicable(old: Settings, new: Settings) -> tuple[Settings, list[str]]:
    """``new`` with the running values of the :data:`RESTART_KEYS` it changes, and those
    keys (each logged once as taking effect after a restart)."""
    pending = waiting_for_restart(old, new)
    for key in pending:
        logger.warning("{} changed: it takes effect after a restart", key)
    return new.model_copy(update={key: getattr(old, key) for key in RESTART_KEYS}), pending
