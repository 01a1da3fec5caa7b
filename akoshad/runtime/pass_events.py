"""What the runtime hears of each pass (``PassEvents``): events, metrics, health."""

from __future__ import annotations

from loguru import logger

from akoshad.events import EventBus
from akoshad.pipeline.report import PassReport
from akoshad.runtime.failure_notices import FailureNotices
from akoshad.runtime.health_watch import HealthWatch
from akoshad.runtime.pass_metrics import PassMetrics

HTTP = "http"  # the Akosha target's name (its failed deliveries, in FailureNotices)
STILL_DOWN = "Akosha is still unavailable: "  # pipeline.memory_sync's probe that failed


class PassEvents:
    """What the runtime hears of each pass: the ``upload`` and ``failure`` events (a run of
    failures paced by ``FailureNotices``), the metrics, the health check and the log of
    skipped files."""

    def __init__(self, events: EventBus, metrics: PassMetrics, health: HealthWatch) -> None:
        self.events = events
        self.metrics = metrics
        self.health = health
        self.notices = FailureNotices()

    def pass_done(self, report: PassReport, seconds: float) -> None:
        if report.upload_id and not report.error:
            self.events.emit(
                "upload",
                upload_id=report.upload_id,
                method=report.target,
                files=len(report.files_uploaded),
                bytes_sent=report.bytes_sent,
            )
            failed = self.notices.worked(report.target)
            if failed:
                logger.info(
                    "upload to {} works again after {} failed pass(es)", report.target, failed
                )
        self.metrics.pass_done(report, seconds)
        if report.error and report.source_changed:  # the store's doing, not a failure
            logger.warning("upload to {} stopped: {}: sent again", report.target, report.error)
        elif report.error and not report.waiting:
            self._failed(report)
        self._memories(report)
        self.health.check()
        for path, reason in report.skipped.items():
            logger.warning("skipped {}: {}", path, reason)

    def _failed(self, report: PassReport) -> None:
        """A failed pass: the ERROR line and the ``failure`` event, unless the run of
        failures it belongs to was announced lately (``FailureNotices``)."""
        assert report.error is not None
        unsaid = self.notices.failed(report.target, report.error)
        if unsaid is None:
            logger.debug("upload to {} failed again: {}", report.target, report.error)
            return
        repeated = {"repeated": unsaid} if unsaid else {}
        note = f" ({unsaid} more failed pass(es) since the last report)" if unsaid else ""
        logger.error("upload to {} failed: {}{}", report.target, report.error, note)
        self.events.emit(
            "failure",
            error=report.error,
            failed=report.claimed,
            target=report.target,
            **repeated,
        )

    def _memories(self, report: PassReport) -> None:
        """Memories to Akosha: a delivery that failed is a ``failure`` (target ``http``,
        paced like failed uploads), as a failed upload is; one that went well ends the run."""
        if report.memory_failed and report.memory_error:
            # the half-open circuit's probe failing the same way is no new kind of failure
            kind = report.memory_error.removeprefix(STILL_DOWN)
            unsaid = self.notices.failed(HTTP, kind)
            if unsaid is not None:
                repeated = {"repeated": unsaid} if unsaid else {}
                error = f"memories not delivered to Akosha: {report.memory_error}"
                self.events.emit("failure", error=error, failed=0, target=HTTP, **repeated)
        elif report.memories is not None and report.memory_error is None:
            self.notices.worked(HTTP)
