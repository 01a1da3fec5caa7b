"""Building a daemon's parts, once, in order.

:func:`wire` takes the state directory's lock, opens the state database (a corrupt one
is set aside and a new one started, the ledger then rebuilt from the target), and only
then builds every part that uses it: targets and their routes, the Akosha client,
``memories.json``, the upload, the drain, the change feed, events, webhooks, metrics,
health and drills. Nothing is swapped after this: each part gets the parts it uses.
The long-lived DuckDB child (started on first use) is stopped with the rest.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from loguru import logger

from akoshad.akosha.client import AkoshaClient
from akoshad.config import Settings
from akoshad.duckdb_worker import DuckDBWorker
from akoshad.errors import AlreadyRunning, ConfigError
from akoshad.events import EventBus
from akoshad.pipeline.capture.snapshot import Snapshotter
from akoshad.pipeline.chain import CircuitBreaker
from akoshad.pipeline.drain import Drain
from akoshad.pipeline.feed import ChangeFeed
from akoshad.pipeline.memory_sync import MemorySync
from akoshad.pipeline.ownership import OwnerGate
from akoshad.pipeline.pacing import UploadPacer
from akoshad.pipeline.recovery import Recovery
from akoshad.pipeline.routes import AkoshaRoute, CloudRoute, MemoriesJson
from akoshad.pipeline.sealing import memories_label, sealing_source
from akoshad.pipeline.stats import Stats
from akoshad.pipeline.storefiles import PathFilter
from akoshad.pipeline.upload import Uploader
from akoshad.private import NO_WRITES, shared_dir_problem
from akoshad.runtime.drills import DrillScheduler
from akoshad.runtime.health_watch import HealthWatch
from akoshad.runtime.leftovers import PACK_STAGING_DIR
from akoshad.runtime.ownership import primary_name
from akoshad.runtime.pass_events import PassEvents
from akoshad.runtime.pass_metrics import PassMetrics, make_metrics
from akoshad.runtime.prune_scheduler import PruneScheduler
from akoshad.runtime.target_identity import (
    forget_changed_akosha,
    forget_changed_targets,
    forget_if_emptied,
    keep_outbox_root,
    outbox_back,
)
from akoshad.runtime.webhooks import WebhookSink
from akoshad.store.db import STATE_FILE, StateDB, StateError
from akoshad.targets import Target, make_target
from akoshad.targets.base import Answers, CountsRetries

LOCK_NAME = "akoshad.lock"
# what no retry or restart fixes: a read-only, forbidden or impossible state_dir
UNWRITABLE = NO_WRITES | {errno.ENOTDIR, errno.EISDIR}


class StateLock:
    """An exclusive ``flock`` on ``state_dir/akoshad.lock``: one daemon per state."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock; ``ConfigError`` (exit 78) when ``state_dir`` cannot be written."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            if exc.errno not in UNWRITABLE:
                raise
            raise self._unwritable(exc) from None
        shared = shared_dir_problem("state_dir", self.path.parent)
        if shared is not None:
            raise ConfigError(shared)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ConfigError(
                    f"state_dir {self.path.parent}: {LOCK_NAME} is a symlink; akoshad writes "
                    "no file of its state through a link (remove it)"
                ) from None
            if exc.errno not in UNWRITABLE:
                raise
            raise self._unwritable(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(
                f"another akoshad is already running on state {self.path.parent} "
                "(use `akoshad sync --wait` to ask it to drain)"
            ) from None
        # the pid tells people, and the client commands (fastpath.state_held), which live
        # akoshad holds the state; a disk too full to take it is met (and said) next
        with suppress(OSError):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _unwritable(self, exc: OSError) -> ConfigError:
        return ConfigError(
            f"state_dir {self.path.parent} is not writable: {exc.strerror} "
            "(make state_dir writable or set another)"
        )

    def fileno(self) -> int | None:
        """The held lock file's descriptor (None: not held)."""
        return self._fd

    def release(self) -> None:
        if self._fd is not None:
            with suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


async def open_state(path: Path) -> tuple[StateDB, bool]:
    """The opened state database, and whether the ledger must be rebuilt (a corrupt
    database was kept aside and a new one started)."""
    state = StateDB(path)
    try:
        await state.open()
        return state, False
    except StateError as exc:
        if not exc.corrupt:
            raise
        await state.close()
        aside = state.set_aside()
        logger.error("{}; kept aside as {} and starting a new one", exc, aside.name)
    state = StateDB(path)
    await state.open()
    return state, True


@dataclass
class Parts:
    """Everything a daemon runs, built once by :func:`wire`."""

    state: StateDB
    rebuilt: bool  # the ledger must be rebuilt from the primary target
    stats: Stats
    snapshotter: Snapshotter
    targets: dict[str, Target]
    cloud: CloudRoute | None
    akosha_client: AkoshaClient | None
    akosha: AkoshaRoute | None
    memory_sync: MemorySync
    duckdb: DuckDBWorker  # the long-lived DuckDB child: capture and memories use it
    uploader: Uploader
    recovery: Recovery
    drain: Drain
    feed: ChangeFeed
    metrics: PassMetrics
    events: EventBus
    webhooks: WebhookSink
    health: HealthWatch
    drills: DrillScheduler
    owners: OwnerGate  # one writer per system id, per target
    prunes: PruneScheduler
    stop_event: asyncio.Event
    pass_lock: asyncio.Lock
    lock: StateLock | None = None  # the state directory's, held while the daemon runs

    @property
    def primary(self) -> Target:
        return self.drain.primary


async def wire(
    settings: Settings,
    stack: AsyncExitStack,
    *,
    stop_event: asyncio.Event,
    wake: asyncio.Event,
) -> Parts:
    """Lock, open the state, build every part (closed by ``stack`` in reverse order)."""
    lock = StateLock(settings.state_dir)
    lock.acquire()
    stack.callback(lock.release)
    state, rebuilt = await open_state(settings.state_dir / STATE_FILE)
    stack.push_async_callback(state.close)
    primary = primary_name(settings)
    changed = await forget_changed_targets(state, settings, target_names(settings), primary)
    rebuilt = rebuilt or primary in changed  # seeded from the new place's newest upload
    await forget_changed_akosha(state, settings)
    parts = build(settings, state, rebuilt, stop_event=stop_event, wake=wake)
    parts.lock = lock
    await keep_outbox_root(state, parts.targets["local"], primary)
    for name, at in (await state.last_success_by_target()).items():
        if name in parts.targets:  # "last ok" survives a restart, as last_upload does
            parts.stats.target(name).last_success_at = at
    await parts.health.restore(moved=changed)  # the targets down at the last stop still are
    stack.push_async_callback(parts.health.save)  # before the state closes: for the next start
    stack.push_async_callback(asyncio.to_thread, parts.duckdb.close)
    return parts


def target_names(settings: Settings) -> list[str]:
    """The targets a daemon keeps: the local one, and ``cloud`` with a bucket."""
    return ["local", "cloud"] if settings.bucket_configured else ["local"]


def build(
    settings: Settings,
    state: StateDB,
    rebuilt: bool,
    *,
    stop_event: asyncio.Event,
    wake: asyncio.Event,
) -> Parts:
    """The parts over an opened state database."""
    cs = settings.cloud_sync
    stats = Stats()
    metrics = make_metrics(settings.metrics_listen)
    # the S3 target counts its requests itself (by operation name), a local one is wrapped
    targets = {
        n: metrics.counted(make_target(n, settings, metrics)) for n in target_names(settings)
    }
    # the series of the targets in use (status lists the same): no local beside a bucket
    metrics.targets_known([settings.primary_target] + (["http"] if settings.akosha_url else []))
    for target in targets.values():
        if isinstance(target, CountsRetries):  # S3: each request sent again, counted
            stats.request_retries.append(partial(getattr, target, "retries"))
    reset_timeout = max(5.0, cs.retry_backoff_seconds * 4)
    client: AkoshaClient | None = None
    if settings.akosha_url:
        client = AkoshaClient(
            settings.akosha_url,
            timeout=float(min(cs.upload_timeout_seconds, 120)),
            counter=metrics,
            counter_target="http",
        )
    http_breaker = CircuitBreaker("http", reset_timeout=reset_timeout)
    duckdb = DuckDBWorker()
    memory_sync = MemorySync(
        state,
        client,
        cs.system_id,
        http_breaker,
        redact_secrets=settings.redact_secrets,
        stats=stats,
        duckdb=duckdb,
    )
    cloud = None
    if "cloud" in targets:
        breaker = CircuitBreaker("cloud", reset_timeout=reset_timeout)
        memories_json = MemoriesJson(memory_sync, memories_label(settings.encryption))
        cloud = CloudRoute(targets["cloud"], breaker, stats, memories_json)
        cloud.wake = wake
        if isinstance(targets["cloud"], Answers):  # S3: it says when the server answered
            targets["cloud"].on_answer = cloud.answered
    akosha = None
    if client is not None:
        akosha = AkoshaRoute(memory_sync, http_breaker, stats, cs.retry_backoff_seconds)
    snapshotter = Snapshotter(
        settings.data_dir,
        settings.state_dir / "staging",
        duckdb=duckdb,
        path_filter=PathFilter.of(settings.include, settings.exclude),
    )
    uploader = Uploader(
        state=state,
        snapshotter=snapshotter,
        system_id=cs.system_id,
        stats=stats,
        staging_dir=settings.state_dir / PACK_STAGING_DIR,
        enable_compression=cs.enable_compression,
        enable_deduplication=cs.enable_deduplication,
        retry_backoff_seconds=cs.retry_backoff_seconds,
        sealing=sealing_source(settings),
    )
    # Webhooks, metrics and the log hear upload/failure/degraded/recovered/drill/prune here.
    events = EventBus(cs.system_id)
    webhooks = WebhookSink(settings.webhooks, state, base_delay=cs.retry_backoff_seconds)
    events.subscribe(webhooks)
    health = HealthWatch(stats, events, settings.degraded_fail_after_minutes * 60, state=state)
    health.probes.append(partial(outbox_back, stats, targets["local"]))
    owners = OwnerGate(settings.state_dir, cs.system_id, stats)
    drain = Drain(
        state=state,
        snapshotter=snapshotter,
        uploader=uploader,
        stats=stats,
        local=targets["local"],
        cloud=cloud,
        akosha=akosha,
        force_method=cs.force_method,
        enable_fallback=cs.enable_fallback,
        retry_backoff=cs.retry_backoff_seconds,
        observer=PassEvents(events, metrics, health),
        owners=owners,
        pacer=UploadPacer(settings.min_upload_interval_seconds),
    )
    pass_lock = asyncio.Lock()
    feed = ChangeFeed(settings, state, drain.primary, stats, wake=wake)
    drain.compare_all = feed.reconcile
    drills = DrillScheduler(
        settings,
        state=state,
        target=drain.primary,
        events=events,
        stop_event=stop_event,
        pass_lock=pass_lock,
    )
    prunes = PruneScheduler(
        settings,
        state=state,
        target=drain.primary,
        gate=owners,
        events=events,
        stop_event=stop_event,
        pass_lock=pass_lock,
        drills=drills,
    )
    drills.wake = prunes.wake = wake  # files they queue again are the drain's work
    recovery = Recovery(state, cs.system_id, uploader.discarder, uploader.sealing)
    drills.recovery, drills.reconcile = recovery, feed.reconcile
    drain.check_place = partial(
        forget_if_emptied,
        state,
        recovery,
        primary=drain.primary,
        system_id=cs.system_id,
        events=events,
    )
    drills.health = stats.target(drain.primary.name)
    return Parts(
        state=state,
        rebuilt=rebuilt,
        stats=stats,
        snapshotter=snapshotter,
        targets=targets,
        cloud=cloud,
        akosha_client=client,
        akosha=akosha,
        memory_sync=memory_sync,
        duckdb=duckdb,
        uploader=uploader,
        recovery=recovery,
        drain=drain,
        feed=feed,
        metrics=metrics,
        events=events,
        webhooks=webhooks,
        health=health,
        drills=drills,
        owners=owners,
        prunes=prunes,
        stop_event=stop_event,
        pass_lock=pass_lock,
    )
