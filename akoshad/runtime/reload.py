"""SIGHUP: the configuration read again, and what of it a running daemon can apply.

:data:`RESTART_KEYS` are read once at start (the targets, the log sinks, the watchdog
policy...): a reload that changes them keeps the running values, logs a warning for each
and shows them in ``status`` until a restart. Everything else applies at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loguru import logger

from akoshad.config import Settings, load_settings
from akoshad.errors import ConfigError
from akoshad.fastpath import resolve_config_path
from akoshad.redaction import redact
from akoshad.runtime.health import FILE_GONE

if TYPE_CHECKING:
    from akoshad.runtime.daemon import Daemon

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


Signature = tuple[int, int, int, int] | None  # a file's (inode, size, mtime_ns, ctime_ns)


def _signature(path: Path) -> Signature:
    try:
        st = path.stat()
    except OSError:  # gone (or never there: the default file)
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class ConfigDrift:
    """Has the configuration file changed since the daemon read it (at start, or at the
    last reload), without a reload? Checked when asked (``status``): a stat, and when the
    file changed, one load with the daemon's own environment and command line (``load``,
    as a SIGHUP would), compared with the settings the file gave last."""

    def __init__(self, path: Path, load: Callable[[], Settings], read: Settings) -> None:
        self._path = path
        self._load = load
        self._read = read  # the settings the file gave at start or at the last reload
        self._seen = _signature(path)
        self._judged: tuple[Signature, str | None] | None = None

    def reloaded(self, read: Settings | None) -> None:
        """A reload read the file: ``read`` its settings, None when it was refused (the
        refusal is shown on its own, ``reload_refused``)."""
        if read is not None:
            self._read = read
        self._seen, self._judged = _signature(self._path), None

    async def line(self) -> str | None:
        """None while the file gives what the daemon runs on, else one line: it changed
        and a reload would be refused (the next start too), or which settings differ."""
        now = await asyncio.to_thread(_signature, self._path)
        if now == self._seen:
            return None
        if self._judged is None or self._judged[0] != now:
            self._judged = (now, await self._judge())
        return self._judged[1]

    async def _judge(self) -> str | None:
        where = f"the configuration file {self._path} changed since akoshad read it"
        try:
            new = await asyncio.to_thread(self._load)
        except ConfigError as exc:
            why = str(exc)
        except Exception as exc:
            why = f"{type(exc).__name__}: {redact(str(exc))}"
        else:
            keys = [k for k in type(new).model_fields if getattr(new, k) != getattr(self._read, k)]
            if not keys:
                return None  # a comment, the order of keys: nothing to apply
            return (
                f"{where} ({', '.join(keys)}) and is not applied: the daemon runs on the "
                "previous values until a reload (SIGHUP: systemctl --user reload akoshad) "
                "or a restart"
            )
        then = "run on the defaults" if FILE_GONE in why else "refuse it too (exit 78)"
        return f"{where}: {why}; a reload would be refused, and the next start would {then}"


async def apply_reload(daemon: Daemon, new: Settings) -> None:
    """Apply a reloaded configuration to a running ``daemon``: what can change live now
    (filters, redaction, pacing, status, drills, prunes), the rest noted as waiting for a
    restart (``restart_pending``)."""
    old = daemon.settings
    daemon.settings, daemon.view.restart_pending = applicable(old, new)  # until a restart
    daemon.feed.configure(daemon.settings)
    daemon.parts.snapshotter.path_filter = daemon.feed.flt
    # what leaves for Akosha from now on (over HTTP and in memories.json)
    daemon.parts.memory_sync.redact_secrets = daemon.settings.redact_secrets
    daemon.drain.pacer.interval = daemon.settings.min_upload_interval_seconds
    daemon.wake.set()  # a held-back pass may be due under the new interval
    if daemon.watcher is not None:
        daemon.watcher.set_filter(daemon.feed.flt)
    daemon.view.configure(daemon.settings)
    daemon.parts.drills.configure(daemon.settings)
    daemon.parts.prunes.configure(daemon.settings)
    logger.info("configuration reloaded")
    await daemon.warn_exposed_identity()
    if (new.include, new.exclude) != (old.include, old.exclude):
        await daemon.feed.reconcile()
