"""A target a drill could not read (or a prune could not reach: ``PruneScheduler``) is marked
unavailable at once (``degraded``), and only a read that works clears that mark: an upload,
the next drill, or the look here. Without
it, an idle daemon (no change to upload) kept the target degraded after it was back until
the drill's next try, a whole ``drill_interval_hours`` after a drill run by hand
(``degraded_fail_after_minutes`` could stop the daemon with exit 69 meanwhile).

While the mark stands, the drill loop looks at the target every :data:`LOOK_SECONDS`
with one cheap read (S3: the one-key listing of its check; the outbox: its uploads'
listing), never a download."""

from __future__ import annotations

import asyncio
import math
import time
from typing import TYPE_CHECKING

from loguru import logger

from akoshad.errors import PermanentError, TransientError
from akoshad.manifest.read import list_uploads
from akoshad.targets.base import ReadCheck, Target

if TYPE_CHECKING:
    from akoshad.pipeline.stats import TargetHealth

LOOK_SECONDS = 60.0  # while a drill's mark stands: the target is read this often
LOOK_TIMEOUT = 10.0  # a look that has no answer within this long: not back


async def answers(target: Target, system_id: str) -> bool:
    """One cheap read of ``target``: True when it answered."""
    try:
        async with asyncio.timeout(LOOK_TIMEOUT):
            if isinstance(target, ReadCheck):
                await target.check()
            else:
                await list_uploads(target, system_id)
    except (TimeoutError, TransientError, PermanentError):
        return False
    return True


class ReadMark:
    """The mark a drill put on the target's health (its error line), until a read clears
    it; when the target was last looked at (monotonic)."""

    def __init__(self) -> None:
        self.error: str | None = None
        self.looked_at = 0.0

    def failed(self, health: TargetHealth, error: str) -> None:
        """A drill could not read the target: unavailable at once, unless it is already
        (an upload's failure stays its own)."""
        if health.available:
            health.failed(error)
            self.error, self.looked_at = health.last_error, time.monotonic()

    def read(self, health: TargetHealth) -> None:
        """A drill read the target: the mark goes (a failure an upload met since stays)."""
        if self.error is not None:
            health.read_again(self.error)
        self.error = None

    async def look(self, health: TargetHealth, target: Target, system_id: str) -> float:
        """While the mark stands (nothing read the target since: an idle daemon), one cheap
        read every :data:`LOOK_SECONDS`; once it answers, the mark goes (``recovered``).
        Seconds until the next look (infinite without a mark)."""
        if self.error is None:
            return math.inf
        if health.available or health.last_error != self.error:  # an upload read it since
            self.error = None
            return math.inf
        if (due := self.looked_at + LOOK_SECONDS - time.monotonic()) > 0:
            return due
        self.looked_at = time.monotonic()
        if not await answers(target, system_id):
            return LOOK_SECONDS
        logger.info("{} answers again (a drill could not read it)", target.name)
        self.read(health)
        return math.inf
