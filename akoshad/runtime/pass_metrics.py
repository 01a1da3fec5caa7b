"""What the pipeline tells the metrics, and the metrics a daemon without ``/metrics`` keeps.

The daemon counts uploads, bytes and requests only for Prometheus. Without
``metrics_listen`` there is nobody to read them, so :func:`make_metrics` gives
:class:`NoMetrics`: the same methods, only ``last_pass_seconds`` (read by status) kept,
and neither ``prometheus_client`` nor ``aiohttp.web`` imported (about 3 MiB resident).
"""

from __future__ import annotations

from typing import Protocol

from akoshad.pipeline.report import PassReport
from akoshad.targets.base import Target


class PassMetrics(Protocol):
    """The metrics as the wiring, the pass observer and status use them; also the
    :class:`~akoshad.events.RequestCounter` given to the S3 target and the Akosha client."""

    last_pass_seconds: float | None

    def targets_known(self, names: list[str]) -> None:
        """Start the per-target series (at zero)."""

    def pass_done(self, report: PassReport, seconds: float) -> None:
        """Count one finished drain pass."""

    def count(self, target: str, method: str) -> None:
        """One request of ``target`` with ``method``."""

    def counted(self, target: Target) -> Target:
        """``target`` with its requests counted (unless it counts them itself)."""


class NoMetrics:
    """Metrics with ``/metrics`` off: nothing is counted but the last pass's duration."""

    def __init__(self) -> None:
        self.last_pass_seconds: float | None = None

    def targets_known(self, names: list[str]) -> None:
        """Nothing to start: no series are kept."""

    def pass_done(self, report: PassReport, seconds: float) -> None:
        """Keep the pass's duration for status."""
        self.last_pass_seconds = seconds

    def count(self, target: str, method: str) -> None:
        """Nothing to count."""

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
