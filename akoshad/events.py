"""Events the daemon announces (webhooks, metrics and logs listen to them).

The pipeline calls ``EventBus.emit`` and goes on: a sink must never block or raise
into the caller (a webhook sink queues the event durably and delivers it elsewhere).
"""

from __future__ import annotations

import time
from typing import Any, Literal, Protocol

from loguru import logger

EventName = Literal["upload", "failure", "degraded", "recovered", "drill", "prune"]
EVENT_NAMES: tuple[EventName, ...] = (
    "upload",
    "failure",
    "degraded",
    "recovered",
    "drill",
    "prune",
)


class EventSink(Protocol):
    """Something that hears events; ``emit`` must be quick and must not raise."""

    def emit(self, event: EventName, fields: dict[str, Any]) -> None: ...


class EventBus:
    """Fans one event out to every subscribed sink; a failing sink never reaches the caller."""

    def __init__(self, system_id: str) -> None:
        self.system_id = system_id
        self._sinks: list[EventSink] = []

    def subscribe(self, sink: EventSink) -> None:
        """Add a sink; it hears every event emitted from now on."""
        self._sinks.append(sink)

    def emit(self, event: EventName, **fields: Any) -> dict[str, Any]:
        """Announce ``event``; returns the payload ``{event, system_id, at, ...fields}``."""
        payload: dict[str, Any] = {"event": event, "system_id": self.system_id, "at": time.time()}
        payload.update(fields)
        for sink in list(self._sinks):
            try:
                sink.emit(event, dict(payload))
            except Exception:  # a sink's bug must not stop the pipeline
                logger.opt(exception=False).warning(
                    "event sink {} failed on {}", type(sink).__name__, event
                )
        return payload


class RequestCounter(Protocol):
    """Counts the requests a client sends, by target and method; given to the client when
    it is built (the metrics implement it)."""

    def count(self, target: str, method: str) -> None:
        """One request of ``target`` with ``method`` (an operation or JSON-RPC method)."""
