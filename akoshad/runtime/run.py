"""``akoshad run``: logging and the heap set up, then one daemon run (``--once``, with
the quick no-change check, or until a signal); a start-up refusal is one line.

``--once`` begins walking the store (a forked child on Linux, else a thread:
:mod:`~akoshad.runtime.walk_child`) before the daemon's modules are imported: the walk (its
reconcile's, and the stats its quick check records) overlaps the imports and the targets'
start."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from loguru import logger

from akoshad import collector, fastpath
from akoshad.config import Settings
from akoshad.config.encryption import unavailable
from akoshad.errors import AlreadyRunning, ConfigError
from akoshad.heap import bounded_heap
from akoshad.manifest.layout import system_prefix
from akoshad.names import EXIT_CONFIG, EXIT_OK
from akoshad.pipeline.storefiles import PathFilter
from akoshad.runtime import walk_child
from akoshad.runtime.logs import setup_logging
from akoshad.runtime.reload import ConfigDrift, reloader
from akoshad.store.db import StateError

if TYPE_CHECKING:
    from akoshad.runtime.daemon import Daemon

Walked = walk_child.Walked
# The longest the event loop's thread waits for the GIL while worker threads compute
# (capture, chunking, the manifest's index parts): with Python's 5 ms, a request, which needs
# the loop a few times, crawled while the index parts were made beside the PUTs of the first
# ones (a first sync of 10,000 small files: 0.3-0.4 s more under load).
GIL_SWITCH_SECONDS = 0.001


def run_daemon(
    settings: Settings,
    *,
    once: bool = False,
    config_path: str | None = None,
    environ: Mapping[str, str] | None = None,
    argv: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> int:
    """Entry point of ``akoshad run`` (``argv`` keys the quick no-change check;
    ``overrides``: the command line's settings, which a SIGHUP reload keeps)."""
    env = dict(environ or {})
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    refused = unavailable(settings.encryption)
    if refused:
        print(f"akoshad: {refused}", file=sys.stderr)
        return EXIT_CONFIG
    bounded_heap()
    setup_logging(settings, environ=env)
    for note in settings.notes:
        logger.warning("configuration: {}", note)

    walked_ns = time.time_ns()  # before the walk: a stat as recent as it may move unseen
    walked = begin_walk(settings) if once else None
    try:
        load = reloader(config_path, overrides or {}, env)
        drift = ConfigDrift(fastpath.resolve_config_path(config_path, env)[0], load, settings)
        daemon = make_daemon(settings, env, load, walked, drift)
        collector.settle()  # the modules are imported: freeze them, collector on
        if once:
            code = asyncio.run(daemon.run_once())
            before = daemon.store_stats  # read by the reconcile walk, before any capture
            # stats read: the daemon is wired, its feed there; an include glob that selects
            # no file keeps its warning in every run: no record then
            if (
                code == EXIT_OK
                and argv is not None
                and before is not None
                and not daemon.feed.idle_includes
            ):
                witness = None
                if settings.primary_target == "local":
                    uploads = system_prefix(settings.cloud_sync.system_id)
                    witness = fastpath.newest_manifest(settings.local_target_dir / uploads)
                fastpath.record_unchanged(
                    argv,
                    env,
                    settings.data_dir,
                    settings.state_dir,
                    before,
                    witness,
                    walked_ns=walked_ns,
                    log={
                        "level": settings.log_level,
                        "format": settings.log_format,
                        "file": settings.log_file is not None,
                    },
                )
            return code
        return asyncio.run(daemon.run_forever())
    except (AlreadyRunning, ConfigError, StateError) as exc:
        print(f"akoshad: {exc}", file=sys.stderr)
        return exc.exit_code
    finally:
        if walked is not None:
            walked.exception()  # the walk's thread has ended (a start that failed early)


def make_daemon(
    settings: Settings,
    env: Mapping[str, str],
    reload: Callable[[], Settings],
    walked: Walked | None,
    drift: ConfigDrift | None = None,
) -> Daemon:
    """The daemon (its modules imported now, while ``walked`` goes on)."""
    from akoshad.runtime.daemon import Daemon

    return Daemon(settings, environ=env, reload=reload, walked=walked, drift=drift)


def begin_walk(settings: Settings) -> Walked:
    """Walk the store, with every entry's lstat (``walk_child.begin_walk``)."""
    return walk_child.begin_walk(
        settings.data_dir, PathFilter.of(settings.include, settings.exclude)
    )
