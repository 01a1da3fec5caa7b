"""SIGHUP from the process's first moment of ``akoshad run``: its default action ends the
process, and the event loop's handler (a reload, ``runtime.signals``) comes only once the
modules are imported and the configuration is read, half a second or more later. Until
then, and after the loop's handler is gone, a SIGHUP is noted here (nothing else: the
handler runs between bytecodes) and handed to that handler when it comes (a reload then
reads the file as it is by then)."""

from __future__ import annotations

import contextlib
import signal
from types import FrameType

_held = False
_pending = False


def _note(signum: int, frame: FrameType | None) -> None:
    global _pending
    _pending = True


def hold() -> None:
    """From now on a SIGHUP is noted instead of ending the process."""
    global _held
    with contextlib.suppress(ValueError):  # not the main thread (a test): left as it is
        signal.signal(signal.SIGHUP, _note)
        _held = True


def take() -> bool:
    """Whether a SIGHUP was noted since the last look (then forgotten)."""
    global _pending
    pending, _pending = _pending, False
    return pending


def hold_again() -> None:
    """The loop's handler removed (which leaves the default action): note again, when held."""
    if _held:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGHUP, _note)
