"""Logging a condition that repeats: the first line, then at most one a minute, then one
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

    def ok(self, key: str, message: str, *args: Any) -> bool:
        """The condition behind ``key`` cleared: one INFO line, only if errors were logged."""
        if self._state.pop(key, None) is None:
            return False
        logger.opt(depth=1).info(message, *args)
        return True
