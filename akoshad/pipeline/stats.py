"""Counters and per-target health: written by the pipeline, read by status and sd_notify."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from loguru import logger


@dataclass
class Counters:
    """Since the daemon started."""

    files_uploaded: int = 0
    bytes_uploaded: int = 0
    bytes_sent: int = 0
    deduplicated: int = 0
    failures: int = 0
    retries: int = 0
    redactions: int = 0  # secrets replaced in memory text bound for Akosha


@dataclass
class TargetHealth:
    """The last word from one target."""

    available: bool = True
    last_error: str | None = None
    last_success_at: float | None = None
    attempted: bool = False

    def ok(self, now: float | None = None) -> None:
        self.available = True
        self.last_error = None
        self.last_success_at = time.time() if now is None else now
        self.attempted = True

    def failed(self, error: str) -> None:
        self.available = False
        self.last_error = error
        self.attempted = True

    def answered(self) -> None:
        """The target answered a check (at the start): it was tried."""
        self.attempted = True

    def read_again(self, error: str) -> None:
        """A read of the target (a drill) succeeded: the failure ``error`` that a read
        marked is over. A failure an upload met since (another error) stays."""
        if not self.available and self.last_error == error:
            self.available = True
            self.last_error = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "available": self.available,
            "last_error": self.last_error,
            "last_success_at": self.last_success_at,
        }


@dataclass
class Stats:
    """Everything status reports that is not in the state database."""

    counters: Counters = field(default_factory=Counters)
    targets: dict[str, TargetHealth] = field(default_factory=dict)
    in_flight: int = 0
    progress_seq: int = 0  # bumps whenever the pipeline moves something forward
    syncing: bool = False
    # what the targets count themselves: requests sent again within one call (S3's retries)
    request_retries: list[Callable[[], int]] = field(default_factory=list)

    # files whose capture failed and is tried again (path: why), until one is captured
    capture_failures: dict[str, str] = field(default_factory=dict)

    def target(self, name: str) -> TargetHealth:
        return self.targets.setdefault(name, TargetHealth())

    def note_captures(self, failed: Mapping[str, str], done: Iterable[str]) -> None:
        """A pass's captures: ``failed`` (path: why) are tried again, ``done`` were
        captured or settled. A failure is logged when it starts or its reason changes (not
        at every retry), and its end too."""
        for path in done:
            if self.capture_failures.pop(path, None) is not None:
                logger.info("{} is captured again", path)
        for path, why in failed.items():
            if self.capture_failures.get(path) != why:
                logger.warning("{} cannot be captured: {} (it is tried again)", path, why)
            self.capture_failures[path] = why

    def progressed(self) -> None:
        self.progress_seq += 1

    def degraded_reason(self) -> str | None:
        for name, health in sorted(self.targets.items()):
            if not health.available:
                return f"{name}: {health.last_error}"
        return None

    def counters_dict(self) -> dict[str, int]:
        """The counters; ``retries`` also counts the requests the targets sent again."""
        out = asdict(self.counters)
        out["retries"] += sum(count() for count in self.request_retries)
        return out
