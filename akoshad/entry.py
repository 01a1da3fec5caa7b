"""The console entry point: the quick no-change check first, then the full command line.

This is the process boundary: the quick check gets the environment from here (it must not
import the configuration machinery); everything else gets it from ``config.process_environ``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code. Ctrl-C before a command's own handling begins (while
    its modules load, the configuration is read) is exit 130, as later, not a traceback."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return 130


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if _command(args) == "run":  # a SIGHUP (a reload) must not end a daemon still starting
        from akoshad import hup

        hup.hold()
    from akoshad import collector, fastpath

    collector.hold()  # until the command's modules are imported (collector.settle)

    if fastpath.wants_once(args) and fastpath.try_unchanged(args, os.environ):
        return 0
    from akoshad.cli.main import main as full_main

    return full_main(args)


def _command(args: Sequence[str]) -> str | None:
    """The command word of ``args`` (the options before it, ``--config FILE`` among them,
    skipped), or None."""
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--config":
            skip = True
        elif not arg.startswith("-"):
            return arg
    return None
