"""Telling of S3 requests that go long without an answer.

A server that takes a request and stops answering (a hung process, a dropped route) holds
each try for up to its timeout (``upload_timeout_seconds``: 300 s by default, and a request
is tried up to ``max_retries + 1`` times), and until the last try fails nothing would be
logged. :class:`SlowAnswers` logs one WARNING once a request has waited half its timeout,
at most one such line per interval for the target (with a count of those left out), and
one INFO line when a request it warned of is answered after all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from loguru import logger

INTERVAL = 300.0  # at most one "waiting" line per target in this many seconds


class SlowAnswers:
    """Watches a target's requests for answers that take long (see the module doc)."""

    def __init__(
        self, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._logged_at: float | None = None
        self._left_out = 0
        self._warned = False  # a "waiting" line was logged and no answer has cleared it

    @contextmanager
    def watch(self, what: str, where: str, limit: float) -> Iterator[None]:
        """Around one try of a request that may take up to ``limit`` seconds: a warning
        when it is still unanswered after half of that. ``where``: the endpoint as it may be
        shown (no credentials)."""
        started = self.clock()
        waited = [False]

        def still_waiting() -> None:
            waited[0] = True
            self._waiting(what, where, limit, self.clock() - started)

        handle = asyncio.get_running_loop().call_later(limit / 2, still_waiting)
        ok = False
        try:
            yield
            ok = True
        finally:
            handle.cancel()
            if ok and waited[0] and self._warned:
                self._warned = False
                logger.info(
                    "S3: {} answered after {:.0f} s (the server {} answers again)",
                    what,
                    self.clock() - started,
                    where,
                )

    def _waiting(self, what: str, where: str, limit: float, seconds: float) -> None:
        now = self.clock()
        if self._logged_at is not None and now - self._logged_at < self.interval:
            self._left_out += 1
            return
        more = f"; {self._left_out} more requests waited as long" if self._left_out else ""
        self._logged_at, self._left_out, self._warned = now, 0, True
        logger.warning(
            "S3: {} has had no answer from {} for {:.0f} s (a try is given up after {:.0f} "
            "s, then sent again){}",
            what,
            where,
            seconds,
            limit,
            more,
        )
