"""Logging a condition that repeats: the first line, then at most one per interval, then one
"recovered" line."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from loguru import logger


class RateLimitedLog:
    """Logs the first of a run of identical errors, then at most one line per ``interval``
    with a "(repeated N times)" count, and one "recovered" line once the condition clears."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._state: dict[str, tuple[float, int]] = {}  # key -> (last logged, suppressed)

    def error(self, key: str, message: str, *args: Any) -> bool:
        """Log unless ``key`` was logged within the interval. True when logged."""
        now = self.clock()
        last = self._state.get(key)
        if last is None:
            self._state[key] = (now, 0)
            logger.opt(depth=1).error(message, *args)
            return True
        logged_at, suppressed = last
        if now - logged_at >= self.interval:
            if suppressed:
                message = f"{message} (repeated {suppressed} times)"
            logger.opt(depth=1).error(message, *args)
            self._state[key] = (now, 0)
            return True
        self._state[key] = (logged_at, suppressed + 1)
        return False

    def forget(self, key: str) -> bool:
        """Forget ``key`` without a line (its next error is logged at once). True when it
        had been logged."""
        return self._state.pop(key, None) is not None

    def ok(self, key: str, message: str, *args: Any) -> bool:
        """The condition behind ``key`` cleared: one INFO line, only if errors were logged."""
        if self._state.pop(key, None) is None:
            return False
        logger.opt(depth=1).info(message, *args)
        return True


class ReasonLog:
    """Logs a standing condition that has a reason: a WARNING (or ERROR) when it starts or
    its reason changes, the same line again at most once per ``interval`` while it lasts
    (with a "(repeated N times)" count of the lines left out), and one INFO line when it
    clears."""

    def __init__(
        self, interval: float = 3600.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._said: tuple[str, float] | None = None  # (reason, when logged)
        self._suppressed = 0

    def warning(self, reason: str, message: str, *args: Any) -> bool:
        """Log unless ``reason`` was logged last, within the interval. True when logged."""
        return self._log("WARNING", reason, message, *args)

    def error(self, reason: str, message: str, *args: Any) -> bool:
        """As :meth:`warning`, at ERROR."""
        return self._log("ERROR", reason, message, *args)

    def _log(self, level: str, reason: str, message: str, *args: Any) -> bool:
        now = self.clock()
        same = self._said is not None and self._said[0] == reason
        if same and self._said is not None and now - self._said[1] < self.interval:
            self._suppressed += 1
            return False
        if same and self._suppressed:
            message = f"{message} (repeated {self._suppressed} times)"
        logger.opt(depth=2).log(level, message, *args)
        self._said = (reason, now)
        self._suppressed = 0
        return True

    def ok(self, message: str, *args: Any) -> bool:
        """The condition cleared: one INFO line, only if a warning was logged."""
        if self._said is None:
            return False
        self._said = None
        self._suppressed = 0
        logger.opt(depth=1).info(message, *args)
        return True
