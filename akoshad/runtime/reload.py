"""SIGHUP: the configuration read again, and what of it a running daemon can apply.

:data:`RESTART_KEYS` are read once at start (the targets, the log sinks, the watchdog
policy...): a reload that changes them keeps the running values, logs a warning for each
and shows them in ``status`` until a restart. Everything else applies at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from loguru import logger

from akoshad.config import Settings, load_settings
from akoshad.errors import ConfigError
from akoshad.fastpath import resolve_config_path
from akoshad.redaction import redact
from akoshad.runtime.health import FILE_GONE

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


def reloader(
    config_path: str | None, overrides: Mapping[str, Any], environ: Mapping[str, str]
) -> Callable[[], Settings]:
    """What a SIGHUP reads: the configuration as at start (the same file, environment and
    command line). The default file, read at start, that is gone at a reload (moved, or
    caught mid-save) is refused: the defaults would replace every setting a reload applies
    (retention, drills...) without a word."""
    path, _named = resolve_config_path(config_path, environ)
    had_file = path.exists()

    def load() -> Settings:
        if had_file and not path.exists():
            raise ConfigError(
                f"configuration file {path} {FILE_GONE}: put it back, "
                "or restart akoshad to run on the defaults"
            )
        return load_settings(config_path, overrides=dict(overrides), environ=environ)

    return load


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
