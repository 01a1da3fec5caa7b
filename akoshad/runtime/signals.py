"""SIGTERM and SIGINT for ``akoshad run``: the first starts a clean stop, a second exits at
once (exit 1, with a warning line). Handlers live on the running event loop for the span of
a ``with`` block, and are removed after it."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from loguru import logger

from akoshad import hup
from akoshad.names import EXIT_FAIL


@contextmanager
def stop_signals(
    on_first: Callable[[str], None], *, on_hup: Callable[[], None] | None = None
) -> Iterator[None]:
    """Within the block: the first SIGTERM/SIGINT calls ``on_first`` with its name, a second
    one exits the process at once; SIGHUP calls ``on_hup`` (when given), also once for one
    noted before (``hup.hold``: ``akoshad run`` from its start)."""
    loop = asyncio.get_running_loop()
    received = 0

    def on_signal(signame: str) -> None:
        nonlocal received
        received += 1
        if received > 1:
            logger.warning("second {}: exiting now", signame)
            os._exit(EXIT_FAIL)
        on_first(signame)

    handled = [signal.SIGTERM, signal.SIGINT]
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig.name)
    if on_hup is not None:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        handled.append(signal.SIGHUP)
        if hup.take():  # one came before this handler, while the process started
            on_hup()
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        if on_hup is not None:
            hup.hold_again()
