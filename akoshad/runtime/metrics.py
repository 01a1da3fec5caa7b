"""Prometheus metrics: counters fed by the pipeline, gauges read from status at scrape time.

:class:`Metrics` owns one ``CollectorRegistry`` (never the process-global one). Counters and
the pass-duration histogram are real ``prometheus_client`` objects that the daemon
increments as passes finish and requests go out; everything else (pending files, queue
age, target health, breaker state, the last upload and drill) is read from one status
result per scrape by :class:`StatusCollector`, so a scrape is consistent with
``akoshad status`` and costs a few queries on the state database's own thread.

:class:`~akoshad.runtime.metrics_server.MetricsServer` serves ``GET /metrics``; this module
and that one are imported only when ``metrics_listen`` is set (see ``pass_metrics``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from akoshad.events import RequestCounter
from akoshad.pipeline.report import PassReport
from akoshad.runtime.health import check_problems
from akoshad.targets.base import Compression, StoredObject, Target

BREAKER_VALUES = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
PASS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0)
# status counters exported as Prometheus counters: (counter key, metric name, help)
STATUS_COUNTERS = (
    ("files_uploaded", "akoshad_files_uploaded", "Files uploaded since the daemon started."),
    ("deduplicated", "akoshad_deduplicated_files", "Files not sent again: already stored."),
    ("failures", "akoshad_failures", "Failed passes and deliveries since the daemon started."),
    ("retries", "akoshad_retries", "Retried requests since the daemon started."),
    ("redactions", "akoshad_redactions", "Secrets masked before leaving the machine."),
)


@runtime_checkable
class CountsRequests(Protocol):
    """A target given a :class:`~akoshad.events.RequestCounter` when it was built."""

    counter: RequestCounter | None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def last_good_drill(status: Mapping[str, Any]) -> float | None:
    """When the good drill recorded last finished, as ``status`` says: the state's
    ``last_good_drill_at`` (it survives restarts and failed drills since), else the last
    drill's time when it was good. By order of recording, not the greatest time: a drill
    dated by a clock that ran ahead must not hold back the alert on an old good drill."""
    at = _number(status.get("last_good_drill_at"))
    drill = status.get("last_drill")
    if at is None and isinstance(drill, Mapping) and drill.get("ok") is True:
        at = _number(drill.get("at"))
    return at


class StatusCollector(Collector):
    """Gauges (and the status counters) from the status result handed to :meth:`use`."""

    def __init__(self) -> None:
        self._status: Mapping[str, Any] | None = None
        self.last_good_drill: float | None = None

    def use(self, status: Mapping[str, Any]) -> None:
        """The status result the next ``collect`` reads (set right before rendering)."""
        self._status = status
        self.last_good_drill = last_good_drill(status)

    def collect(self) -> Iterator[Metric]:
        st = self._status
        if st is None:
            return
        yield from self._general(st)
        yield from self._targets(st.get("targets") or {})
        counters = st.get("counters") or {}
        for key, name, doc in STATUS_COUNTERS:
            yield CounterMetricFamily(name, doc, value=_number(counters.get(key)) or 0.0)

    def _general(self, st: Mapping[str, Any]) -> Iterator[Metric]:
        yield InfoMetricFamily(
            "akoshad",
            "The daemon's version and system id.",
            value={
                "version": str(st.get("version", "")),
                "system_id": str(st.get("system_id", "")),
            },
        )
        yield _gauge("akoshad_pending_files", "Paths waiting to be uploaded.", st.get("pending", 0))
        yield _gauge(
            "akoshad_in_flight_files", "Files being captured or sent now.", st.get("in_flight", 0)
        )
        age = _number(st.get("oldest_pending_age_seconds")) or 0.0
        yield _gauge("akoshad_oldest_pending_seconds", "Age of the oldest queued change.", age)
        state = st.get("state")
        yield _gauge(
            "akoshad_degraded",
            "1 while a configured target is unavailable.",
            float(state == "degraded"),
        )
        yield _gauge("akoshad_paused", "1 while uploads are paused.", float(bool(st.get("paused"))))
        # the start as recorded, not now - uptime: that differed at every scrape, so
        # changes(akoshad_start_time_seconds[...]) saw a restart in each
        started = _number(st.get("started_at"))
        if started is not None:
            yield _gauge("akoshad_start_time_seconds", "When the daemon started (epoch).", started)
        last = st.get("last_upload")
        finished = _number(last.get("finished_at")) if isinstance(last, Mapping) else None
        if finished is not None:
            doc = "When the last upload completed (epoch)."
            yield _gauge("akoshad_last_upload_timestamp_seconds", doc, finished)
        yield from self._drill(st.get("last_drill"), st.get("drill_interval_hours"))
        pruned = st.get("last_prune")
        if isinstance(pruned, Mapping) and _number(pruned.get("at")) is not None:
            doc = "When the last prune ran (epoch)."
            yield _gauge("akoshad_last_prune_timestamp_seconds", doc, pruned["at"])
            # a prune that fails is still a prune that ran: its time alone looks healthy
            ok = float(pruned.get("ok") is True)
            yield _gauge("akoshad_last_prune_ok", "1 if the last prune went well.", ok)
        safety = st.get("safety")
        if isinstance(safety, Mapping) and isinstance(safety.get("safe"), bool):
            yield _gauge(
                "akoshad_safe", "1 when status says safe (see safety.py).", float(safety["safe"])
            )
        yield _gauge(
            "akoshad_healthy",
            "1 when `akoshad status --check` would exit 0.",
            float(not check_problems(st)),
        )

    def _drill(self, drill: Any, hours: Any) -> Iterator[Metric]:
        every = _number(hours)
        if every is not None:  # the alert on an old good drill waits two of these
            doc = "drill_interval_hours in seconds (0: drills off)."
            yield _gauge("akoshad_drill_interval_seconds", doc, every * 3600.0)
        if self.last_good_drill is not None:
            doc = "When the last good restore drill ran (epoch)."
            yield _gauge("akoshad_last_good_drill_timestamp_seconds", doc, self.last_good_drill)
        if isinstance(drill, Mapping) and _number(drill.get("at")) is not None:
            yield _gauge(
                "akoshad_last_drill_timestamp_seconds", "When the last drill ran.", drill["at"]
            )
            yield _gauge(
                "akoshad_last_drill_ok",
                "1 if the last drill passed.",
                float(drill.get("ok") is True),
            )

    @staticmethod
    def _targets(targets: Mapping[str, Any]) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "akoshad_target_up", "1 if the target's last attempt worked.", labels=["target"]
        )
        breaker = GaugeMetricFamily(
            "akoshad_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open.",
            labels=["target"],
        )
        success = GaugeMetricFamily(
            "akoshad_target_last_success_timestamp_seconds",
            "When the target last answered well (epoch).",
            labels=["target"],
        )
        for name, entry in sorted(targets.items()):
            if not isinstance(entry, Mapping):
                continue
            up.add_metric([name], float(entry.get("available") is not False))
            circuit = BREAKER_VALUES.get(str(entry.get("circuit")))
            if circuit is not None:
                breaker.add_metric([name], circuit)
            at = _number(entry.get("last_success_at"))
            if at is not None:
                success.add_metric([name], at)
        yield up
        yield breaker
        yield success


class Metrics:
    """The daemon's metrics: one private registry, counters fed by the pipeline."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        reg = self.registry
        self.uploads = Counter(
            "akoshad_uploads",
            "Upload passes by target and outcome.",
            ["target", "outcome"],
            registry=reg,
        )
        self.bytes_sent = Counter(
            "akoshad_bytes_sent", "Bytes sent to a target.", ["target"], registry=reg
        )
        self.requests = Counter(
            "akoshad_requests",
            "Requests sent, by target and method.",
            ["target", "method"],
            registry=reg,
        )
        self.pass_duration = Histogram(
            "akoshad_pass_duration_seconds",
            "Duration of drain passes that had work.",
            ["target"],
            buckets=PASS_BUCKETS,
            registry=reg,
        )
        self.status = StatusCollector()
        reg.register(self.status)
        self.last_pass_seconds: float | None = None

    def targets_known(self, names: list[str]) -> None:
        """Start the per-target series at zero, so rates and alerts see them from the start."""
        for name in names:
            for outcome in ("ok", "failed"):
                self.uploads.labels(name, outcome)
            self.bytes_sent.labels(name)

    def pass_done(self, report: PassReport, seconds: float) -> None:
        """Count one finished drain pass (``report.target`` "wait": the files waited)."""
        self.last_pass_seconds = seconds
        self.pass_duration.labels(report.target).observe(seconds)
        if report.target != "wait":
            if report.upload_id and not report.error:
                self.uploads.labels(report.target, "ok").inc()
            elif report.error and not (report.waiting or report.source_changed):
                self.uploads.labels(report.target, "failed").inc()
            if report.bytes_sent:
                self.bytes_sent.labels(report.target).inc(report.bytes_sent)
        memories = report.memories or {}
        if report.memory_error:
            if "circuit open" not in report.memory_error:
                self.uploads.labels("http", "failed").inc()
        elif memories.get("delivered"):
            self.uploads.labels("http", "ok").inc()
        sent = memories.get("bytes_sent")
        if isinstance(sent, int) and sent > 0:  # requests to Akosha, failed ones too
            self.bytes_sent.labels("http").inc(sent)

    def count(self, target: str, method: str) -> None:
        """One request of ``target`` in ``akoshad_requests_total``, by method (operation)."""
        self.requests.labels(target, method).inc()

    def counted(self, target: Target) -> Target:
        """``target`` with each request counted in ``akoshad_requests_total``: a target
        built with a counter (S3: by operation name) as it is, any other wrapped and
        counted by ``Target`` operation."""
        if isinstance(target, CountsRequests) and target.counter is not None:
            return target
        return CountedTarget(target, self)

    def render(self, status: Mapping[str, Any]) -> bytes:
        """The Prometheus text of everything, with the gauges read from ``status``."""
        self.status.use(status)
        return generate_latest(self.registry)


# optional target operations (capability protocols beside ``Target``), counted when present
CAPABILITIES = frozenset({"check", "create_exclusive", "put_growing", "read_range", "stream_range"})


class CountedTarget:
    """A ``Target`` whose every operation is also counted, as ``counter.count(name,
    operation)``; the rest of the wrapped target (``repr``, extra attributes) shows through
    unchanged."""

    def __init__(self, inner: Target, counter: RequestCounter) -> None:
        self.inner = inner
        self.name = inner.name
        self._counter = counter

    def _hook(self, operation: str) -> None:
        self._counter.count(self.name, operation)

    def __repr__(self) -> str:
        return repr(self.inner)

    def __getattr__(self, attr: str) -> Any:
        """The wrapped target's attribute; its optional operations (:data:`CAPABILITIES`)
        are counted too. A capability the target lacks stays missing here (``isinstance``
        of a capability protocol answers as for the wrapped target)."""
        found = getattr(self.inner, attr)
        if attr not in CAPABILITIES or not callable(found):
            return found

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._hook(attr)
            return found(*args, **kwargs)

        return counted

    async def start(self, *, clean_up: bool = True) -> None:
        self._hook("start")
        await self.inner.start(clean_up=clean_up)

    async def close(self) -> None:
        await self.inner.close()

    async def put_file(self, key: str, source: Path, compression: Compression) -> StoredObject:
        self._hook("put_file")
        return await self.inner.put_file(key, source, compression)

    async def put_object_file(self, key: str, source: Path, size: int, crc32: int) -> int:
        self._hook("put_object_file")
        return await self.inner.put_object_file(key, source, size, crc32)

    async def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        self._hook("put_bytes")
        return await self.inner.put_bytes(key, data, content_type)

    def read(self, key: str) -> AsyncIterator[bytes]:
        self._hook("read")
        return self.inner.read(key)

    async def head(self, key: str) -> int | None:
        self._hook("head")
        return await self.inner.head(key)

    def list_keys(self, prefix: str) -> AsyncIterator[str]:
        self._hook("list_keys")
        return self.inner.list_keys(prefix)

    async def delete_keys(self, keys: list[str]) -> None:
        self._hook("delete_keys")
        await self.inner.delete_keys(keys)
