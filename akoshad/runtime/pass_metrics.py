"""What the pipeline tells the metrics, and the metrics a daemon without ``/metrics`` keeps.

The daemon counts uploads, bytes and requests only for Prometheus. Without
``metrics_listen`` there is nobody to read them, so :func:`make_metrics` gives
:class:`NoMetrics`: the same methods, only ``last_pass_seconds`` (read by status) kept,
and neither ``prometheus_client`` nor ``aiohttp.web`` imported (about 3 MiB resident).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from akoshad.pipeline.report import PassReport
from akoshad.targets.base import Target

RequestHook = Callable[[str], None]


class PassMetrics(Protocol):
    """The metrics as the wiring, the pass observer and status use them."""

    last_pass_seconds: float | None

    def targets_known(self, names: list[str]) -> None:
        """Start the per-target series (at zero)."""

    def pass_done(self, report: PassReport, seconds: float) -> None:
        """Count one finished drain pass."""

    def request_hook(self, target: str) -> RequestHook:
        """A callback counting one request of ``target`` by method name."""

    def counted(self, target: Target) -> Target:
        """``target`` with its requests counted."""


def _no_count(_method: str) -> None:
    return None


class NoMetrics:
    """Metrics with ``/metrics`` off: nothing is counted but the last pass's duration."""

    def __init__(self) -> None:
        self.last_pass_seconds: float | None = None

    def targets_known(self, names: list[str]) -> None:
        """Nothing to start: no series are kept."""

    def pass_done(self, report: PassReport, seconds: float) -> None:
        """Keep the pass's duration for status."""
        self.last_pass_seconds = seconds

    def request_hook(self, target: str) -> RequestHook:
        """A callback that counts nothing."""
        return _no_count

    def counted(self, target: Target) -> Target:
        """``target`` itself: nobody reads the request counts."""
        return target


def make_metrics(metrics_listen: str | None) -> PassMetrics:
    """Prometheus metrics when ``metrics_listen`` is set (imported only then), else
    :class:`NoMetrics`."""
    if not metrics_listen:
        return NoMetrics()
    from akoshad.runtime.metrics import Metrics

    return Metrics()
