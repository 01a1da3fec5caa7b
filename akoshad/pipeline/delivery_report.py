"""What one delivery of memories to Akosha did (:class:`DeliveryReport`), the error that
stops one (:class:`DeliveryInterrupted`), and the log line of the memories it skipped."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loguru import logger

from akoshad.errors import TransientError

LOGGED_IDS = 5  # of the memories skipped in one delivery, how many the log line names


@dataclass
class DeliveryReport:
    """What one :meth:`MemorySync.deliver` did."""

    rows: int = 0  # rows in the snapshot's memory tables
    already: int = 0  # delivered before this call
    pending: int = 0  # to send this call
    delivered: int = 0  # newly confirmed (stored now or Duplicate key)
    duplicates: int = 0  # of which Akosha already had
    requests: int = 0  # batch_store_memories calls
    retried: int = 0  # items resent after a partial result
    skipped: dict[str, str] = field(default_factory=dict)  # newly skipped: id -> reason
    held: dict[str, str] = field(default_factory=dict)  # not stored, sent again: id -> error
    bytes_sent: int = 0  # request bodies posted to Akosha
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "already": self.already,
            "pending": self.pending,
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "requests": self.requests,
            "retried": self.retried,
            "skipped": len(self.skipped),
            "held": len(self.held),
            "bytes_sent": self.bytes_sent,
            "seconds": round(self.seconds, 3),
        }


class DeliveryInterrupted(TransientError):
    """A transient failure stopped :meth:`MemorySync.deliver`; ``report`` holds what was
    recorded before it (confirmed batches are in the state DB)."""

    def __init__(
        self,
        message: str,
        report: DeliveryReport,
        *,
        retry_after: float | None = None,
        circuit_open: bool = False,
    ):
        super().__init__(message, retry_after=retry_after)
        self.report = report
        self.circuit_open = circuit_open  # nothing was sent: the circuit is open


class CircuitOpen(TransientError):
    """The circuit is open: nothing was sent."""


def first_reason(reasons: dict[str, str]) -> str | None:
    """``id: reason`` of the first of ``reasons`` (by id); None when empty."""
    if not reasons:
        return None
    memory_id = min(reasons)
    return f"{memory_id}: {reasons[memory_id]}"


def log_skipped(skipped: dict[str, str]) -> None:
    """One WARNING line for the memories one delivery skipped for good: the first ids with
    their reasons, and how many more."""
    if not skipped:
        return
    named = sorted(skipped)[:LOGGED_IDS]
    more = f"; and {len(skipped) - len(named)} more" if len(skipped) > len(named) else ""
    logger.warning(
        "{} memories not sent to Akosha, skipped for good: {}{}",
        len(skipped),
        "; ".join(f"{m}: {skipped[m]}" for m in named),
        more,
    )
