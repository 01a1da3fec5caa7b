"""``akoshad run``: logging and the heap set up, then one daemon run (``--once``, with
the quick no-change check, or until a signal); a start-up refusal is one line."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping, Sequence

from loguru import logger

from akoshad import fastpath
from akoshad.config import Settings
from akoshad.config.encryption import unavailable
from akoshad.errors import AlreadyRunning, ConfigError
from akoshad.heap import bounded_heap
from akoshad.names import EXIT_CONFIG, EXIT_OK
from akoshad.runtime.daemon import Daemon
from akoshad.runtime.logs import setup_logging
from akoshad.store.db import StateError


def run_daemon(
    settings: Settings,
    *,
    once: bool = False,
    config_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
) -> int:
    """Entry point of ``akoshad run`` (``argv`` keys the quick no-change check)."""
    env = dict(environ or {})
    refused = unavailable(settings.encryption)
    if refused:
        print(f"akoshad: {refused}", file=sys.stderr)
        return EXIT_CONFIG
    bounded_heap()
    setup_logging(settings, environ=env)
    for note in settings.notes:
        logger.warning("configuration: {}", note)

    def reload() -> Settings:
        from akoshad.config import load_settings

        return load_settings(config_path, environ=env)

    daemon = Daemon(settings, environ=env, reload=reload)
    try:
        if once:
            code = asyncio.run(daemon.run_once())
            before = daemon.store_stats  # read by the reconcile walk, before any capture
            if code == EXIT_OK and argv is not None and before is not None:
                fastpath.record_unchanged(argv, env, settings.data_dir, settings.state_dir, before)
            return code
        return asyncio.run(daemon.run_forever())
    except (AlreadyRunning, ConfigError, StateError) as exc:
        print(f"akoshad: {exc}", file=sys.stderr)
        return exc.exit_code
